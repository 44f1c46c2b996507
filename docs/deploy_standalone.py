"""Detect objects with a resdet Faster R-CNN exported as one ONNX graph
(``resdet export``, or ``resdet.export.export_graph_onnx``), with nothing but onnxruntime,
numpy and OpenCV:

    python deploy_standalone.py model.onnx photo.jpg [more.jpg ...]

prints one JSON object per image: ``boxes`` (x1, y1, x2, y2 in the image's pixels),
``scores``, ``classes`` and, when the model knows them, ``names``.

The graph holds the whole detector, normalisation and padding included. What stays here
is what comes before and after it: reading the image, the test-time resize (shortest
side to ``min_size``, longest at most ``max_size``, as Detectron2's ResizeShortestEdge),
the model's channel order, and scaling the boxes back to the image. These settings come
from the ONNX file's metadata (written by the export); a flag given here overrides it,
and a model without metadata needs the flags.

Detectron2 resizes with PIL, whose bilinear filter smooths when shrinking; OpenCV's
INTER_AREA is the closest of its filters but not the same, so on the same photo the
detections are close to Detectron2's, not identical. Feed the graph PIL-resized pixels
where they must be.
"""

import argparse
import json
import sys

import cv2
import numpy as np
import onnxruntime as ort


def read_settings(session, args) -> dict:
    """Input format, test resize and class names: the flags, else the model's metadata."""
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    resize = meta.get("test_resize") or {}
    settings = {
        "input_format": args.input_format or meta.get("input_format"),
        "min_size": args.min_size if args.min_size is not None else resize.get("min_size"),
        "max_size": args.max_size if args.max_size is not None else resize.get("max_size"),
        "class_names": meta.get("class_names"),
    }
    if args.class_names:
        with open(args.class_names) as f:
            settings["class_names"] = [line.strip() for line in f if line.strip()]
    missing = [k for k in ("input_format", "min_size", "max_size") if settings[k] is None]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        sys.exit(f"{args.model}: its metadata does not give {', '.join(missing)}; pass {flags}")
    if settings["input_format"] not in ("RGB", "BGR"):
        sys.exit(f"input format {settings['input_format']!r}: this script feeds RGB or BGR")
    return settings


def resized_size(height, width, min_size, max_size):
    """ResizeShortestEdge.get_output_shape: the shortest side to ``min_size``, then both
    scaled down if the longest exceeds ``max_size``; rounded half up."""
    scale = min_size / min(height, width)
    h, w = height * scale, width * scale
    if max(h, w) > max_size:
        scale = max_size / max(h, w)
        h, w = h * scale, w * scale
    return int(h + 0.5), int(w + 0.5)


def preprocess(bgr, settings):
    """A BGR uint8 image (as cv2.imread gives) -> the graph's input, 1 x 3 x h x w float32."""
    height, width = bgr.shape[:2]
    if settings["min_size"]:  # 0: Detectron2 does not resize
        h, w = resized_size(height, width, settings["min_size"], settings["max_size"])
        shrink = h * w < height * width
        bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    image = bgr[:, :, ::-1] if settings["input_format"] == "RGB" else bgr
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)


def to_original(boxes, scores, classes, resized_hw, original_hw):
    """Detectron2's detector_postprocess: boxes scaled from the resized image to the
    original, clipped to it, and detections whose box became empty dropped."""
    (h, w), (height, width) = resized_hw, original_hw
    boxes = boxes * np.array([width / w, height / h] * 2, dtype=np.float32)
    boxes = np.clip(boxes, 0, np.array([width, height] * 2, dtype=np.float32))
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], scores[keep], classes[keep]


def detect(session, bgr, settings) -> dict:
    x = preprocess(bgr, settings)
    boxes, scores, classes = session.run(["boxes", "scores", "classes"], {"image": x})
    boxes, scores, classes = to_original(boxes, scores, classes, x.shape[2:], bgr.shape[:2])
    out = {"boxes": boxes.tolist(), "scores": scores.tolist(), "classes": classes.tolist()}
    if settings["class_names"]:
        out["names"] = [settings["class_names"][c] for c in classes]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the .onnx file of export_graph_onnx")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--input-format", choices=("RGB", "BGR"), help="the model's channels")
    parser.add_argument("--min-size", type=int, help="test resize: shortest side (0: none)")
    parser.add_argument("--max-size", type=int, help="test resize: longest side at most")
    parser.add_argument("--class-names", help="a text file, one class name per line")
    parser.add_argument("--threads", type=int, default=0, help="0: ONNX Runtime's default")
    args = parser.parse_args(argv)

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    settings = read_settings(session, args)
    for path in args.images:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)  # EXIF orientation applied, as Detectron2 does
        if bgr is None:
            sys.exit(f"{path}: not an image OpenCV can read")
        print(json.dumps({"image": path, **detect(session, bgr, settings)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

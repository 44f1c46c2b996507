"""Detectron2's DefaultPredictor for many images at once, with resdet's model or an export.

predictor = resdet.Predictor("output/run/config.yaml", "output/run/model_final.pth")
predictor = resdet.Predictor("output/run/model_final.pth")    # the config it carries
predictor = resdet.Predictor("export/r50_fpn")                # an export: no rebuild
outputs = predictor(["a.jpg", cv2.imread("b.jpg")])           # [{"instances": ...}, ...]
Visualizer(image_rgb, predictor.metadata).draw_instance_predictions(...)  # class names
"""

import math
import numbers
import os
from pathlib import Path

import numpy as np
import torch

from .data import model_input, read_image
from .data.image import BAD_IMAGE_ERRORS
from .engine import load
from .errors import ConfigError, DatasetError, cwd_hint, one_line
from .export import find_export, load_export, runtime_model
from .modeling import prepare_for_inference

__all__ = ["Predictor", "RUNTIMES"]

RUNTIMES = ("torch", "onnxruntime", "openvino")  # but torch: the deploy extra
_WEIGHT_SUFFIXES = (".pth", ".pkl", ".pt")


class Predictor:
    """``Predictor(config, weights)(images)`` returns, per image,
    ``{"instances": Instances, "class_names": [...]}`` in the image's original coordinates,
    exactly as Detectron2's ``DefaultPredictor``: the config's test-time resize, the
    channel order flipped to the model's input format, the model prepared for inference
    (frozen BN folded into the convs). A single image (not in a list) gives a single dict,
    so code written for DefaultPredictor keeps working.

    ``config``: a config (shipped name, path, CfgNode, LazyConfig), or None with weights
    that carry their config (a resdet detection run's checkpoint; ``Predictor(weights)``
    works too), or an export (its folder, or its model file: ``model.onnx``, ``model.xml``,
    ``model.pt2``), which runs as it is, with its recorded test resize, channel order and
    class names. The weights are loaded under the inference policy (resdet.weights): every
    parameter must come from the file.

    Images: paths (read in the model's channel order), HWC uint8 NumPy arrays in
    ``input_format`` (BGR by default, OpenCV's order, as DefaultPredictor reads them; grey
    HW arrays too), PIL images (RGB) or uint8 tensors (CHW or HWC, in ``input_format``).
    Images whose resized, padded shapes are equal run as one batch of up to ``batch_size``
    (padding is then the same as one at a time, so batching changes no detection).

    ``device``: the one device policy of resdet.engine (``auto``, ``cpu``, ``cuda[:N]``;
    default the config's). ``runtime``: "torch" (PyTorch: the model, or an export's .pt2),
    "onnxruntime" or "openvino" (the extra ``deploy``); default the model in PyTorch, or
    the export's own runtime. With a config and a runtime other than torch the model is
    exported to a temporary folder first (``resdet export`` once, then
    ``Predictor(folder)``, skips that). ``precision``: "fp32", "bf16" (openvino, torch) or
    "int8" (an int8 export, or ``int8_calibration``: a folder of images like the ones to
    detect on); default fp32, or an export's own.
    """

    def __init__(
        self,
        config,
        weights=None,
        *,
        input_format="BGR",
        device=None,
        runtime=None,
        precision=None,
        int8_calibration=None,
        overrides=None,
        batch_size=8,
    ):
        if input_format not in ("RGB", "BGR"):
            raise ConfigError(f"input_format {input_format!r}: must be 'RGB' or 'BGR'")
        if (
            isinstance(batch_size, bool)
            or not isinstance(batch_size, numbers.Integral)
            or batch_size < 1
        ):
            raise ConfigError(f"batch_size {batch_size!r}: must be a whole number, at least 1")
        self.input_format, self.batch_size = input_format, int(batch_size)
        export = None
        if weights is None and isinstance(config, (str, os.PathLike)):
            export = find_export(config)  # Predictor("export/dir"), Predictor("model.onnx")
        if export is not None:
            self._from_export(config, export[1], runtime, precision, device, overrides)
            return
        if weights is None and str(config).endswith(_WEIGHT_SUFFIXES):
            config, weights = None, config  # Predictor("model_final.pth")
        if weights is None and config is not None:
            raise ConfigError(
                "weights: give the trained detector's weights (.pth), or an export folder"
            )
        self.setup = load(config, weights, overrides, device=device, kind="detection")
        self.cfg = self.setup.cfg
        model = self.setup.build_model(weights="inference")
        with torch.no_grad():
            model = prepare_for_inference(model)
        self.aug = self.setup.test_augmentation()
        self.class_names = self.setup.class_names
        self.metadata = _metadata(self.setup.dataset_names(), self.class_names)
        self.model_format = getattr(model, "input_format", self.setup.input_format)
        backbone = getattr(model, "backbone", None)
        self._divisibility = getattr(backbone, "size_divisibility", 0)
        self._square = (getattr(backbone, "padding_constraints", None) or {}).get("square_size", 0)
        self.runtime, precision = runtime or "torch", precision or "fp32"
        if self.runtime == "torch" and precision == "fp32":
            self.model = model
        else:  # exported whole to a temporary folder: export once and load it to skip this
            self.model = runtime_model(
                model, self.setup, self.runtime, precision, int8_calibration=int8_calibration
            )

    def _from_export(self, where, meta, runtime, precision, device, overrides):
        """An export, run as it is: nothing rebuilt, nothing exported again."""
        from detectron2.data import transforms as T

        if overrides:
            raise ConfigError(f"{where}: an export holds its settings; overrides do not apply")
        if device not in (None, "cpu", "auto"):
            raise ConfigError(f"device {device!r}: an export runs on the CPU")
        self.setup = self.cfg = None
        self.model = load_export(where, runtime, precision)
        self.runtime = runtime or meta["format"]
        resize = meta.get("test_resize") or {}
        short = resize.get("min_size")
        short = [short, short] if isinstance(short, int) else list(short or [0, 0])
        self.aug = T.ResizeShortestEdge(short, resize.get("max_size") or 0)
        self.class_names = meta.get("class_names")
        self.metadata = _metadata([], self.class_names)
        self.model_format = meta["input_format"]
        self._divisibility = int(meta.get("size_divisibility") or 0)
        self._square = 0

    @property
    def device(self):
        return getattr(self.model, "device", "cpu")

    def _as_array(self, image, index):
        """HWC uint8 numpy array in the model's channel order."""
        given = self.input_format
        if isinstance(image, (str, os.PathLike)):
            if Path(image).is_dir():
                raise ConfigError(f"{image}: is a folder; give image files (a list of them)")
            if not Path(image).is_file():
                raise ConfigError(f"{image}: no such image file{cwd_hint(image)}")
            try:
                return read_image(image, format=self.model_format)
            except DatasetError:
                raise
            except BAD_IMAGE_ERRORS as e:  # PIL's UnidentifiedImageError and the like
                raise DatasetError(
                    f"{image}: not a readable image ({type(e).__name__}: {one_line(e)})"
                ) from None
        if type(image).__module__.startswith("PIL."):
            image, given = np.asarray(image.convert("RGB")), "RGB"
        if isinstance(image, torch.Tensor):
            if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
                image = image.permute(1, 2, 0)  # CHW -> HWC
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            raise ConfigError(
                f"image {index}: a path, a NumPy array, a PIL image or a tensor, "
                f"got {type(image).__name__}"
            )
        if image.dtype != np.uint8:
            raise ConfigError(f"image {index}: dtype {image.dtype}; give uint8 pixels (0-255)")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3) or min(image.shape[:2]) < 1:
            raise ConfigError(
                f"image {index}: shape {tuple(image.shape)}; expected HxWx3 (or HxW grey)"
            )
        if image.shape[2] == 1:
            return np.repeat(image, 3, axis=2)
        return image[:, :, ::-1] if given != self.model_format else image

    def _padded(self, h, w):
        if self._square:
            return self._square, self._square
        d = self._divisibility
        return (math.ceil(h / d) * d, math.ceil(w / d) * d) if d > 1 else (h, w)

    def __call__(self, images):
        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        inputs = [model_input(self._as_array(image, i), self.aug) for i, image in enumerate(images)]
        groups = {}
        for i, inp in enumerate(inputs):
            groups.setdefault(self._padded(*inp["image"].shape[1:]), []).append(i)
        outputs = [None] * len(inputs)
        with torch.no_grad():
            for members in groups.values():
                for k in range(0, len(members), self.batch_size):
                    chunk = members[k : k + self.batch_size]
                    for i, out in zip(chunk, self.model([inputs[i] for i in chunk])):
                        outputs[i] = dict(out, class_names=self.class_names)
        return outputs[0] if single else outputs


def _metadata(dataset_names, class_names):
    """Detectron2 metadata for drawing (``Visualizer(image, predictor.metadata)``): the
    test set's (its colours) when its classes are the model's, else the class names."""
    from detectron2.data import MetadataCatalog
    from detectron2.data.catalog import Metadata

    for name in dataset_names:
        meta = MetadataCatalog.get(name)
        if class_names and meta.get("thing_classes") == class_names:
            return meta
    return Metadata(name="resdet_predictor", thing_classes=list(class_names or []))

"""Export a trained resdet Faster R-CNN whole, as one graph (image in, detections out),
for deployment without resdet, Detectron2 or the .pth:

    resdet export --weights output/run/model_final.pth --output export/r50_fpn
    resdet export --config configs/coco_r50_fpn.yaml --weights model_final.pth \
        --format openvino --output export/r50_fpn_ir [KEY VALUE ...]
    resdet export --config configs/lazy/faster_rcnn_r50_fpn.py --weights W \
        --format onnx --output export/lazy [KEY=VALUE ...]

Formats (resdet.export.FORMATS): onnx (ONNX Runtime, OpenVINO, any ONNX runtime),
openvino (IR .xml/.bin, fp32 weights), pt2 (a torch.export ExportedProgram). ``--int8
IMAGES`` quantizes the onnx or openvino graph's convolutions and linear layers to int8,
calibrated on a folder of images like the ones to detect on. The folder gets the model
and export.json: input name, channel order and range, test resize, class names, anchors,
outputs, precision, versions; the same metadata is in the ONNX file's metadata_props and
the IR's rt_info. Load it with resdet.Predictor(FOLDER), or with nothing but a runtime
(docs/deploy_standalone.py). The export is checked against PyTorch before it is written;
errors are one line.
"""

import argparse
import sys

from .. import cli
from ..export import FORMATS, export_model


def parser():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--config",
        default=None,
        help="the detector's config: YAML, or a LazyConfig .py (default: the one the weights "
        "of a resdet run carry)",
    )
    ap.add_argument("--weights", required=True, help="its trained weights (.pth/.pkl)")
    ap.add_argument("--format", default="onnx", help=f"one of {', '.join(FORMATS)} (default onnx)")
    ap.add_argument(
        "--output", required=True, help="folder to write (an earlier export there is replaced)"
    )
    ap.add_argument(
        "--int8",
        metavar="IMAGES",
        help="quantize to int8 (onnx, openvino), calibrated on this folder of images "
        "like the ones to detect on",
    )
    ap.add_argument(
        "--calibration-images",
        type=int,
        default=None,
        help="how many of the --int8 images to calibrate on (default 32)",
    )
    ap.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config overrides: KEY VALUE ... (YAML) or KEY=VALUE ... (LazyConfig)",
    )
    return cli.add_debug_flag(ap)


def main(argv=None) -> int:
    args = cli.parse_args(parser(), argv)

    def export():
        out = export_model(
            args.config,
            args.weights,
            args.format,
            args.output,
            opts=args.opts,
            int8_calibration=args.int8,
            calibration_images=args.calibration_images,
        )
        print(f"exported {args.format}{' int8' if args.int8 else ''} to {out}")

    return cli.run(export, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

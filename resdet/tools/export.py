"""Export a trained resdet Faster R-CNN's dense part (backbone, FPN, RPN head) for
deployment, with dynamic batch, height and width:

    resdet export --config configs/coco_r50_fpn.yaml --weights model_final.pth \\
        --format onnx --output export/r50_fpn_onnx [KEY VALUE ...]
    resdet export --config configs/lazy/faster_rcnn_r50_fpn.py --weights W \\
        --format openvino --output export/r50_fpn_ir [KEY=VALUE ...]

Formats: onnx (ONNX Runtime; also read by OpenVINO), openvino (IR .xml/.bin, fp32
weights), torchscript. ``--int8 IMAGES`` quantizes the onnx or openvino graph to int8,
calibrated on a folder of images like the ones to detect on. The folder gets the model
and export.json (input format, normalisation, size divisibility, test resize, class
names, outputs and their strides, precision, versions). Run it with
resdet.export.runtime_model(...) or resdet.export.load_dense(DIR). The export is
checked against PyTorch before it is written; errors are one line.
"""

import argparse
import sys

from .. import cli


def parser():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--config", required=True, help="the detector's config: YAML, or a LazyConfig .py"
    )
    ap.add_argument("--weights", required=True, help="its trained weights (.pth/.pkl)")
    ap.add_argument("--format", required=True, help="onnx, openvino or torchscript")
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
        from ..export import export_model  # on use: it needs the deploy extra

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

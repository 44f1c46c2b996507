"""Detect on images, folders, globs or videos; draw the detections and write a COCO results
file (Detectron2's demo/demo.py, ultralytics' `predict source=`).

    resdet predict photos/ --weights output/run/model_final.pth --output out/pred
    resdet predict 'clips/*.mp4' a.jpg --config coco_r50_fpn.yaml --weights W.pth \\
        --threshold 0.3 --opts MODEL.DEVICE cpu

OUTPUT gets predictions.json (the COCO dict form: images with file names, categories
with class names, scored annotations; every detection the model gives, so that
`resdet evaluate --gt instances.json --pred OUTPUT/predictions.json` scores it), NAME.jpg
per image and NAME.mp4 per video with the detections at score >= --threshold drawn. An
output folder holding other files is refused unless --overwrite. The work is
resdet.predict (resdet/prediction.py).
"""

import argparse
import sys
import warnings

from .. import cli
from ..prediction import predict


def parser():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "source", nargs="+", help="image files, folders, globs (quoted) or videos, any mix"
    )
    ap.add_argument(
        "--weights", help="the detector's weights (a resdet checkpoint carries its config)"
    )
    ap.add_argument("--config", help="its config (shipped name or path), if the weights lack it")
    ap.add_argument("--output", default="output/predict", help="folder to write into")
    ap.add_argument(
        "--threshold",
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="lowest score drawn (the results file keeps every detection); default 0.5",
    )
    ap.add_argument("--no-draw", action="store_true", help="write predictions.json only")
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a folder that holds other files (files of the same names replaced)",
    )
    ap.add_argument("--device", help="auto, cpu or cuda[:N] (default: the config's)")
    ap.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    ap.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        metavar="KEY VALUE",
        help="config overrides, last on the line (KEY=VALUE for a LazyConfig)",
    )
    return cli.add_debug_flag(ap)


def main(argv=None) -> int:
    ap = parser()
    args = cli.parse_args(ap, argv)
    if args.weights is None and args.config is None:
        ap.error("give --weights (and --config where the weights do not carry theirs)")

    # Detectron2's anchor generator calls torch.meshgrid without indexing=: torch's notice
    # about it would stand beside this command's one line of output or error
    warnings.filterwarnings("ignore", message="torch.meshgrid: in an upcoming release")

    def work():
        r = predict(
            args.config if args.config is not None else args.weights,
            args.weights if args.config is not None else None,
            source=args.source,
            output_dir=args.output,
            threshold=args.threshold,
            draw=not args.no_draw,
            overwrite=args.overwrite,
            device=args.device,
            batch_size=args.batch_size,
            overrides=args.opts or None,
        )
        frames = f" and {r['frames']} video frames" if r["frames"] else ""
        drawn = f", {r['drawn']} drawn at score >= {args.threshold}" if not args.no_draw else ""
        print(
            f"{r['images']} images{frames}: {r['detections']} detections{drawn}; wrote "
            f"{r['predictions']}" + (f" and {len(r['outputs'])} pictures" if r["outputs"] else "")
        )

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

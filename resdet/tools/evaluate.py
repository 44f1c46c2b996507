"""Evaluate a detection predictions file against ground truth, with no model involved.

    resdet evaluate --gt GT --pred PREDICTIONS
        [--metric coco|voc07|voc] [--output metrics.json]

GT is a COCO JSON file or a VOC-layout folder. PREDICTIONS is a COCO results JSON
(image_id, category_id, bbox as x,y,w,h, score) or, for VOC ground truth, a folder of devkit
files comp4_det_test_<class>.txt with lines "image_id score xmin ymin xmax ymax". For VOC
ground truth, JSON category ids are 1..K in the order of the sorted class names.
The work is resdet.evaluate_predictions (resdet/api.py).
"""

import argparse
import logging
import sys

from .. import cli
from ..evaluation import format_results
from ..evaluation.files import evaluate_files


def parser():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--gt", required=True, help="COCO JSON file or VOC folder")
    ap.add_argument(
        "--pred", required=True, help="COCO results JSON, or devkit results folder (VOC)"
    )
    ap.add_argument(
        "--metric",
        default="auto",
        choices=["auto", "coco", "voc07", "voc"],
        help="auto: voc07 for a VOC folder, coco for a COCO file",
    )
    ap.add_argument(
        "--split",
        default=None,
        help="VOC: ImageSets/Main split to evaluate on (default: test if present, else all images)",
    )
    ap.add_argument("--output", default=None, help="write the metrics here as JSON")
    return cli.add_debug_flag(ap)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def work():
        results = evaluate_files(
            args.gt, args.pred, args.metric, split=args.split, output=args.output
        )
        print(format_results(results))

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

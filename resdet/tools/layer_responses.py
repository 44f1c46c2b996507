"""Std of every 3x3 layer's response over a test set, plain vs residual (paper Fig. 7).

    resdet layer-responses --checkpoints output/study/plain-20/model_final.pth \
        output/study/resnet-20/model_final.pth --data ../shared/data/cifar10-mini/test

The work is resdet.analysis.responses.run_layer_responses.
"""

import argparse
import sys

from .. import cli
from ..analysis.responses import run_layer_responses


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be at least 1")
    return value


def parser():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoints", nargs="+", required=True, help="resdet classifier checkpoints")
    ap.add_argument(
        "--data", default="../shared/data/cifar10-mini/test", help="ImageFolder test set"
    )
    ap.add_argument("--output", default="output/layer_responses")
    ap.add_argument("--max-images", type=positive_int, default=1000)
    return cli.add_debug_flag(ap)


def main(argv=None) -> int:
    args = parser().parse_args(argv)

    def work():
        summary = run_layer_responses(args.checkpoints, args.data, args.output, args.max_images)
        for name, s in summary.items():
            print(
                f"{name:>24}: mean std of 3x3 responses {s['mean_std']:.4f} "
                f"over {len(s['stds'])} layers"
            )
        print(f"wrote {args.output}/responses.png and responses.json")

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

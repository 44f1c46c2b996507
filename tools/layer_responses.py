"""Std of every 3x3 layer's response over a test set, plain vs residual (paper Fig. 7).

    python tools/layer_responses.py --checkpoints output/study/plain-20/model_final.pth \
        output/study/resnet-20/model_final.pth --data ../shared/data/cifar10-mini/test
"""
import argparse
import sys

from resdet.analysis.responses import run_layer_responses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", required=True, help="resdet classifier checkpoints")
    ap.add_argument("--data", default="../shared/data/cifar10-mini/test", help="ImageFolder test set")
    ap.add_argument("--output", default="output/layer_responses")
    ap.add_argument("--max-images", type=int, default=1000)
    args = ap.parse_args(argv)
    try:
        summary = run_layer_responses(args.checkpoints, args.data, args.output, args.max_images)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    for name, s in summary.items():
        print(f"{name:>24}: mean std of 3x3 responses {s['mean_std']:.4f} over {len(s['stds'])} layers")
    print(f"wrote {args.output}/responses.png and responses.json")


if __name__ == "__main__":
    main()

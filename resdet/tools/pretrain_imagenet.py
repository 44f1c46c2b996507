"""Pretrain a resdet ResNet classifier (ImageNet, CIFAR, any class folders); see
resdet/pretrain/__init__.py for what a run writes.

    resdet pretrain --config configs/imagenet/r50.yaml --data datasets/imagenet \
        [--output DIR] [--resume] [--eval-only] [--num-gpus N] [KEY VALUE ...]

The work is resdet.pretrain (resdet/api.py).
"""

import argparse
import sys

from .. import cli
from ..pretrain.run import pretrain


def parser():
    p = argparse.ArgumentParser(
        description="Pretrain a resdet ResNet classifier (ImageNet, CIFAR, any class folders)."
    )
    p.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="configs/imagenet/*.yaml or configs/cifar/*.yaml",
    )
    p.add_argument(
        "--data",
        help="dataset root holding <train>/<class>/ and <val>/<class>/ (PRETRAIN.DATA.ROOT)",
    )
    p.add_argument("--output", help="output folder (OUTPUT_DIR)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in OUTPUT_DIR (its outputs are removed first)",
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="evaluate MODEL.WEIGHTS or OUTPUT_DIR/model_final.pth",
    )
    p.add_argument(
        "--num-gpus", type=int, default=1, help="processes on this machine (gloo on CPU)"
    )
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0)
    p.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT for several machines")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    return cli.add_debug_flag(p)


def main(argv=None) -> int:
    args = cli.parse_args(parser(), argv)

    def work():
        result = pretrain(
            args.config,
            data=args.data,
            output_dir=args.output,
            resume=args.resume,
            overwrite=args.overwrite,
            overrides=args.opts,
            eval_only=args.eval_only,
            num_gpus=args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
        )
        if result.get("top1") is not None:
            print(f"top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f}")

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

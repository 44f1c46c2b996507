"""Pretrain a resdet ResNet classifier (ImageNet, CIFAR, any class folders); see
resdet/pretrain/__init__.py for what a run writes.

    resdet pretrain --config configs/imagenet/r50.yaml --data datasets/imagenet \
        [--output DIR] [--resume] [--eval-only] [--num-gpus N] [KEY VALUE ...]

The work is resdet.pretrain (resdet/api.py).
"""

import sys

from .. import cli
from ..pretrain.run import pretrain
from .train_det import training_parser


def parser():
    # Detectron2's train_net flags (--config, --resume, --eval-only, --num-gpus,
    # --num-machines, --machine-rank, --dist-url, KEY VALUE overrides), as for detection
    p = training_parser(
        "Pretrain a resdet ResNet classifier (ImageNet, CIFAR, any class folders). --config: "
        "configs/imagenet/*.yaml or configs/cifar/*.yaml; --eval-only evaluates MODEL.WEIGHTS "
        "or OUTPUT_DIR/model_final.pth."
    )
    p.add_argument(
        "--data",
        help="dataset root holding <train>/<class>/ and <val>/<class>/ (PRETRAIN.DATA.ROOT)",
    )
    p.add_argument("--output", help="output folder (OUTPUT_DIR)")
    return cli.add_debug_flag(p)


def main(argv=None) -> int:
    p = parser()
    args = cli.parse_args(p, argv)
    if not args.config_file:
        p.error("the following arguments are required: --config")

    def work():
        result = pretrain(
            args.config_file,
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

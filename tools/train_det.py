"""Fine-tune (or with --eval-only evaluate) Faster R-CNN with a resdet backbone.

Detectron2's train_net conventions: ``--config`` (short for ``--config-file``; a YAML or
a LazyConfig .py, whose overrides are KEY=VALUE as in lazyconfig_train_net),
``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``, ``--resume``,
``--eval-only``, then ``KEY VALUE`` config overrides, e.g.

    python tools/train_det.py --config configs/coco_r101.yaml MODEL.WEIGHTS output/r101.pth

The work is resdet.train_detector / resdet.evaluate_detector (resdet/api.py).
"""

import sys

from detectron2.engine import default_argument_parser

import resdet  # first: it quiets Detectron2's import-time warnings
from resdet import cli
from resdet.errors import ConfigError


def parser():
    return cli.add_debug_flag(default_argument_parser())


def main(argv=None) -> int:
    args = cli.parse_args(parser(), argv)

    def work():
        # a LazyConfig .py takes KEY=VALUE overrides (Detectron2's lazyconfig_train_net)
        if not args.config_file.endswith(".py") and len(args.opts) % 2:
            raise ConfigError(
                f"overrides: KEY VALUE pairs expected, got {len(args.opts)} values "
                f"(last: {args.opts[-1]!r})"
            )
        run = resdet.evaluate_detector if args.eval_only else resdet.train_detector
        return run(
            args.config_file,
            overrides=args.opts,
            resume=args.resume,
            num_gpus=args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
        )

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

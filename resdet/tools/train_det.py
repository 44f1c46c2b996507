"""Fine-tune (or with --eval-only evaluate) Faster R-CNN with a resdet backbone.

Detectron2's train_net conventions: ``--config`` (short for ``--config-file``; a YAML or
a LazyConfig .py, whose overrides are KEY=VALUE as in lazyconfig_train_net),
``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``, ``--resume``,
``--eval-only``, then ``KEY VALUE`` config overrides, e.g.

    resdet train --config configs/coco_r101.yaml MODEL.WEIGHTS output/r101.pth

The work is resdet.train_detector / resdet.evaluate_detector (resdet/api.py).
"""

import sys

from detectron2.engine import default_argument_parser

from .. import cli
from ..detection.run import evaluate_detector, train_detector


def training_parser(description=None):
    """Detectron2's train_net arguments with resdet's run-folder flag: the parser of every
    resdet command that trains (detection here, pretraining in pretrain_imagenet)."""
    ap = default_argument_parser()
    ap.description = description
    # Detectron2's default is a fixed local port: with --num-machines above 1 a missing
    # --dist-url would then wait for machines that never come; "auto" makes it required
    ap.set_defaults(dist_url="auto")
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in OUTPUT_DIR (its outputs are removed first)",
    )
    return ap


def parser():
    return cli.add_debug_flag(training_parser(__doc__.split("\n")[0]))


def main(argv=None) -> int:
    args = cli.parse_args(parser(), argv)

    def work():
        dist = dict(
            num_gpus=args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
        )
        if args.eval_only:
            return evaluate_detector(
                args.config_file, overrides=args.opts, resume=args.resume, **dist
            )
        return train_detector(
            args.config_file,
            overrides=args.opts,
            resume=args.resume,
            overwrite=args.overwrite,
            **dist,
        )

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

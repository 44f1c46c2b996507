"""Plain vs residual CIFAR nets trained at equal iterations within a time budget (paper
Figs. 1 and 6), with their layer responses (Fig. 7); see resdet/analysis/degradation.py.

    resdet degradation-study --depths 20 56 --budget-minutes 20 \
        --data ../shared/data/cifar10-mini --output output/degradation_study

The work is resdet.analysis.degradation.run_study.
"""

import argparse
import sys

from .. import cli
from ..analysis.degradation import CFG_KEY, run_study


def parser():
    p = argparse.ArgumentParser(
        description="Plain vs residual CIFAR nets at equal iterations (paper Figs. 1, 6, 7).",
        usage="%(prog)s [--depths D ...] [--data DIR] [--budget-minutes M] [--output DIR] "
        "[--seed S] [KEY VALUE ...]",
        epilog="KEY VALUE: config overrides for every net, e.g. SOLVER.IMS_PER_BATCH 64",
    )
    p.add_argument(
        "--depths", type=int, nargs="+", default=[20, 56], help="6n+2 depths, e.g. 20 56"
    )
    p.add_argument(
        "--data",
        default="../shared/data/cifar10-mini",
        help="class folders train/<class>/, test/<class>/",
    )
    p.add_argument(
        "--budget-minutes", type=float, default=20.0, help="wall-clock budget of the whole study"
    )
    p.add_argument("--output", default="output/degradation_study")
    p.add_argument(
        "--seed", type=int, default=0, help="the same seed (init, data order) for every net"
    )
    return cli.add_debug_flag(p)


def main(argv=None) -> int:
    # the overrides start at the first config key, so that they may follow --depths D ...
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((i for i, a in enumerate(argv) if CFG_KEY.match(a)), len(argv))
    args = parser().parse_args(argv[:first])
    opts = argv[first:]
    from detectron2.utils.logger import setup_logger

    setup_logger(name="resdet")

    def work():
        result = run_study(
            args.depths, args.data, args.output, args.budget_minutes, args.seed, opts
        )
        print(f"{'net':>10}  train error  test error  iterations={result['plan']['iterations']}")
        for name, r in result["summary"].items():
            print(f"{name:>10}  {r['train_error']:11.4f}  {r['test_error']:10.4f}")
        for line in result["verdict"]["lines"]:
            print(line)
        print(
            f"wrote {args.output}/summary.json, curves.png, responses.png, responses.json, "
            "verdict.json"
        )

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

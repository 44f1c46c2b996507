"""Run resdet end to end: data -> pretrain -> convert -> detect -> evaluate -> report.

    resdet pipeline [--config pipeline/demo.yaml] [--data PATH [--images DIR]]
        [--output DIR] [KEY VALUE ...]

Finished stages whose outputs still match their checksums in OUTPUT/manifest.json are
skipped, so an interrupted run continues where it stopped. The work is
resdet.pipeline.run_pipeline.
"""

import argparse
import logging
import sys

from .. import cli
from ..pipeline import DEFAULT_CONFIG, load_pipeline_cfg, run_pipeline


def parser(description=None):
    ap = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    ap.add_argument(
        "--config", default=DEFAULT_CONFIG, help="a pipeline config (packaged name or path)"
    )
    ap.add_argument(
        "--data", help="a COCO .json or a VOC-style folder instead of the generated data"
    )
    ap.add_argument("--images", help="image folder of a COCO .json given with --data")
    ap.add_argument("--output", help="output folder (OUTPUT_DIR)")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    return cli.add_debug_flag(ap)


def main(argv=None, description=None) -> int:
    args = cli.parse_args(parser(description), argv)
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S"
    )

    def work():
        cfg = load_pipeline_cfg(
            args.config,
            data=args.data,
            images=args.images,
            output_dir=args.output,
            overrides=args.opts,
        )
        summary = run_pipeline(cfg)
        print(
            f"AP50 {summary['AP50']}, elapsed {summary['elapsed_seconds']} s; "
            f"report: {cfg.OUTPUT_DIR}/report.md and report.html"
        )

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

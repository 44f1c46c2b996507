"""Run resdet end to end: data -> pretrain -> convert -> detect -> evaluate -> report.

    python tools/pipeline.py --config configs/pipeline/demo.yaml [--data PATH [--images DIR]]
        [--output DIR] [KEY VALUE ...]

Finished stages whose outputs still match their checksums in OUTPUT/manifest.json are
skipped, so an interrupted run continues where it stopped.
"""
import argparse
import logging
import sys

from resdet.pipeline import get_pipeline_cfg, run_pipeline


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/pipeline/demo.yaml")
    ap.add_argument("--data", help="a COCO .json or a VOC-style folder instead of the generated data")
    ap.add_argument("--images", help="image folder of a COCO .json given with --data")
    ap.add_argument("--output", help="output folder (OUTPUT_DIR)")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    cfg = get_pipeline_cfg()
    cfg.merge_from_file(args.config)
    opts = list(args.opts)
    for key, value in (("DATA.ROOT", args.data), ("DATA.IMAGES", args.images), ("OUTPUT_DIR", args.output)):
        if value:
            opts += [key, value]
    cfg.merge_from_list(opts)
    try:
        summary = run_pipeline(cfg)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"AP50 {summary['AP50']}, elapsed {summary['elapsed_seconds']} s; "
          f"report: {cfg.OUTPUT_DIR}/report.md and report.html")


if __name__ == "__main__":
    main()

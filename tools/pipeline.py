"""Run resdet end to end: data -> pretrain -> convert -> detect -> evaluate -> report.

    python tools/pipeline.py --config configs/pipeline/demo.yaml [--data PATH [--images DIR]]
        [--output DIR] [KEY VALUE ...]

Finished stages whose outputs still match their checksums in OUTPUT/manifest.json are
skipped, so an interrupted run continues where it stopped.
"""
from resdet.pipeline import main

if __name__ == "__main__":
    main()

"""`make demo`: the whole resdet pipeline on its built-in, offline default
(pipeline/demo.yaml), or on your data with --data [--images]; the same command as
tools/pipeline.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pipeline  # noqa: E402  (tools/pipeline.py)


def main(argv=None) -> int:
    return pipeline.main(argv, description=__doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())

"""`make demo` (`resdet demo`): the whole resdet pipeline on its built-in, offline default
(pipeline/demo.yaml), or on your data with --data [--images]; the same command as
`resdet pipeline`."""

import sys

from . import pipeline


def main(argv=None) -> int:
    return pipeline.main(argv, description=__doc__.split("\n")[0])


if __name__ == "__main__":
    sys.exit(main())

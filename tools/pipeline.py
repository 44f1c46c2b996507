"""`python tools/pipeline.py ARGS` is `resdet pipeline ARGS`;
the code is resdet/tools/pipeline.py."""

import sys

from resdet.tools.pipeline import main

if __name__ == "__main__":
    sys.exit(main())

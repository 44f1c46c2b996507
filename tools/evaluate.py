"""`python tools/evaluate.py ARGS` is `resdet evaluate ARGS`;
the code is resdet/tools/evaluate.py."""

import sys

from resdet.tools.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

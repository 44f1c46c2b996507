"""`python tools/predict.py ARGS` is `resdet predict ARGS`;
the code is resdet/tools/predict.py."""

import sys

from resdet.tools.predict import main

if __name__ == "__main__":
    sys.exit(main())

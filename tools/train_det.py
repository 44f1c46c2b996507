"""`python tools/train_det.py ARGS` is `resdet train ARGS`;
the code is resdet/tools/train_det.py."""

import sys

from resdet.tools.train_det import main

if __name__ == "__main__":
    sys.exit(main())

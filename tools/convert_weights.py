"""`python tools/convert_weights.py ARGS` is `resdet convert ARGS`;
the code is resdet/tools/convert_weights.py."""

import sys

from resdet.tools.convert_weights import main

if __name__ == "__main__":
    sys.exit(main())

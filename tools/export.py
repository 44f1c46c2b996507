"""`python tools/export.py ARGS` is `resdet export ARGS`;
the code is resdet/tools/export.py."""

import sys

from resdet.tools.export import main

if __name__ == "__main__":
    sys.exit(main())

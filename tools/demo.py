"""`python tools/demo.py ARGS` is `resdet demo ARGS`;
the code is resdet/tools/demo.py."""

import sys

from resdet.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())

"""`python tools/layer_responses.py ARGS` is `resdet layer-responses ARGS`;
the code is resdet/tools/layer_responses.py."""

import sys

from resdet.tools.layer_responses import main

if __name__ == "__main__":
    sys.exit(main())

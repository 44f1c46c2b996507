"""`python tools/degradation_study.py ARGS` is `resdet degradation-study ARGS`;
the code is resdet/tools/degradation_study.py."""

import sys

from resdet.tools.degradation_study import main

if __name__ == "__main__":
    sys.exit(main())

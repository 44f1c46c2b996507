"""``python -m resdet COMMAND ...``: the ``resdet`` command (resdet.tools.main)."""

import sys

from .tools import main

if __name__ == "__main__":
    sys.exit(main())

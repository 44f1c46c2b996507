"""Shared fixtures. Real data comes from ../shared/data (or $RESDET_SHARED_DATA); a test
that needs it fails, never skips, when it is missing."""
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    return Path(os.environ.get("RESDET_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.fail(f"real test data not found at {root}; set RESDET_SHARED_DATA")
    return root


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)


class CodeOnLoad:
    """A pickle payload that would create ``marker`` when unpickled: what a malicious
    checkpoint does. Tests assert that loading refuses it and the file never appears."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def load_tool(name):
    """tools/<name>.py as a module, so a test calls its ``main(argv) -> int`` in-process."""
    import importlib.util
    import sys

    sys.path.insert(0, str(REPO / "tools"))  # tools/demo.py imports tools/pipeline.py
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

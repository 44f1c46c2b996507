"""Shared fixtures. Real data comes from ../shared/data (or $RESDET_SHARED_DATA). A test
that needs it and cannot find it is skipped on a newcomer's machine, so `make test`
passes there, and fails in CI (RESDET_REQUIRE_DATA=1, set by .ci/run, or CI=true), where
a skip would hide that the tests did not run."""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    return Path(os.environ.get("RESDET_SHARED_DATA", REPO.parent / "shared" / "data"))


def data_required() -> bool:
    return (
        os.environ.get("RESDET_REQUIRE_DATA") == "1" or os.environ.get("CI", "").lower() == "true"
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        msg = f"real test data not found at {root}; set RESDET_SHARED_DATA to its folder"
        if data_required():
            pytest.fail(msg + " (required: RESDET_REQUIRE_DATA=1 or CI=true)")
        pytest.skip(msg)
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


def give_detections(model, *, std, background, cls_seed=None):
    """Untrained detector weights that detect: random frozen-BN statistics (so folding them
    changes the convs) and a random box classifier biased to the background class, which
    finds varied objects in photos and none in a flat image. ``cls_seed``: the classifier's
    own generator (None: the one the statistics drew from)."""
    from detectron2.layers import FrozenBatchNorm2d

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                n = m.weight.numel()
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
        cls = model.roi_heads.box_predictor.cls_score
        own = torch.Generator().manual_seed(cls_seed) if cls_seed is not None else g
        cls.weight.normal_(0, std, generator=own)
        cls.bias.zero_()
        cls.bias[-1] = background
    return model

"""resdet: the residual networks of He et al. (2015) as a Detectron2 toolkit.

Importing resdet registers its backbones (``build_resdet_backbone``,
``build_resdet_fpn_backbone``) and ROI head (``ResdetRes5ROIHeads``) with Detectron2,
so any Detectron2 project can use them by name.

The Python API (resdet/api.py): ``Predictor``, ``train_detector``, ``evaluate_detector``,
``evaluate_predictions``, ``pretrain``, ``convert_weights``; each does what one command in
tools/ does.
"""

import warnings

__version__ = "0.1.0"

# fvcore and Detectron2 call torch.jit.script at import; its deprecation warning would
# break the one-line error messages of every resdet tool.
warnings.filterwarnings(
    "ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning
)

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "resdet needs Detectron2, which is not installed. Run `make test` or `make demo` "
        "(they install it into .venv), or install it yourself: "
        "`pip install 'git+https://github.com/facebookresearch/detectron2.git'` "
        "(see README.md, 'Install')."
    ) from e

from . import modeling  # noqa: E402,F401  (registers the backbones and ROI head)
from .api import (  # noqa: E402,F401  (light: each function imports what it needs when called)
    Predictor,
    convert_weights,
    evaluate_detector,
    evaluate_predictions,
    train_detector,
)
from .config import add_resdet_config, get_resdet_cfg  # noqa: E402,F401


def __getattr__(name):
    # ``resdet.pretrain`` is the pretraining package, imported on first use; the package is
    # callable (``resdet.pretrain(config, data=...)`` is resdet.api.pretrain), so the API
    # function and the package cannot shadow each other
    if name == "pretrain":
        import importlib

        return importlib.import_module(".pretrain", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""resdet: the residual networks of He et al. (2015) as a Detectron2 toolkit.

Importing resdet registers its backbones (``build_resdet_backbone``,
``build_resdet_fpn_backbone``) and ROI head (``ResdetRes5ROIHeads``) with Detectron2,
so any Detectron2 project can use them by name.

The Python API (resdet/api.py, a facade): ``Predictor``, ``predict``, ``train_detector``,
``evaluate_detector``, ``evaluate_predictions``, ``pretrain``, ``convert_weights``,
``export_model``; each does what one ``resdet`` command does (resdet/tools).
``resdet.model_zoo`` lists and loads the shipped configs, as Detectron2's ``model_zoo``.
"""

import warnings

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

# ``resdet.pretrain`` is the pretraining package, and callable: ``resdet.pretrain(config,
# data=...)`` is resdet.api.pretrain (a name cannot be both the package and the function)
from . import (  # noqa: E402,F401  (modeling registers the backbones)
    model_zoo,
    modeling,
    pretrain,  # noqa: E402,F401
)
from .api import (  # noqa: E402,F401
    Predictor,
    convert_weights,
    evaluate_detector,
    evaluate_predictions,
    export_model,
    predict,
    train_detector,
)
from .config import add_resdet_config, get_resdet_cfg  # noqa: E402,F401
from .version import __version__  # noqa: E402,F401

"""resdet: the residual networks of He et al. (2015) as a Detectron2 toolkit.

Importing resdet registers its backbones (``build_resdet_backbone``,
``build_resdet_fpn_backbone``) and ROI head (``ResdetRes5ROIHeads``) with Detectron2,
so any Detectron2 project can use them by name.
"""
import warnings

__version__ = "0.1.0"

# fvcore and Detectron2 call torch.jit.script at import; its deprecation warning would
# break the one-line error messages of every resdet tool.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)

try:
    import detectron2  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "resdet needs Detectron2, which is not installed. Run `make test` or `make demo` "
        "(they install it into .venv), or install it yourself: "
        "`pip install 'git+https://github.com/facebookresearch/detectron2.git'` "
        "(see README.md, 'Install')."
    ) from e

from .config import add_resdet_config, get_resdet_cfg  # noqa: E402,F401
from . import modeling  # noqa: E402,F401  (registers the backbones and ROI head)

"""resdet: the residual networks of He et al. (2015) as a Detectron2 toolkit.

Importing resdet registers its backbones (``build_resdet_backbone``,
``build_resdet_fpn_backbone``) and ROI head (``ResdetRes5ROIHeads``) with Detectron2,
so any Detectron2 project can use them by name.
"""
__version__ = "0.1.0"

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

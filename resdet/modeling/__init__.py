"""resdet models: the ResNet family and its Detectron2 backbones (registered on import)."""

from .backbone import build_resdet_backbone, build_resdet_fpn_backbone  # noqa: F401
from .fuse import fold_frozen_batchnorm, prepare_for_inference  # noqa: F401
from .resnet import (  # noqa: F401
    CIFAR_DEPTHS,
    IMAGENET_DEPTHS,
    NORMS,
    SHORTCUTS,
    BasicBlock,
    BottleneckBlock,
    build_resnet,
    make_stages,
    stage_specs,
)
from .roi_heads import ResdetRes5ROIHeads  # noqa: F401

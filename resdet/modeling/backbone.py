"""Detectron2 backbones built from resdet's ResNet: C4 (a plain trunk) and FPN.

Both read Detectron2's own MODEL.RESNETS keys plus MODEL.RESDET.{SHORTCUT,RESIDUAL},
so a Detectron2 config switches to resdet by changing MODEL.BACKBONE.NAME alone.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool

from .resnet import build_resnet

__all__ = ["build_resdet_backbone", "build_resdet_fpn_backbone", "resnet_kwargs_from_cfg"]


def resnet_kwargs_from_cfg(cfg):
    """The build_resnet arguments a Detectron2 config asks for (shared by trunk and head)."""
    r = cfg.MODEL.RESNETS
    return dict(
        depth=r.DEPTH,
        dataset="imagenet",
        shortcut=cfg.MODEL.RESDET.SHORTCUT,
        residual=cfg.MODEL.RESDET.RESIDUAL,
        norm=r.NORM,
        stride_in_1x1=r.STRIDE_IN_1X1,
        zero_init_residual=cfg.MODEL.RESDET.ZERO_INIT_RESIDUAL,
        stem_out_channels=r.STEM_OUT_CHANNELS,
        res2_out_channels=r.RES2_OUT_CHANNELS,
        num_groups=r.NUM_GROUPS,
        width_per_group=r.WIDTH_PER_GROUP,
        res5_dilation=r.RES5_DILATION,
    )


@BACKBONE_REGISTRY.register()
def build_resdet_backbone(cfg, input_shape: ShapeSpec):
    """resdet ResNet trunk for Detectron2 (C4 models use OUT_FEATURES=["res4"])."""
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        raise ValueError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE is not supported by resdet backbones;"
            " allowed: all False"
        )
    return build_resnet(
        num_classes=None,
        in_channels=input_shape.channels,
        out_features=list(cfg.MODEL.RESNETS.OUT_FEATURES),
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT,
        **resnet_kwargs_from_cfg(cfg),
    )


@BACKBONE_REGISTRY.register()
def build_resdet_fpn_backbone(cfg, input_shape: ShapeSpec):
    """FPN over the resdet trunk, exactly as Detectron2's build_resnet_fpn_backbone."""
    bottom_up = build_resdet_backbone(cfg, input_shape)
    return FPN(
        bottom_up=bottom_up,
        in_features=cfg.MODEL.FPN.IN_FEATURES,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=LastLevelMaxPool(),
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )

"""resdet in Detectron2's LazyConfig world: config nodes for its trunk and C4 head.

Putting resdet's trunk into any Detectron2 zoo LazyConfig is one line::

    from detectron2 import model_zoo
    from resdet.lazy import resdet_bottom_up

    cfg = model_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
    cfg.model.backbone.bottom_up = resdet_bottom_up(50, norm="SyncBN", freeze_at=0)

Weights converted with ``--layout fpn`` then load into ``backbone.bottom_up``. The zoo
configs assume BGR Caffe2 inputs; loading the config with the weights
(``resdet.engine.load``, what every resdet command does) sets the input format and pixel
statistics the converted weights carry. resdet's own Faster R-CNN LazyConfigs are
``configs/lazy/*.py`` (``resdet.model_zoo.get_config("lazy/faster_rcnn_r101_c4.py")``);
they train and evaluate with tools/train_det.py like YAML configs.
"""

from typing import Sequence

from detectron2.config import LazyCall as L
from torch import nn

from .modeling.resnet import build_resnet, make_stages, stage_specs

__all__ = [
    "resdet_bottom_up",
    "resdet_res5",
    "build_res5",
]


TRUNK_FEATURES = ("res2", "res3", "res4", "res5")


def resdet_bottom_up(
    depth: int = 50,
    *,
    out_features: Sequence[str] = TRUNK_FEATURES,
    norm="FrozenBN",
    freeze_at: int = 2,
    stride_in_1x1: bool = False,
    shortcut: str = "B",
    residual: bool = True,
    **kwargs,
):
    """resdet's ResNet trunk (:func:`resdet.modeling.build_resnet` without classifier) as
    a LazyCall node: ``model.backbone.bottom_up`` of an FPN config, ``model.backbone`` of a
    C4 one (``out_features=["res4"]``). Other keyword arguments go to ``build_resnet``."""
    return L(build_resnet)(
        depth=depth,
        num_classes=None,
        out_features=list(out_features),
        norm=norm,
        freeze_at=freeze_at,
        stride_in_1x1=stride_in_1x1,
        shortcut=shortcut,
        residual=residual,
        **kwargs,
    )


def build_res5(
    depth: int,
    *,
    norm="FrozenBN",
    shortcut: str = "B",
    residual: bool = True,
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    stem_out_channels: int = 64,
    res2_out_channels=None,
    num_groups: int = 1,
    width_per_group: int = 64,
) -> nn.Sequential:
    """The C4 model's per-RoI head: resdet's res5 stage of ``depth``, as
    :class:`resdet.modeling.ResdetRes5ROIHeads` builds it from a yacs config (no
    dilation: in the head res5 always subsamples the 14x14 RoI features)."""
    spec = stage_specs(
        depth,
        stem_out_channels=stem_out_channels,
        res2_out_channels=res2_out_channels,
        num_groups=num_groups,
        width_per_group=width_per_group,
    )[3]
    (blocks,) = make_stages(
        [spec],
        norm=norm,
        shortcut=shortcut,
        residual=residual,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        num_groups=num_groups,
    )
    return nn.Sequential(*blocks)


def resdet_res5(depth=50, **kwargs):
    """:func:`build_res5` as a LazyCall node, for ``model.roi_heads.res5`` of a C4 config."""
    return L(build_res5)(depth=depth, **kwargs)

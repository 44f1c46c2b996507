"""The paper's C4 head: res5 applied to each RoI, built from resdet blocks.

Detectron2's Res5ROIHeads always builds three bottleneck blocks; this head builds the
res5 stage of the configured depth (two basic blocks for R18, plain blocks for plain
nets, option A/C shortcuts) so C4 models exist for the whole family.
"""

from detectron2.config import configurable
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads import Res5ROIHeads
from torch import nn

from ..layers import FastROIPooler
from .backbone import resnet_kwargs_from_cfg
from .resnet import make_stages, stage_specs

__all__ = ["ResdetRes5ROIHeads"]


@ROI_HEADS_REGISTRY.register()
class ResdetRes5ROIHeads(Res5ROIHeads):
    """Res5ROIHeads whose res5 (``roi_heads.res5.*``) is resdet's res5 stage, pooling
    through resdet's multi-threaded ROIAlign (identical output and gradients)."""

    @configurable
    def __init__(self, *, pooler, **kwargs):
        # here, not in from_config, so LazyConfig models (built from kwargs) pool the same way
        if not isinstance(pooler, FastROIPooler):
            pooler = FastROIPooler.from_pooler(pooler)
        super().__init__(pooler=pooler, **kwargs)

    @classmethod
    def _build_res5_block(cls, cfg):
        kw = resnet_kwargs_from_cfg(cfg)
        # In the C4 head res5 always subsamples the 14x14 RoI features (paper Sec. A).
        kw["res5_dilation"] = 1
        res5 = stage_specs(
            kw["depth"],
            **{
                k: kw[k]
                for k in (
                    "dataset",
                    "stem_out_channels",
                    "res2_out_channels",
                    "num_groups",
                    "width_per_group",
                    "res5_dilation",
                )
            },
        )[3]
        (blocks,) = make_stages(
            [res5],
            **{
                k: kw[k]
                for k in (
                    "norm",
                    "shortcut",
                    "residual",
                    "stride_in_1x1",
                    "zero_init_residual",
                    "num_groups",
                )
            },
        )
        return nn.Sequential(*blocks), res5.out_channels

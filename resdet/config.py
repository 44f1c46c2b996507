"""resdet's configuration keys.

resdet reuses Detectron2's keys wherever they mean the same thing (MODEL.RESNETS.DEPTH,
NORM, STRIDE_IN_1X1, RES5_DILATION, OUT_FEATURES, RES2_OUT_CHANNELS,
MODEL.BACKBONE.FREEZE_AT); only what Detectron2 has no key for lives under MODEL.RESDET.
"""
from detectron2.config import CfgNode as CN


def add_resdet_config(cfg):
    """Add resdet's keys with their defaults to a Detectron2 config (in place)."""
    cfg.MODEL.RESDET = CN()
    # Paper Sec. 3.3 / Table 3: "A" zero-padded identity, "B" projection where the
    # shape changes, "C" projection on every block.
    cfg.MODEL.RESDET.SHORTCUT = "B"
    # False builds the plain (shortcut-free) counterpart with the same layers.
    cfg.MODEL.RESDET.RESIDUAL = True
    # Zero-init the last norm of each residual branch (helps training from scratch).
    cfg.MODEL.RESDET.ZERO_INIT_RESIDUAL = False
    return cfg


def get_resdet_cfg():
    """Detectron2's default config plus resdet's keys."""
    from detectron2.config import get_cfg

    return add_resdet_config(get_cfg())

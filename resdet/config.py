"""resdet's configuration keys.

resdet reuses Detectron2's keys wherever they mean the same thing (MODEL.RESNETS.DEPTH,
NORM, STRIDE_IN_1X1, RES5_DILATION, OUT_FEATURES, RES2_OUT_CHANNELS,
MODEL.BACKBONE.FREEZE_AT); only what Detectron2 has no key for lives under MODEL.RESDET.
"""
import difflib
from pathlib import Path

from detectron2.config import CfgNode as CN

from .errors import ConfigError


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

    cfg.RESDET = CN()
    # User datasets with no code: a COCO JSON file or a VOC-style folder (JPEGImages/,
    # Annotations/, optional ImageSets/Main/). Registered as "resdet_train"/"resdet_test"
    # and used when DATASETS.TRAIN/TEST name them. Class names come from the data.
    cfg.RESDET.DATA = CN()
    cfg.RESDET.DATA.TRAIN = ""
    cfg.RESDET.DATA.TRAIN_IMAGES = ""   # COCO JSON only: its image folder
    cfg.RESDET.DATA.TRAIN_SPLIT = ""    # VOC only: ImageSets/Main/<split>.txt; "" = all annotated
    cfg.RESDET.DATA.TEST = ""
    cfg.RESDET.DATA.TEST_IMAGES = ""
    cfg.RESDET.DATA.TEST_SPLIT = ""
    # VOC folder without ImageSets: hold out this fraction (deterministic) as the test split.
    cfg.RESDET.DATA.HOLDOUT_FRACTION = 0.0

    cfg.RESDET.EVAL = CN()
    # "coco" (AP@[.5:.95]), "voc07" (11-point AP50), "voc" (area AP50); "auto": voc07 for
    # VOC-layout data, coco otherwise.
    cfg.RESDET.EVAL.METRIC = "auto"
    # Checkpoint kept as model_best.pth, by this metric of metrics.json ("auto": bbox/AP
    # for coco, bbox/AP50 for VOC metrics).
    cfg.RESDET.EVAL.BEST_METRIC = "auto"
    # Test images drawn with their predictions into OUTPUT_DIR/predictions/.
    cfg.RESDET.EVAL.NUM_VIS = 8
    # Only detections scoring at least this are drawn there (Detectron2's demo uses 0.5);
    # evaluation still sees every detection above MODEL.ROI_HEADS.SCORE_THRESH_TEST.
    cfg.RESDET.EVAL.VIS_THRESH = 0.5
    # --eval-only: also torch.compile the backbone and RPN head (resdet.modeling.
    # prepare_for_inference; 1.05-1.25x on the backbone on a CPU, one compile per new
    # input shape, so it pays off on long evaluations with few distinct image sizes).
    cfg.RESDET.EVAL.COMPILE = False
    return cfg


def get_resdet_cfg():
    """Detectron2's default config plus resdet's keys."""
    from detectron2.config import get_cfg

    return add_resdet_config(get_cfg())


def _keys(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _keys(v, f"{prefix}{k}.")
        else:
            yield prefix + k


def merge_opts(cfg, opts, where="overrides"):
    """``cfg.merge_from_list(opts)`` with one-line ConfigErrors: an odd number of values, an
    unknown key (naming the closest known keys) or a value of the wrong type."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"{where}: KEY VALUE pairs expected, got {len(opts)} values "
                          f"(last: {opts[-1]!r})")
    known = set(_keys(cfg))
    for key, value in zip(opts[0::2], opts[1::2]):
        key = str(key)
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"{where}: unknown config key {key}{hint}")
        node, leaf = cfg, key.split(".")
        for part in leaf[:-1]:
            node = node[part]
        if isinstance(node[leaf[-1]], float) and _is_int(value):
            value = float(value)  # SOLVER.BASE_LR 2 means 2.0
        try:
            cfg.merge_from_list([key, value])
        except (KeyError, ValueError, AssertionError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"{where}: {key} {value!r}: {msg}") from None
    return cfg


def _is_int(value):
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    try:
        int(str(value))
        return True
    except ValueError:
        return False


def merge_file(cfg, path):
    """``cfg.merge_from_file(path)`` with one-line ConfigErrors for a missing file (or
    ``_BASE_``), broken YAML, an unknown key or a value of the wrong type."""
    import yaml

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        cfg.merge_from_file(str(path))
    except FileNotFoundError as e:
        raise ConfigError(f"{e.filename or path}: no such config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    except (KeyError, ValueError, AssertionError) as e:
        msg = (e.args[0] if isinstance(e, KeyError) and e.args else str(e)).strip()
        raise ConfigError(f"{path}: {msg.splitlines()[0] if msg else type(e).__name__}") from None
    return cfg

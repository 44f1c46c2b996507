"""resdet's configuration keys.

resdet reuses Detectron2's keys wherever they mean the same thing (MODEL.RESNETS.DEPTH,
NORM, STRIDE_IN_1X1, RES5_DILATION, OUT_FEATURES, RES2_OUT_CHANNELS,
MODEL.BACKBONE.FREEZE_AT); only what Detectron2 has no key for lives under MODEL.RESDET.
"""

import os

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
    cfg.RESDET.DATA.TRAIN_IMAGES = ""  # COCO JSON only: its image folder
    cfg.RESDET.DATA.TRAIN_SPLIT = ""  # VOC only: ImageSets/Main/<split>.txt; "" = all annotated
    cfg.RESDET.DATA.TEST = ""
    cfg.RESDET.DATA.TEST_IMAGES = ""
    cfg.RESDET.DATA.TEST_SPLIT = ""
    # The class names, in order (category ids 1..K); [] = the sorted object names found in a
    # VOC folder, or a COCO file's categories. When given, an object of any other class is an
    # error naming its file, so a misspelt name cannot become a class of its own.
    cfg.RESDET.DATA.CLASSES = []
    # VOC folder without ImageSets: hold out this fraction (deterministic) as the test split.
    cfg.RESDET.DATA.HOLDOUT_FRACTION = 0.0

    cfg.RESDET.WEIGHTS = CN()
    # MODEL.WEIGHTS must fill every trunk parameter with its shape (resdet.detection.weights);
    # False loads what fits and only logs the rest, as Detectron2 does.
    cfg.RESDET.WEIGHTS.STRICT = True

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


# ---- loading configs with one-line errors ------------------------------------------------
def _flat_keys(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, CN):
            yield from _flat_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def _unknown_key(cfg, full_key, where):
    import difflib

    keys = list(_flat_keys(cfg))
    # a key written in lower case, or cut short, before a mere spelling likeness
    close = (
        [k for k in keys if k == full_key.upper()]
        or [k for k in keys if k.startswith(full_key.upper())][:3]
        or difflib.get_close_matches(full_key.upper(), keys, n=3, cutoff=0.75)
    )
    hint = (
        f"; did you mean {' or '.join(close)}?"
        if close
        else "; see resdet/config.py for resdet's keys"
    )
    return ConfigError(f"{where}: unknown config key {full_key}{hint}")


def _coerce(value, default, full_key, where):
    """``value`` as the type of ``default``: yacs's rules plus the casts a user expects
    (an int where a float is wanted, a whole float where an int is wanted)."""
    if default is None or value is None or type(value) is type(default):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (
        isinstance(default, int)
        and not isinstance(default, bool)
        and isinstance(value, float)
        and value.is_integer()
    ):
        return int(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    kind = {
        bool: "true or false",
        int: "a whole number",
        float: "a number",
        str: "a string",
        list: "a list",
        tuple: "a list",
    }.get(type(default), type(default).__name__)
    return ConfigError(
        f"{where}: {full_key} must be {kind} (like its default {default!r}), got {value!r}"
    )


def _merge_checked(cfg, updates, where):
    """Merge ``updates`` ({full.key: value} or nested dicts) into ``cfg`` in place, raising
    ConfigError for an unknown key or a value of the wrong type."""

    def walk(node, d, prefix):
        for k, v in d.items():
            full = f"{prefix}{k}"
            if k not in node:
                if node.is_new_allowed():
                    node[k] = CN(v) if isinstance(v, dict) else v
                    continue
                while isinstance(v, dict) and v:  # name the whole key the user wrote
                    k, v = next(iter(v.items()))
                    full = f"{full}.{k}"
                raise _unknown_key(cfg, full, where)
            if isinstance(node[k], CN):
                if not isinstance(v, dict):
                    raise ConfigError(
                        f"{where}: {full} is a group of keys; give its keys, not {v!r}"
                    )
                walk(node[k], v, full + ".")
                continue
            # as yacs's merge: strings are Python literals where they parse as one
            value = _coerce(CN._decode_cfg_value(v), node[k], full, where)
            if isinstance(value, ConfigError):
                raise value
            node[k] = value

    walk(cfg, updates, "")


def merge_config_file(cfg, path):
    """``cfg.merge_from_file(path)`` (with its ``_BASE_`` chain), with one-line errors."""
    import yaml

    path = str(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such config file")
    try:
        loaded = cfg.load_yaml_with_base(path, allow_unsafe=False)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: its _BASE_ {e.filename or e} does not exist") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}"
        ) from None
    except (AssertionError, TypeError, AttributeError, UnicodeDecodeError):
        raise ConfigError(f"{path}: not a config file (expected a YAML mapping of keys)") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: not a config file (expected a mapping of keys)")
    version = loaded.pop("VERSION", cfg.get("VERSION"))
    if "VERSION" in cfg and version != cfg.VERSION:
        raise ConfigError(
            f"{path}: VERSION {version} is not Detectron2's current config version "
            f"{cfg.VERSION}; update the file"
        )
    _merge_checked(cfg, loaded, path)
    return cfg


def merge_overrides(cfg, opts, where="command line"):
    """``cfg.merge_from_list(opts)`` (KEY VALUE pairs), with one-line errors."""
    opts = list(opts or [])
    if len(opts) % 2:
        raise ConfigError(f"{where}: overrides are KEY VALUE pairs; {opts[-1]!r} has no value")
    updates = {}
    for key, value in zip(opts[0::2], opts[1::2]):
        node = updates
        *parents, last = str(key).split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    _merge_checked(cfg, updates, where)
    return cfg


def check_solver(cfg, training=True):
    """Values no training run can use, as one-line errors before anything starts."""
    import math

    s = cfg.SOLVER
    if training and s.MAX_ITER <= 0:
        raise ConfigError(f"SOLVER.MAX_ITER must be positive, got {s.MAX_ITER}")
    if training and not (math.isfinite(s.BASE_LR) and s.BASE_LR > 0):
        raise ConfigError(f"SOLVER.BASE_LR must be a positive number, got {s.BASE_LR}")
    if s.IMS_PER_BATCH <= 0:
        raise ConfigError(f"SOLVER.IMS_PER_BATCH must be positive, got {s.IMS_PER_BATCH}")
    if s.CHECKPOINT_PERIOD <= 0:
        raise ConfigError(f"SOLVER.CHECKPOINT_PERIOD must be positive, got {s.CHECKPOINT_PERIOD}")
    if cfg.TEST.EVAL_PERIOD < 0:
        raise ConfigError(
            f"TEST.EVAL_PERIOD must be 0 (off) or positive, got {cfg.TEST.EVAL_PERIOD}"
        )
    if training and s.WARMUP_ITERS < 0:
        raise ConfigError(f"SOLVER.WARMUP_ITERS must be 0 or positive, got {s.WARMUP_ITERS}")
    bad = [st for st in s.STEPS if st <= 0]
    if bad:
        raise ConfigError(f"SOLVER.STEPS must be positive iterations, got {list(s.STEPS)}")
    if cfg.DATALOADER.NUM_WORKERS < -1:
        raise ConfigError(
            f"DATALOADER.NUM_WORKERS must be -1 (auto) or more, got {cfg.DATALOADER.NUM_WORKERS}"
        )
    return cfg


def check_device(cfg):
    """MODEL.DEVICE is "cpu" or "cuda[:N]", and CUDA is there when it names CUDA."""
    import re

    import torch

    device = cfg.MODEL.DEVICE
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"MODEL.DEVICE {device!r} is not a device; use cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"MODEL.DEVICE {device!r} but CUDA is not available; use MODEL.DEVICE cpu"
        )
    return cfg


def check_weights_path(cfg):
    """MODEL.WEIGHTS, when set, must be a local file: resdet never downloads at run time."""
    w = cfg.MODEL.WEIGHTS
    if not w:
        return cfg
    if "://" in w and not w.startswith("file://"):
        raise ConfigError(
            f"MODEL.WEIGHTS {w}: resdet loads local files only; download it and give its path"
        )
    path = w[len("file://") :] if w.startswith("file://") else w
    if not os.path.isfile(path):
        raise ConfigError(f"MODEL.WEIGHTS {path}: no such file")
    return cfg

"""The values a config key can take, checked once when a YAML config is loaded.

yacs checks a value's type only, and Detectron2 trusts the rest: a score threshold of 1.5
keeps no detection (AP 0 without a word), a negative anchor size or ``FREEZE_AT 7``
trains something else than asked, an RPN batch of 0 ends in a NaN loss blamed on the
learning rate, ``FPN.OUT_CHANNELS 0`` fails inside the first forward pass, and an
unknown scheduler or sampler name is a bare ValueError from deep inside a builder. Here
each is one line naming the key, the value and what it may be, before anything is built.

One table (:data:`RULES`), for every kind of YAML config that has the key; a key of a
list is checked element by element (nested lists too).
"""

import math
from typing import Callable, NamedTuple

from ..errors import ConfigError

__all__ = ["RULES", "check_values"]


class Rule(NamedTuple):
    ok: Callable
    text: str  # what the value may be: "must be <text>"
    why: str = ""  # what the wrong value would do, when it is not obvious
    kinds: tuple = ("detection", "pretrain")  # the config kinds it applies to
    nonempty: bool = False  # a list that must hold at least one value

    def listed(self):
        return self._replace(nonempty=True)


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def positive(why=""):
    return Rule(lambda x: _num(x) and x > 0, "positive", why)


def at_least(n, why=""):
    return Rule(lambda x: _num(x) and x >= n, f"at least {n}", why)


def between(lo, hi, *, hi_open=False, lo_open=False, why=""):
    text = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    return Rule(
        lambda x: _num(x) and (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi),
        f"in {text}",
        why,
    )


def whole(least, why=""):
    return Rule(
        lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= least,
        f"a whole number of at least {least}",
        why,
    )


def names(why=""):
    return Rule(lambda x: isinstance(x, str) and x.strip() != "", "a non-empty name", why)


def one_of(*names, why="", kinds=("detection", "pretrain")):
    return Rule(lambda x: x in names, f"one of {', '.join(names)}", why, kinds)


_BATCH = "a head trained on no sampled boxes has a NaN loss"
_SCORE = "a detection's score is below 1, so no detection would be kept"
_DET = "the ones Detectron2's solver builds"
_DETECTION = ("detection",)
_PRETRAIN = ("pretrain",)
_SCHEDULERS = ("WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepWithFixedGammaLR")

RULES = {
    # ---- input -------------------------------------------------------------------------
    "INPUT.MIN_SIZE_TRAIN": positive().listed(),
    "INPUT.MAX_SIZE_TRAIN": positive(),
    "INPUT.MIN_SIZE_TEST": at_least(0, "0 turns the test resize off"),
    "INPUT.MAX_SIZE_TEST": positive(),
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": one_of("choice", "range"),
    "INPUT.FORMAT": one_of(
        "BGR", "RGB", "L", "YUV-BT.601", why="the channel order images are read in"
    ),
    "INPUT.RANDOM_FLIP": one_of("none", "horizontal", "vertical"),
    "INPUT.CROP.TYPE": one_of("relative_range", "relative", "absolute", "absolute_range"),
    "INPUT.CROP.SIZE": positive(),
    "INPUT.TEST_SIZE": positive(),
    # lists whose default is empty, so yacs' type check sees no element type
    "DATASETS.TRAIN": names("registered dataset names"),
    "DATASETS.TEST": names("registered dataset names"),
    "MODEL.FPN.IN_FEATURES": names("backbone feature names, e.g. res2"),
    "RESDET.DATA.CLASSES": names("class names"),
    "SOLVER.STEPS": whole(1, "iterations at which the learning rate drops"),
    # ---- the model ---------------------------------------------------------------------
    "MODEL.PIXEL_STD": positive("pixels are divided by it").listed(),
    "MODEL.BACKBONE.FREEZE_AT": between(0, 5, why="0 freezes nothing, 5 the whole trunk"),
    "MODEL.RESNETS.NUM_GROUPS": positive(),
    "MODEL.RESNETS.WIDTH_PER_GROUP": positive(),
    "MODEL.RESNETS.RES2_OUT_CHANNELS": positive(),
    "MODEL.RESNETS.STEM_OUT_CHANNELS": positive(),
    "MODEL.RESNETS.RES5_DILATION": Rule(lambda x: x in (1, 2), "1 or 2"),
    "MODEL.FPN.OUT_CHANNELS": positive(),
    "MODEL.FPN.FUSE_TYPE": one_of("sum", "avg"),
    "MODEL.ANCHOR_GENERATOR.SIZES": positive("anchor sizes are in pixels").listed(),
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": positive("ratios are height / width").listed(),
    "MODEL.ANCHOR_GENERATOR.OFFSET": between(0.0, 1.0, hi_open=True),
    "MODEL.RPN.IOU_THRESHOLDS": between(0.0, 1.0).listed(),
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": positive(_BATCH),
    "MODEL.RPN.POSITIVE_FRACTION": between(0.0, 1.0, lo_open=True),
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN": positive(),
    "MODEL.RPN.PRE_NMS_TOPK_TEST": positive(),
    "MODEL.RPN.POST_NMS_TOPK_TRAIN": positive(),
    "MODEL.RPN.POST_NMS_TOPK_TEST": positive(),
    "MODEL.RPN.NMS_THRESH": between(0.0, 1.0),
    "MODEL.RPN.LOSS_WEIGHT": at_least(0),
    "MODEL.ROI_HEADS.NUM_CLASSES": positive(),
    "MODEL.ROI_HEADS.IOU_THRESHOLDS": between(0.0, 1.0).listed(),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": positive(_BATCH),
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": between(0.0, 1.0, lo_open=True),
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST": between(0.0, 1.0, hi_open=True, why=_SCORE),
    "MODEL.ROI_HEADS.NMS_THRESH_TEST": between(0.0, 1.0),
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": positive(),
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO": at_least(0),
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE": one_of("ROIAlign", "ROIAlignV2", "ROIPool"),
    "MODEL.ROI_BOX_HEAD.NUM_FC": at_least(0),
    "MODEL.ROI_BOX_HEAD.FC_DIM": positive(),
    "MODEL.ROI_BOX_HEAD.NUM_CONV": at_least(0),
    "MODEL.ROI_BOX_HEAD.CONV_DIM": positive(),
    "MODEL.RESDET.SHORTCUT": one_of("A", "B", "C", kinds=("detection", "pretrain")),
    # ---- testing -----------------------------------------------------------------------
    "TEST.DETECTIONS_PER_IMAGE": Rule(
        lambda x: _num(x) and (x >= 1 or x == -1), "at least 1 (or -1: all)", "0 keeps none"
    ),
    "TEST.AUG.MIN_SIZES": positive(),
    "TEST.AUG.MAX_SIZE": positive(),
    "TEST.PRECISE_BN.NUM_ITER": positive(),
    "RESDET.EVAL.NUM_VIS": at_least(0, "the number of test images drawn (0: none)"),
    "RESDET.EVAL.VIS_THRESH": between(0.0, 1.0, hi_open=True, why=_SCORE),
    "RESDET.DATA.HOLDOUT_FRACTION": between(0.0, 1.0, hi_open=True),
    # ---- the solver and the data loader (Detectron2's builders for detection) ----------
    "SOLVER.MOMENTUM": between(0.0, 1.0, hi_open=True),
    "SOLVER.WEIGHT_DECAY": at_least(0),
    "SOLVER.WEIGHT_DECAY_NORM": at_least(0),
    "SOLVER.GAMMA": positive("the factor the learning rate is multiplied by at each step"),
    "SOLVER.BASE_LR_END": at_least(0),
    "SOLVER.WARMUP_FACTOR": between(0.0, 1.0),
    "SOLVER.NUM_DECAYS": positive(),
    "SOLVER.BIAS_LR_FACTOR": at_least(0),
    "SOLVER.REFERENCE_WORLD_SIZE": at_least(0),
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": positive(),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": one_of("value", "norm"),
    "SOLVER.WARMUP_METHOD": one_of("linear", "constant", why=_DET),
    # pretraining adds ReduceLROnPlateau (resdet.pretrain.engine); detection builds
    # Detectron2's schedulers only
    "SOLVER.LR_SCHEDULER_NAME": one_of(*_SCHEDULERS, why=_DET, kinds=_DETECTION),
    "DATALOADER.SAMPLER_TRAIN": one_of(
        "TrainingSampler",
        "RepeatFactorTrainingSampler",
        "RandomSubsetTrainingSampler",
        kinds=_DETECTION,
    ),
    "DATALOADER.REPEAT_THRESHOLD": at_least(0),
    # ---- pretraining -------------------------------------------------------------------
    "PRETRAIN.DATASET": one_of("imagenet", "cifar", why="the network family", kinds=_PRETRAIN),
    # resdet.pretrain.transforms.TRAIN_CROPS (tests/test_config_errors.py keeps them equal)
    "PRETRAIN.AUG.TRAIN_CROP": one_of("scale", "resized_crop", "pad", kinds=_PRETRAIN),
    "PRETRAIN.AUG.PAD": at_least(0),
    "PRETRAIN.AUG.SHORT_SIDE_RANGE": positive(),
    "PRETRAIN.AUG.RRC_SCALE": between(0.0, 1.0, lo_open=True),
    "PRETRAIN.AUG.PCA_LIGHTING": at_least(0),
    "PRETRAIN.AUG.MIXUP_ALPHA": at_least(0),
    "PRETRAIN.AUG.CUTMIX_ALPHA": at_least(0),
    "PRETRAIN.LABEL_SMOOTHING": between(0.0, 1.0, hi_open=True),
    "PRETRAIN.EMA.DECAY": between(0.0, 1.0),
    "PRETRAIN.PLATEAU.PATIENCE": at_least(0),
    "PRETRAIN.TEST.SCALES": positive(),
    "PRETRAIN.TEST.IMS_PER_BATCH": positive(),
    "PRETRAIN.LOG_PERIOD": positive(),
}
# keys whose values differ by kind: {kind: {key: rule}}
KIND_RULES = {
    "pretrain": {
        "SOLVER.LR_SCHEDULER_NAME": one_of(
            *_SCHEDULERS, "ReduceLROnPlateau", why="the ones pretraining builds", kinds=_PRETRAIN
        ),
    },
}
# the pipeline's own keys (its config has no MODEL/SOLVER)
PIPELINE_RULES = {
    "DATA.CROP_SIZE": positive("the side of the classification crops cut from the data"),
    "REPORT.NUM_IMAGES": at_least(0),
}


def _leaves(value):
    if isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


_ABSENT = object()


def check_values(cfg, kind):
    """Refuse a value no run can use (see the module docstring): ConfigError naming the
    key, the value and what it may be. ``kind``: the config's kind (resdet.config)."""
    if kind == "pipeline":
        rules = PIPELINE_RULES
    else:
        rules = {k: r for k, r in RULES.items() if kind in r.kinds}
        rules.update(KIND_RULES.get(kind, {}))
    for key, rule in rules.items():
        value = _get(cfg, key)
        if value is _ABSENT:
            continue
        if rule.nonempty and (
            not value or any(isinstance(v, (list, tuple)) and not v for v in value)
        ):
            raise ConfigError(f"{key} {value!r}: holds no value; give at least one")
        bad = next((v for v in _leaves(value) if not rule.ok(v)), _ABSENT)
        if bad is not _ABSENT:
            why = f"; {rule.why}" if rule.why else ""
            if isinstance(value, (list, tuple)):
                raise ConfigError(
                    f"{key} {value!r}: each value must be {rule.text} ({bad!r} is not){why}"
                )
            raise ConfigError(f"{key} {value!r}: must be {rule.text}{why}")
    return cfg

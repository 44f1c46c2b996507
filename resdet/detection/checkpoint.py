"""Weights and their YAML fragment; the checkpointer itself lives in resdet.checkpoint.

Converted weights (``resdet.convert``) come with a sibling YAML fragment that says what
the weights need (pixel mean/std, input format, depth, stride_in_1x1, shortcut, ...);
:func:`merge_weights_fragment` merges it into the config. ``ResdetCheckpointer`` (safe
loading, atomic and finite saving, exact resume) is shared with pretraining and is
re-exported here.
"""

import logging

from detectron2.config import CfgNode

from ..checkpoint import ResdetCheckpointer
from ..io import CheckpointError

__all__ = ["ResdetCheckpointer", "merge_weights_fragment", "explicit_keys", "load_detector_weights"]

logger = logging.getLogger(__name__)


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _lookup(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def explicit_keys(config_file="", opts=()):
    """Keys the user set: in the config file (with its _BASE_ chain) or on the command line."""
    keys = set(opts[0::2]) if opts else set()
    if config_file:
        keys.update(
            k for k, _ in _flatten(CfgNode.load_yaml_with_base(config_file, allow_unsafe=True))
        )
    return keys


def merge_weights_fragment(cfg, explicit=()):
    """Merge the YAML fragment beside ``cfg.MODEL.WEIGHTS`` (``resdet.convert.fragment_path``)
    into ``cfg``, in place.

    The fragment describes what the weights were trained with, so its values win: a
    detector normalising its input differently from its backbone's pretraining, or
    built to another depth, silently loses most of what the weights learned. Returns one
    warning per key in ``explicit`` whose configured value the fragment contradicts.
    """
    from ..convert import read_fragment

    found = read_fragment(cfg.MODEL.WEIGHTS)
    if found is None:
        return []
    path, frag = found
    warnings = []
    for key, value in _flatten(frag):
        try:
            current = _lookup(cfg, key)
        except (KeyError, TypeError):
            raise CheckpointError(f"{path}: unknown config key {key}") from None
        if key in explicit and not _same(current, value):
            warnings.append(
                f"{key}: the config sets {current!r} but the weights {cfg.MODEL.WEIGHTS} need "
                f"{value!r} ({path.name}); using {value!r} so the weights are used as trained"
            )
    try:
        cfg.merge_from_other_cfg(CfgNode(frag))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {str(e).splitlines()[0]}") from None
    logger.info(f"Merged {path} (what the weights were trained with) into the config")
    return warnings


def load_detector_weights(model, weights):
    """Load trained detector weights for inference or export, through the safe
    checkpointer. The file must fit the model exactly: a missing or mis-shaped parameter
    would predict from random weights, and an extra one means the weights are of another
    model (R101 weights hold all of R50's keys and more); Detectron2 only logs either."""

    class Checkpointer(ResdetCheckpointer):
        def _load_model(self, checkpoint):  # keep what did not fit, to refuse it below
            self.incompatible = super()._load_model(checkpoint)
            return self.incompatible

    checkpointer = Checkpointer(model)
    checkpointer.load(str(weights))
    incompatible = checkpointer.incompatible
    if incompatible.incorrect_shapes:
        key, got, want = incompatible.incorrect_shapes[0]
        raise CheckpointError(
            f"{weights}: {key} has shape {tuple(got)}, the model needs {tuple(want)} "
            f"({len(incompatible.incorrect_shapes)} such); use the config the weights "
            f"were trained with (their run's config.yaml)"
        )
    missing = list(incompatible.missing_keys)
    if missing:
        raise CheckpointError(
            f"{weights}: {len(missing)} model parameters are not in the file (first: "
            f"{missing[0]}); give detector weights that fit the config"
        )
    extra = list(incompatible.unexpected_keys)
    if extra:
        raise CheckpointError(
            f"{weights}: {len(extra)} entries are not in the model (first: {extra[0]}); "
            f"the weights are of another model: use the config they were trained with"
        )
    return model

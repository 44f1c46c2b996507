"""Detectron2 checkpoints that never execute code on load and never exist half-written.

Detectron2's DetectionCheckpointer reads .pkl with plain ``pickle.load`` and .pth with
torch.load with weights_only off, so a downloaded MODEL.WEIGHTS could run arbitrary
code, and it writes checkpoints in place, so a crash mid-save leaves a truncated file
that ``--resume`` then trips over. ResdetCheckpointer changes exactly those two things.

Converted weights (``resdet.convert``) come with a sibling YAML fragment that says what
the weights need (pixel mean/std, input format, depth, stride_in_1x1, shortcut, ...);
:func:`merge_weights_fragment` merges it into the config.
"""
import logging
import os

import yaml
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode

from .weights import check_loaded_weights
from ..io import CheckpointError, atomic_save, atomic_write, safe_pickle_load, safe_torch_load

__all__ = ["ResdetCheckpointer", "merge_weights_fragment", "explicit_keys"]

logger = logging.getLogger(__name__)


class ResdetCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with safe loading and atomic saving.

    Loading keeps Detectron2's conventions: a .pkl holding ``model`` and ``__author__``
    is a Detectron2 checkpoint, any other .pkl is a Caffe2/MSRA one (``blobs``) and is
    matched by name heuristics; numpy arrays become tensors in ``_load_model``.
    """

    # Checkpoints that are snapshots beside the run, not where it continues from:
    # ``--resume`` must keep following the periodic checkpoints.
    untagged = ("model_best",)

    def __init__(self, model, save_dir="", *, strict=True, **checkpointables):
        super().__init__(model, save_dir, **checkpointables)
        self.strict = strict  # RESDET.WEIGHTS.STRICT: see resdet.detection.weights
        self._loading = None

    def load(self, path, *args, **kwargs):
        self._loading = path
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        file_keys = list(checkpoint["model"].keys())
        model_keys = list(self.model.state_dict().keys())
        incompatible = super()._load_model(checkpoint)
        if checkpoint.get("matching_heuristics"):  # names were matched to the model's
            file_keys = [k for k in model_keys if k not in incompatible.missing_keys]
        for problem in check_loaded_weights(self._loading, model_keys, file_keys, incompatible,
                                            self.strict):
            self.logger.warning(f"RESDET.WEIGHTS.STRICT is False, loading anyway: {problem}")
        return incompatible

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            data = safe_pickle_load(filename)
            if "model" in data and "__author__" in data:
                self.logger.info("Reading a file from '{}'".format(data["__author__"]))
                return data
            if "blobs" in data:  # detection models have "blobs", ImageNet models do not
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):  # pycls
            data = safe_torch_load(filename)
            model_state = {k: v for k, v in data["model_state"].items()
                           if not k.endswith("num_batches_tracked")}
            return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}
        return super()._load_file(filename)  # .pth: through _torch_load below

    def _torch_load(self, f):
        return safe_torch_load(f)

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_save(data, path)
        if name not in self.untagged:
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        with atomic_write(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)


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
        keys.update(k for k, _ in _flatten(CfgNode.load_yaml_with_base(config_file, allow_unsafe=True)))
    return keys


def merge_weights_fragment(cfg, explicit=()):
    """Merge the YAML fragment beside ``cfg.MODEL.WEIGHTS`` (``resdet.convert.fragment_path``)
    into ``cfg``, in place.

    The fragment describes what the weights were trained with, so its values win: a
    detector normalising its input differently from its backbone's pretraining, or
    built to another depth, silently loses most of what the weights learned. Returns one
    warning per key in ``explicit`` whose configured value the fragment contradicts.
    """
    from ..convert import fragment_path

    path = fragment_path(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else None
    if path is None or not path.is_file():
        return []
    try:
        frag = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(frag, dict):
        raise CheckpointError(f"{path}: expected a mapping of config keys, got {type(frag).__name__}")
    warnings = []
    for key, value in _flatten(frag):
        try:
            current = _lookup(cfg, key)
        except (KeyError, TypeError):
            raise CheckpointError(f"{path}: unknown config key {key}") from None
        if key in explicit and not _same(current, value):
            warnings.append(
                f"{key}: the config sets {current!r} but the weights {cfg.MODEL.WEIGHTS} need "
                f"{value!r} ({path.name}); using {value!r} so the weights are used as trained")
    try:
        cfg.merge_from_other_cfg(CfgNode(frag))
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {str(e).splitlines()[0]}") from None
    logger.info(f"Merged {path} (what the weights were trained with) into the config")
    return warnings

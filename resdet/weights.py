"""The weights contract: what a checkpoint was trained with travels inside it.

Every checkpoint resdet writes carries a ``meta`` dict beside its ``model`` state dict
(as timm's ``pretrained_cfg``, ultralytics' ``train_args`` and mmdetection's ``meta``
do), written by :func:`detector_meta` / :func:`backbone_meta` / the pretraining trainer
and read by :func:`read_meta`, the one reader. It says:

- ``format``: "resdet-classifier" (pretraining), "resdet-backbone" (a conversion for
  Detectron2) or "resdet-detector" (a detection run);
- the preprocessing the weights need: input format (channel order), pixel mean and std;
- the trunk: depth, stride_in_1x1, shortcut option, plain or residual, res2 width;
- the layout (c4, fpn), the class names, the test resize, the YAML config of a detection
  run, and the versions of resdet, torch, torchvision and Detectron2 that wrote it.

:func:`config_settings` turns it into the config keys the weights need, which
:func:`merge_weights_settings` writes into a YAML or LazyConfig (the weights win: a
detector fed other inputs than its backbone learned on silently loses most of what it
learned). A YAML file beside the weights is never read, except for checkpoints that say
they are a resdet conversion made before the contract (``__author__: resdet``, no
``meta``): their ``OUT.yaml`` fragment still loads, with a warning to convert again.

Two named loading policies decide which parameters must come from the file
(:func:`check_loaded`):

- ``fine-tune``: every trunk parameter (the ResNet, and the res5 stage a C4 head keeps),
  with its shape, and no trunk parameter the model lacks; heads new to the task (FPN, RPN,
  box predictor) may be missing or reshaped. ``RESDET.WEIGHTS.STRICT False`` turns the
  error into Detectron2's warnings.
- ``inference``: every parameter of the model from the file with its shape, and nothing
  the model lacks (R101 weights hold all of R50's keys and more); for evaluation,
  prediction and export, which would otherwise score randomly initialised heads.
"""

import logging
import platform
from pathlib import Path

from .config import flat_items, get_resdet_cfg, is_lazy, merge_overrides, read_yaml
from .errors import CheckpointError, ConfigError
from .io import load_checkpoint_file
from .version import __version__

__all__ = [
    "META",
    "POLICIES",
    "versions",
    "detector_meta",
    "backbone_meta",
    "read_checkpoint",
    "read_meta",
    "config_of",
    "config_settings",
    "legacy_fragment",
    "merge_weights_settings",
    "check_loaded",
    "check_class_names",
    "is_trunk_key",
    "looks_like_classifier",
]

logger = logging.getLogger(__name__)

META = "meta"
POLICIES = ("fine-tune", "inference")
# parameters of the trunk: the ResNet (FPN: under backbone.bottom_up) and the C4 head's res5
_TRUNK = ("backbone.", "roi_heads.res5.")
# parts of backbone.* that a classifier never has: FPN's lateral/output convs, top block
_NOT_TRUNK = ("backbone.fpn_", "backbone.top_block.")
# first names of classifier state dicts: resdet/Detectron2 ResNet, torchvision, timm
_CLASSIFIER_ROOTS = ("stem.", "res2.", "res3.", "conv1.", "bn1.", "layer1.", "linear.", "fc.")
SHOWN = 4  # keys listed in an error
# meta settings -> the YAML config keys they are (the LazyConfig places: _LAZY_PLACES)
_KEYS = {
    "input_format": "INPUT.FORMAT",
    "pixel_mean": "MODEL.PIXEL_MEAN",
    "pixel_std": "MODEL.PIXEL_STD",
    "depth": "MODEL.RESNETS.DEPTH",
    "stride_in_1x1": "MODEL.RESNETS.STRIDE_IN_1X1",
    "res2_out_channels": "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "shortcut": "MODEL.RESDET.SHORTCUT",
    "residual": "MODEL.RESDET.RESIDUAL",
}


def versions() -> dict:
    """The versions a checkpoint or an export records."""
    import torch
    import torchvision

    # plain str: torch.__version__ is a TorchVersion, which weights_only loading refuses
    out = {
        "resdet": __version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }
    try:
        import detectron2

        out["detectron2"] = str(detectron2.__version__)
    except ImportError:  # pragma: no cover - resdet needs it; a standalone reader may not
        pass
    return out


# ---------------------------------------------------------------------------- writing
def config_of(cfg) -> dict:
    """The meta settings a YAML config gives its weights (preprocessing and trunk)."""
    r = cfg.MODEL.RESNETS
    return {
        "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
        "depth": int(r.DEPTH),
        "stride_in_1x1": bool(r.STRIDE_IN_1X1),
        "res2_out_channels": int(r.RES2_OUT_CHANNELS),
        "shortcut": cfg.MODEL.RESDET.SHORTCUT,
        "residual": bool(cfg.MODEL.RESDET.RESIDUAL),
    }


def detector_meta(setup) -> dict:
    """The meta of a detection run's checkpoints (``setup``: a resdet.engine Setup)."""
    cfg = setup.cfg
    meta = {
        "format": "resdet-detector",
        "config_system": "lazy" if setup.is_lazy else "yaml",
        # the classes this run trains on (its data's), not those of the weights it started from
        "class_names": setup.dataset_classes() or setup.class_names,
        "test_resize": setup.test_resize,
        "versions": versions(),
    }
    if setup.is_lazy:  # its Python config cannot travel: nothing in a checkpoint is executed
        model = cfg.model
        meta.update(
            input_format=model.get("input_format", "BGR"),
            pixel_mean=[float(v) for v in model.get("pixel_mean", [])],
            pixel_std=[float(v) for v in model.get("pixel_std", [])],
        )
    else:
        meta.update(config_of(cfg))
        meta["layout"] = "fpn" if "fpn" in cfg.MODEL.BACKBONE.NAME.lower() else "c4"
        meta["config"] = cfg.dump()
    return meta


def backbone_meta(source, layout: str) -> dict:
    """The meta of a converted backbone (``source``: a resdet.convert.Source)."""
    return {
        "format": "resdet-backbone",
        "layout": layout,
        "source": source.kind,
        "input_format": source.input_format,
        "pixel_mean": [float(v) for v in source.pixel_mean],
        "pixel_std": [float(v) for v in source.pixel_std],
        "depth": int(source.depth),
        "stride_in_1x1": bool(source.stride_in_1x1),
        "res2_out_channels": 64 if source.depth < 50 else 256,
        "shortcut": source.shortcut,
        "residual": bool(source.residual),
        "versions": versions(),
    }


# ---------------------------------------------------------------------------- reading
_cache = {}  # one file at a time: (path, mtime, size) -> its content, for the checkpointer


def _key(path):
    st = Path(path).stat()
    return (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)


def read_checkpoint(path, *, keep=False):
    """The content of a checkpoint file, loaded safely (resdet.io); a .pth read by
    :func:`read_meta` just before is not read again. ``keep``: leave it in that cache."""
    path = str(path)
    if not Path(path).is_file():
        raise CheckpointError(
            f"{path}: no such weights file" if not Path(path).is_dir() else f"{path}: is a folder"
        )
    key = _key(path)
    data = _cache.pop(key, None)
    if data is None:
        data = load_checkpoint_file(path)
    if keep:
        _cache.clear()
        _cache[key] = data
    return data


def read_meta(path):
    """The ``meta`` of a resdet checkpoint, or None for weights that carry none (a
    torchvision, timm, Detectron2 or MSRA file). A legacy resdet conversion (no meta, a
    fragment beside it) gives its fragment's settings with a warning."""
    if str(path).endswith(".pkl"):  # Detectron2/MSRA pickles carry no resdet meta
        return None
    data = read_checkpoint(path, keep=True)
    if not isinstance(data, dict):
        return None
    meta = data.get(META)
    if isinstance(meta, dict):
        return meta
    if data.get("__author__") == "resdet":
        return legacy_fragment(path)
    return None


def legacy_fragment(path):
    """Settings of a resdet conversion made before the contract, from its OUT.yaml."""
    fragment = Path(path).with_suffix(".yaml")
    if not fragment.is_file():
        return None
    flat = dict(flat_items(read_yaml(fragment)))
    merge_overrides(get_resdet_cfg(), flat, where=str(fragment))  # known keys, right types
    by_key = {key: name for name, key in _KEYS.items()}
    unknown = [k for k in flat if k not in by_key]
    if unknown:
        raise CheckpointError(f"{fragment}: {unknown[0]} is not a setting of weights")
    logger.warning(
        "%s: a resdet conversion from before weights carried their settings; reading them "
        "from %s. Convert the weights again (tools/convert_weights.py) to drop the file",
        path,
        fragment.name,
    )
    return dict({by_key[k]: v for k, v in flat.items()}, format="resdet-backbone", legacy=True)


def config_settings(meta) -> dict:
    """``{YAML key: value}`` the weights of ``meta`` need (a classifier's too)."""
    if not meta:
        return {}
    return {key: meta[name] for name, key in _KEYS.items() if meta.get(name) is not None}


# where each YAML key lives in a LazyConfig: on the model, on the training mapper, on a
# resdet trunk (build_resnet node)
_LAZY_PLACES = {
    "INPUT.FORMAT": [("model", "input_format"), ("mapper", "image_format")],
    "MODEL.PIXEL_MEAN": [("model", "pixel_mean")],
    "MODEL.PIXEL_STD": [("model", "pixel_std")],
    "MODEL.RESNETS.DEPTH": [("trunk", "depth")],
    "MODEL.RESNETS.STRIDE_IN_1X1": [("trunk", "stride_in_1x1")],
    "MODEL.RESDET.SHORTCUT": [("trunk", "shortcut")],
    "MODEL.RESDET.RESIDUAL": [("trunk", "residual")],
}


def _lazy_trunk(model):
    """Where the resdet trunk (a build_resnet node) sits in a LazyConfig model, or None."""
    for path in ("backbone", "backbone.bottom_up"):
        node = model
        for part in path.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        target = node.get("_target_") if hasattr(node, "get") else None
        name = getattr(target, "__name__", str(target).rsplit(".", 1)[-1])  # object or dotted
        if target is not None and name == "build_resnet":
            return "model." + path
    return None


def merge_weights_settings(cfg, settings, weights, explicit=()) -> list:
    """Write ``settings`` ({YAML key: value}, :func:`config_settings`) into ``cfg`` (a
    CfgNode or a LazyConfig), in place. Returns one warning per key in ``explicit`` (keys
    the user set) whose value the weights contradict; the weights' value is used."""
    if not settings:
        return []
    if is_lazy(cfg):
        return _merge_lazy(cfg, settings, weights)
    warnings = []
    for key, value in settings.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node[p]
        current = node[last]
        value = type(current)(value) if isinstance(current, (list, tuple)) else value
        if key in explicit and not _same(current, value):
            warnings.append(
                f"{key}: the config sets {current!r} but the weights {weights} need "
                f"{value!r}; using {value!r} so the weights are used as trained"
            )
        node[last] = value
    return warnings


def _merge_lazy(cfg, settings, weights):
    from omegaconf import OmegaConf

    places = {
        "model": "model",
        "mapper": "dataloader.train.mapper",
        "trunk": _lazy_trunk(cfg.model),
    }
    changes = []
    for key, value in settings.items():
        for where, attr in _LAZY_PLACES.get(key, []):
            node = OmegaConf.select(cfg, places[where]) if places[where] else None
            if node is None or (attr not in node and where != "model"):
                continue
            old = node.get(attr)
            if OmegaConf.is_config(old):
                old = OmegaConf.to_container(old)
            if not _same(old, value):
                node[attr] = value
                changes.append(
                    f"{places[where]}.{attr}: {old!r} -> {value!r} (what {weights} need)"
                )
    return changes


def _same(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ---------------------------------------------------------------------------- policies
def is_trunk_key(key: str) -> bool:
    return key.startswith(_TRUNK) and not key.startswith(_NOT_TRUNK)


def looks_like_classifier(keys) -> bool:
    """A state dict of a ResNet classifier (nothing of a detector in it)."""
    keys = list(keys)
    return (
        bool(keys)
        and not any(k.startswith(("backbone.", "roi_heads.", "proposal_generator.")) for k in keys)
        and any(k.startswith(_CLASSIFIER_ROOTS) for k in keys)
    )


def _layout(model_keys):
    return "fpn" if any(k.startswith("backbone.bottom_up.") for k in model_keys) else "c4"


def _listed(keys):
    return f"{', '.join(keys[:SHOWN])}{', ...' if len(keys) > SHOWN else ''}"


def check_loaded(path, model_keys, checkpoint_keys, incompatible, policy, strict=True):
    """Raise CheckpointError when the weights loaded from ``path`` break ``policy``.

    Args:
        model_keys: the model's state-dict keys; checkpoint_keys: the file's (after
            Detectron2's name matching); incompatible: fvcore's ``_IncompatibleKeys``.
        strict: False (RESDET.WEIGHTS.STRICT) returns the fine-tune problems for logging
            instead of raising; the inference policy is always strict.
    """
    if policy not in POLICIES:
        raise ConfigError(f"weights policy {policy!r}: choose one of {', '.join(POLICIES)}")
    model_keys, checkpoint_keys = list(model_keys), list(checkpoint_keys)
    if looks_like_classifier(checkpoint_keys) and any(is_trunk_key(k) for k in model_keys):
        layout = _layout(model_keys)
        out = str(path).rsplit(".", 1)[0] + f"_{layout}.pth"
        msg = (
            f"{path}: a classifier checkpoint, not converted for Detectron2 (no 'backbone.' "
            f"keys); run `python tools/convert_weights.py {path} {out} --layout {layout} "
            f"--verify` and use {out}"
        )
        if strict or policy == "inference":
            raise CheckpointError(msg)
        return [msg]
    if policy == "inference":
        _check_inference(path, incompatible)
        return []
    return _check_fine_tune(path, incompatible, strict)


def _check_inference(path, incompatible):
    if incompatible.incorrect_shapes:
        key, got, want = incompatible.incorrect_shapes[0]
        raise CheckpointError(
            f"{path}: {key} has shape {tuple(got)}, the model needs {tuple(want)} "
            f"({len(incompatible.incorrect_shapes)} such); use the config the weights "
            f"were trained with (their run's config.yaml)"
        )
    missing = list(incompatible.missing_keys)
    if missing:
        raise CheckpointError(
            f"{path}: {len(missing)} model parameters are not in the file (first: "
            f"{missing[0]}), so they would be random; give trained detector weights that fit "
            f"the config (a backbone for fine-tuning is not a detector to evaluate)"
        )
    extra = list(incompatible.unexpected_keys)
    if extra:
        raise CheckpointError(
            f"{path}: {len(extra)} entries are not in the model (first: {extra[0]}); "
            f"the weights are of another model: use the config they were trained with"
        )


def _check_fine_tune(path, incompatible, strict):
    problems = []
    shapes = [(k, ck, mk) for k, ck, mk in incompatible.incorrect_shapes if is_trunk_key(k)]
    if shapes:
        listed = ", ".join(
            f"{k} {tuple(ck)} in the file vs {tuple(mk)} in the model"
            for k, ck, mk in shapes[:SHOWN]
        )
        problems.append(
            f"{len(shapes)} trunk parameters have other shapes ({listed}"
            f"{', ...' if len(shapes) > SHOWN else ''})"
        )
    missing = [k for k in incompatible.missing_keys if is_trunk_key(k)]
    if missing:
        problems.append(f"{len(missing)} trunk parameters are missing ({_listed(missing)})")
    extra = [k for k in incompatible.unexpected_keys if is_trunk_key(k)]
    if extra:
        problems.append(
            f"{len(extra)} trunk parameters of the file are not in the model ({_listed(extra)})"
        )
    if problems and strict:
        raise CheckpointError(
            f"{path}: does not fit the model: {'; '.join(problems)}. Use the config the weights "
            "were made for (their settings are in the checkpoint; MODEL.RESNETS.DEPTH, "
            "RES2_OUT_CHANNELS and the layout must match), or set RESDET.WEIGHTS.STRICT False "
            "to load what fits"
        )
    return problems


def check_class_names(path, meta, class_names, what="the test set"):
    """Weights trained on other classes than ``class_names`` (matched exactly after
    stripping) cannot be scored or labelled by them: CheckpointError."""
    theirs = (meta or {}).get("class_names")
    if not theirs or not class_names:
        return
    a, b = [str(c).strip() for c in theirs], [str(c).strip() for c in class_names]
    if a != b:
        diff = next(
            (f"class {i}: {x!r} vs {y!r}" for i, (x, y) in enumerate(zip(a, b)) if x != y),
            f"{len(a)} vs {len(b)} classes",
        )
        raise CheckpointError(
            f"{path}: trained on the classes {a[:5]}{'...' if len(a) > 5 else ''}, which "
            f"differ from those of {what} ({diff}); evaluate on data of the same classes"
        )

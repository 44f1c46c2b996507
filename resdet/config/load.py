"""Loading configs with one-line errors: the one loader for YAML and LazyConfig alike.

:func:`load_config` turns what a user gives (a shipped name, a path, a CfgNode or a
LazyConfig, plus overrides as a list or a dict) into a config object; everything that
reads a config goes through it (resdet.engine.load, the model zoo, the pipeline).
What it adds to yacs and Detectron2's LazyConfig: an unknown key, a value of the wrong
type, a key written twice in one YAML mapping or a ``_BASE_`` cycle is one line naming the
file and the key (with the close keys it may have meant), in both config systems.
"""

import difflib
import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import yaml
from detectron2.config import CfgNode as CN

from ..errors import ConfigError, cwd_hint, one_line
from .files import config_kind, resolve_config_file
from .keys import DEFAULTS, add_resdet_config
from .values import check_values

__all__ = [
    "Config",
    "load_config",
    "read_yaml",
    "merge_config_file",
    "merge_config_dict",
    "merge_overrides",
    "override_pairs",
    "flat_items",
    "apply_lazy_overrides",
    "is_lazy",
    "kind_of",
    "check_solver",
    "check_weights_path",
    "check_values",
    "expand_user_paths",
    "PATH_KEYS",
]

BASE_KEY = "_BASE_"


class Config(NamedTuple):
    """A loaded config: ``cfg`` (an unfrozen CfgNode, or a LazyConfig DictConfig), its
    ``kind`` ("lazy", "detection", "pretrain", "pipeline") and its file (None when given
    as an object)."""

    cfg: object
    kind: str
    path: object = None


def is_lazy(cfg) -> bool:
    """Whether ``cfg`` is a LazyConfig (an omegaconf DictConfig) rather than a CfgNode."""
    from omegaconf import DictConfig

    return isinstance(cfg, DictConfig)


def kind_of(cfg) -> str:
    """The kind of a config object (see :class:`Config`)."""
    return "lazy" if is_lazy(cfg) else config_kind(cfg)


def load_config(config, overrides=None, *, kind=None) -> Config:
    """The config a user gave, with ``overrides`` applied and checked.

    ``config``: a shipped name (``coco_r101.yaml``), a path (YAML or LazyConfig ``.py``),
    a CfgNode (copied; resdet's keys added when missing) or a LazyConfig (copied).
    ``overrides``: ``KEY VALUE`` pairs or ``KEY=VALUE`` strings as a list, or a dict
    ``{KEY: VALUE}`` (see :func:`override_pairs`). ``kind``: the kind the caller needs;
    another kind is a one-line error."""
    import copy

    path = None
    if is_lazy(config):
        cfg = copy.deepcopy(config)
    elif isinstance(config, CN):
        cfg = config.clone()
        cfg.defrost()
        if "RESDET" not in cfg and config_kind(cfg) != "pipeline":
            add_resdet_config(cfg)
    elif config is None or (isinstance(config, str) and not config.strip()):
        raise ConfigError("no config given; give a config file or a shipped config name")
    elif not isinstance(config, (str, os.PathLike)):
        raise ConfigError(
            f"config: a file name, a CfgNode or a LazyConfig, not a {type(config).__name__}"
        )
    else:
        path = resolve_config_file(config)
        cfg = _load_lazy_file(path) if path.suffix == ".py" else _load_yaml_file(path)
    found = kind_of(cfg)
    if kind is not None and found != kind and not (kind == "detection" and found == "lazy"):
        raise ConfigError(
            f"{path or 'config'}: a {found} config, but a {kind} config is needed here"
        )
    where = "overrides" if path is None else f"overrides of {path.name}"
    if found == "lazy":
        apply_lazy_overrides(cfg, overrides, where)
    else:
        merge_overrides(cfg, overrides, where)
        check_values(cfg, found)
    expand_user_paths(cfg, found)
    return Config(cfg, found, path)


# keys that hold a path, per config kind: "~" in them is the user's home, as in a shell
PATH_KEYS = {
    "detection": (
        "MODEL.WEIGHTS",
        "OUTPUT_DIR",
        "RESDET.DATA.TRAIN",
        "RESDET.DATA.TRAIN_IMAGES",
        "RESDET.DATA.TEST",
        "RESDET.DATA.TEST_IMAGES",
    ),
    "pipeline": (
        "OUTPUT_DIR",
        "DATA.ROOT",
        "DATA.IMAGES",
        "DATA.TEST",
        "DATA.TEST_IMAGES",
        "PRETRAIN.CONFIG",
        "DETECT.CONFIG",
    ),
    "lazy": ("train.output_dir", "train.init_checkpoint"),
}
PATH_KEYS["pretrain"] = PATH_KEYS["detection"] + ("PRETRAIN.DATA.ROOT",)


def expand_user_paths(cfg, kind):
    """``~`` at the start of a path key is the home folder: a path in a YAML file or a
    quoted override reaches resdet unexpanded, and would otherwise be a folder named "~"
    in the working directory (an output written there) or a file not found."""
    for key in PATH_KEYS.get(kind, ()):
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node.get(part) if hasattr(node, "get") else None
        value = node.get(last) if hasattr(node, "get") else None
        if isinstance(value, str) and value.startswith("~"):
            node[last] = os.path.expanduser(value)
    return cfg


def _load_yaml_file(path):
    loaded = read_yaml(path)
    kind = config_kind(loaded)
    if kind == "lazy":  # the config.yaml a LazyConfig run saved (LazyConfig.save)
        return _lazy_from_yaml(loaded, path)
    return merge_config_dict(DEFAULTS[kind](), loaded, path)


def _lazy_from_yaml(loaded, path):
    """A LazyConfig from the YAML a LazyConfig run saved, as Detectron2's LazyConfig.load
    makes it, but from the safely read mapping (LazyConfig.load reads YAML with
    yaml.unsafe_load, which runs any Python a file names)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(loaded, flags={"allow_objects": True})
    if "model" not in cfg:
        raise ConfigError(f"{path}: a LazyConfig for resdet needs 'model' (see configs/lazy/)")
    return cfg


def _load_lazy_file(path):
    from detectron2.config import LazyConfig

    try:
        cfg = LazyConfig.load(str(path))
    except Exception as e:  # the user's own Python: a syntax error, a bad import, a typo
        raise ConfigError(
            f"{path}: cannot be loaded as a LazyConfig: {type(e).__name__}: {one_line(e)}"
        ) from None
    if "model" not in cfg:
        raise ConfigError(f"{path}: a LazyConfig for resdet needs 'model' (see configs/lazy/)")
    return cfg


# ---------------------------------------------------------------------------- YAML files
class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key written twice in one mapping (PyYAML keeps the
    last one without a word, so one of two settings a user wrote would be ignored), and
    reads the plain-data objects a saved LazyConfig holds (:data:`_PLAIN_OBJECTS`)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# Python objects LazyConfig.save writes as YAML tags that are plain data (a NamedTuple of
# numbers): the input_shape of Detectron2's heads. Any other Python tag is refused.
_PLAIN_OBJECTS = {
    "detectron2.layers.shape_spec.ShapeSpec": ("detectron2.layers", "ShapeSpec"),
}


def _construct_plain_object(loader, suffix, node):
    if suffix not in _PLAIN_OBJECTS:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"the Python object {suffix} is not plain data; resdet does not build it from a "
            f"config file (use the LazyConfig .py the run was started with)",
            node.start_mark,
        )
    import importlib

    module, name = _PLAIN_OBJECTS[suffix]
    fields = loader.construct_mapping(node, deep=True)
    return getattr(importlib.import_module(module), name)(**fields)


_UniqueKeyLoader.add_multi_constructor("tag:yaml.org,2002:python/object:", _construct_plain_object)


class _DuplicateKey(Exception):
    def __init__(self, key, first, second):
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


def read_yaml(path, _chain=()) -> dict:
    """A YAML config file as a dict with its ``_BASE_`` chain merged in (as yacs's
    ``load_yaml_with_base``, relative bases resolved beside the file), with one-line
    errors for a missing file or base, invalid YAML, a key written twice, a base cycle."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            loaded = yaml.load(f, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ConfigError(
            f"{path}: key {e.key} is written twice (lines {e.first} and {e.second}); "
            f"keep one of them"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or one_line(e)}"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (expected a YAML mapping of keys)") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: not a config file (expected a YAML mapping of keys)")
    base = loaded.pop(BASE_KEY, None)
    if base is None:
        return loaded
    if not isinstance(base, str):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name, got {base!r}")
    base_path = Path(os.path.expanduser(base))
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    chain = _chain + (path.resolve(),)
    if base_path.resolve() in chain:
        names = " -> ".join(p.name for p in chain + (base_path.resolve(),))
        raise ConfigError(f"{path}: {BASE_KEY} files form a cycle ({names}); break it")
    if not base_path.is_file():
        raise ConfigError(f"{path}: its {BASE_KEY} {base_path} does not exist")
    merged = read_yaml(base_path, chain)
    _merge_dicts(loaded, merged)
    return merged


def _merge_dicts(a, b):
    """Merge dict ``a`` into ``b`` in place, nested dicts key by key (yacs's rule)."""
    for k, v in a.items():
        if isinstance(v, dict) and isinstance(b.get(k), dict):
            _merge_dicts(v, b[k])
        else:
            b[k] = v


def merge_config_dict(cfg, loaded, path):
    """Merge a config mapping (read from ``path``, or recorded in weights) into ``cfg``,
    checked: its VERSION, every key known, every value of its key's type."""
    version = loaded.pop("VERSION", cfg.get("VERSION"))
    if "VERSION" in cfg and version != cfg.VERSION:
        raise ConfigError(
            f"{path}: VERSION {version} is not Detectron2's current config version "
            f"{cfg.VERSION}; update the file"
        )
    _merge_checked(cfg, loaded, str(path))
    return cfg


def merge_config_file(cfg, path):
    """``cfg.merge_from_file(path)`` (with its ``_BASE_`` chain), with one-line errors."""
    return merge_config_dict(cfg, read_yaml(path), path)


# ---------------------------------------------------------------------------- yacs keys
def _flat_keys(node, prefix=""):
    for k, v in node.items():
        if isinstance(v, dict):
            yield from _flat_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def _close_keys(keys, key, upper):
    """Keys a user may have meant: the same in other case, one the key is cut from, or a
    spelling likeness."""
    want = key.upper() if upper else key
    return (
        [k for k in keys if k == want]
        or [k for k in keys if k.startswith(want)][:3]
        or difflib.get_close_matches(want, keys, n=3, cutoff=0.75)
    )


def _unknown_key(keys, full_key, where, upper=True):
    close = _close_keys(list(keys), full_key, upper)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"{where}: unknown config key {full_key}{hint}")


_KIND = {
    bool: "true or false",
    int: "a whole number",
    float: "a number",
    str: "a string",
    list: "a list",
    tuple: "a list",
}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _element_error(value, default):
    """Why the elements of list ``value`` do not fit those of ``default`` (None if they
    do): a list of numbers takes numbers (ints and floats alike, as Detectron2's own
    configs mix them), a list of strings strings, nested lists likewise."""
    first = next(iter(default), None)
    if first is None:  # an empty default (DATASETS.TRAIN, FPN.IN_FEATURES) says nothing
        return None
    for x in value:
        if isinstance(first, (list, tuple)):
            if not isinstance(x, (list, tuple)):
                return f"a list of lists (like its default {default!r})"
            inner = _element_error(x, first)
            if inner:
                return inner
        elif _number(first) and not _number(x):
            return f"a list of numbers (like its default {default!r})"
        elif isinstance(first, (str, bool)) and type(x) is not type(first):
            kind = "strings" if isinstance(first, str) else "true or false values"
            return f"a list of {kind} (like its default {default!r})"
    return None


def _as_default_elements(value, default):
    """``value`` as the container type of ``default``, ints made floats in lists of floats."""
    first = next(iter(default), None)
    if isinstance(first, float):
        value = [float(x) if _number(x) else x for x in value]
    elif isinstance(first, (list, tuple)):
        value = [_as_default_elements(x, first) for x in value]
    return type(default)(value)


def _coerce(value, default, full_key, where):
    """``value`` as the type of ``default``: yacs's rules plus the casts a user expects
    (an int where a float is wanted, a whole float where an int is wanted), checked inside
    lists too; an empty YAML value (None) only where the default is None, as yacs."""
    if default is None or (type(value) is type(default) and not isinstance(value, (list, tuple))):
        return value
    if value is None:  # `MAX_ITER:` with nothing after it: YAML reads null
        return ConfigError(
            f"{where}: {full_key} has no value (an empty YAML entry is null); give "
            f"{_KIND.get(type(default), type(default).__name__)} like its default {default!r}"
        )
    if isinstance(default, float) and _number(value):
        return float(value)
    if (
        isinstance(default, int)
        and not isinstance(default, bool)
        and isinstance(value, float)
        and value.is_integer()
    ):
        return int(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        why = _element_error(value, default)
        if why:
            return ConfigError(f"{where}: {full_key} must be {why}, got {value!r}")
        return _as_default_elements(value, default)
    kind = _KIND.get(type(default), type(default).__name__)
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
                if isinstance(k, str) and "." in k and _has_key(node, k):
                    # yacs reads `SOLVER.BASE_LR: 0.01` in a file as one unknown key
                    group, _, rest = k.partition(".")
                    raise ConfigError(
                        f"{where}: {full} is written as one dotted key; a YAML config nests "
                        f"its keys: {group}: then {rest.replace('.', ': then ')}: on indented "
                        f"lines"
                    )
                if node.is_new_allowed():
                    node[k] = CN(v) if isinstance(v, dict) else v
                    continue
                while isinstance(v, dict) and v:  # name the whole key the user wrote
                    k, v = next(iter(v.items()))
                    full = f"{full}.{k}"
                raise _unknown_key(_flat_keys(cfg), full, where)
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


def _has_key(node, dotted) -> bool:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def override_pairs(overrides, *, lazy=False, where="overrides") -> list:
    """``(key, value)`` pairs of overrides given as a dict ``{KEY: VALUE}`` (nested dicts
    too, for YAML configs), a list of ``KEY=VALUE`` strings (Detectron2's
    lazyconfig_train_net), a list of ``(KEY, VALUE)`` tuples or, for YAML configs, a list
    of ``KEY VALUE`` pairs (its train_net). Values given as strings are parsed later, as
    each config system does."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        if lazy:
            return [(str(k), v) for k, v in overrides.items()]
        return [(k, v) for k, v in flat_items(overrides)]
    if isinstance(overrides, (str, bytes)):
        raise ConfigError(
            f"{where}: a list (['SOLVER.MAX_ITER', '100'] or ['train.max_iter=100']) or a "
            f"dict ({{'SOLVER.MAX_ITER': 100}}), not the string {overrides!r}"
        )
    items = list(overrides)
    # argparse gives everything after the first override to the overrides, flags included
    flag = next((o for o in items if isinstance(o, str) and o.startswith("--")), None)
    if flag is not None:
        raise ConfigError(
            f"{where}: {flag!r} is an option, not a config key; put it before the overrides "
            f"(options first, then KEY VALUE pairs)"
        )
    # [(KEY, VALUE), ...]: what dict(...).items() and Setup.overrides give
    if items and all(isinstance(o, tuple) and len(o) == 2 and isinstance(o[0], str) for o in items):
        return [(k, v) for k, v in items]
    if lazy or (items and isinstance(items[0], str) and "=" in items[0]):
        bad = next((o for o in items if not isinstance(o, str) or "=" not in o), None)
        if bad is not None:
            raise ConfigError(
                f"{where}: {bad!r} is not KEY=VALUE; "
                + (
                    "LazyConfig overrides are KEY=VALUE, e.g. train.max_iter=100"
                    if lazy
                    else "give all overrides as KEY=VALUE or all as KEY VALUE pairs"
                )
            )
        return [tuple(o.split("=", 1)) for o in items]
    if len(items) % 2:
        raise ConfigError(f"{where}: overrides are KEY VALUE pairs; {items[-1]!r} has no value")
    return [(str(k), v) for k, v in zip(items[0::2], items[1::2])]


def flat_items(d, prefix=""):
    """``(dotted key, value)`` of a nested mapping (an empty mapping is a value)."""
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            yield from flat_items(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def merge_overrides(cfg, overrides, where="command line"):
    """``cfg.merge_from_list`` for overrides in any form of :func:`override_pairs`, with
    one-line errors for an unknown key or a value of the wrong type."""
    updates = {}
    for key, value in override_pairs(overrides, where=where):
        node = updates
        *parents, last = str(key).split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: {key} is given twice, as a key and as a group")
        node[last] = value
    _merge_checked(cfg, updates, where)
    return cfg


# ---------------------------------------------------------------------------- LazyConfig
_ABSENT = object()


def _lazy_keys(node, prefix=""):
    """Every key of a LazyConfig (leaves and groups), dotted."""
    from omegaconf import DictConfig

    for k in node.keys():
        full = f"{prefix}{k}"
        yield full
        try:
            child = node._get_node(k)
        except Exception:  # noqa: BLE001 - a broken interpolation: the key still exists
            continue
        if isinstance(child, DictConfig):
            yield from _lazy_keys(child, full + ".")


def _accepts(target, name) -> bool:
    """Whether the callable of a LazyCall node takes the keyword ``name``."""
    from detectron2.utils.registry import locate

    if isinstance(target, str):
        try:
            target = locate(target)
        except Exception:  # noqa: BLE001 - cannot tell: let instantiate() say
            return True
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _check_lazy_key(cfg, key, where):
    from omegaconf import OmegaConf

    if (
        OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
        is not _ABSENT
    ):
        return
    parent_key, _, name = key.rpartition(".")
    parent = (
        OmegaConf.select(cfg, parent_key, default=None, throw_on_resolution_failure=False)
        if parent_key
        else cfg
    )
    # a keyword the LazyCall's callable takes but the config does not set yet is a valid key
    if OmegaConf.is_dict(parent) and "_target_" in parent and _accepts(parent._target_, name):
        return
    if parent_key and parent is None:
        missing = next(
            p
            for p in (".".join(key.split(".")[: i + 1]) for i in range(key.count(".")))
            if OmegaConf.select(cfg, p, default=None, throw_on_resolution_failure=False) is None
        )
        raise _unknown_key(_lazy_keys(cfg), missing, where, upper=False)
    raise _unknown_key(_lazy_keys(cfg), key, where, upper=False)


def apply_lazy_overrides(cfg, overrides, where="overrides"):
    """Detectron2's ``LazyConfig.apply_overrides`` (hydra's value syntax), for overrides in
    any form of :func:`override_pairs`, refusing a key the config does not have (hydra
    and omegaconf create it silently: ``train.max_iters=2`` would start a 90,000-iteration
    run) unless it is a keyword the callable of its LazyCall node takes."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    parser = OverridesParser.create()
    for key, value in override_pairs(overrides, lazy=True, where=where):
        _check_lazy_key(cfg, key, where)
        if isinstance(value, str):
            text = value
            try:
                value = parser.parse_overrides([f"{key}={text}"])[0].value()
            except Exception as e:  # noqa: BLE001 - hydra's grammar errors
                # its lexer stops at "~", non-ASCII letters and the like: quoting reads them
                raise ConfigError(
                    f"{where}: {key}={text}: not a value hydra's override grammar reads "
                    f"({one_line(e).split(':')[0]}); quote it: {key}='{text}'"
                ) from None
            if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
                # "a,b" is a multirun sweep in hydra, which a config cannot hold
                raise ConfigError(
                    f"{where}: {key}={text}: reads as a hydra sweep ({type(value).__name__}); "
                    f"give a list as {key}=[{text}] or a string as {key}='{text}'"
                )
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except Exception as e:  # noqa: BLE001 - omegaconf's type/structure errors
            raise ConfigError(f"{where}: {key}={value!r}: {one_line(e)}") from None
    return cfg


# ---------------------------------------------------------------------------- checks
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
    # Detectron2's schedulers assert this deep inside build_lr_scheduler
    if list(s.STEPS) != sorted(set(s.STEPS)):
        raise ConfigError(
            f"SOLVER.STEPS must be increasing iterations, got {list(s.STEPS)}; sort them"
        )
    if training and s.MAX_ITER in s.STEPS:  # fvcore's scheduler fails on it at build time
        raise ConfigError(
            f"SOLVER.STEPS {list(s.STEPS)}: a step at SOLVER.MAX_ITER {s.MAX_ITER} changes no "
            f"iteration; remove it or raise SOLVER.MAX_ITER"
        )
    if cfg.DATALOADER.NUM_WORKERS < -1:
        raise ConfigError(
            f"DATALOADER.NUM_WORKERS must be -1 (auto) or more, got {cfg.DATALOADER.NUM_WORKERS}"
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
        raise ConfigError(f"MODEL.WEIGHTS {path}: no such file{cwd_hint(path)}")
    return cfg

"""resdet's shipped configs, found the same way in a checkout and in an installed wheel.

The configs live in the repository's top-level ``configs/`` and ship inside the package
as ``resdet/configs`` (as Detectron2 ships ``detectron2/model_zoo/configs``): in a
checkout ``resdet/configs`` is a link to ``configs/``, in a wheel it holds the copies.
Names are paths under that folder with their suffix, e.g. ``coco_r101.yaml``,
``imagenet/r50.yaml`` or ``lazy/faster_rcnn_r101_c4.py``; the repository spelling
``configs/coco_r101.yaml`` is accepted too. ``_BASE_`` references are relative, so they
resolve inside whichever copy is used.
"""

import difflib
from pathlib import Path
from typing import List

from .errors import ConfigError

__all__ = [
    "configs_root",
    "list_configs",
    "get_config_file",
    "resolve_config_file",
    "config_kind",
    "get_config",
]

_SUFFIXES = (".yaml", ".py")
_PREFIX = "configs/"  # how the README and the pipeline configs spell a config's path


def configs_root() -> Path:
    """The folder of shipped configs (in a checkout: the top-level ``configs/`` itself)."""
    root = Path(__file__).resolve().parent / "configs"
    if not root.is_dir():
        raise ConfigError(
            f"{root}: resdet's configs folder is missing; reinstall resdet, or in "
            f"a checkout make resdet/configs a link to ../configs "
            f"(git config core.symlinks true)"
        )
    return root.resolve()


def list_configs() -> List[str]:
    """Every shipped config as a name for :func:`get_config_file`, sorted."""
    root = configs_root()
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix in _SUFFIXES and p.is_file() and "__pycache__" not in p.parts
    )


def get_config_file(name: str) -> Path:
    """Absolute path of the shipped config ``name`` (see :func:`list_configs`)."""
    key = str(name).replace("\\", "/")
    key = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
    names = list_configs()
    if key not in names:
        close = difflib.get_close_matches(key, names, n=5, cutoff=0.5)
        hint = (
            f"close names: {', '.join(close)}"
            if close
            else "resdet.model_zoo.list_configs() lists them"
        )
        raise ConfigError(f"'{name}' is not a shipped resdet config; {hint}")
    return configs_root() / key


def resolve_config_file(path_or_name) -> Path:
    """A config file the user gave: an existing file as it is, else a shipped config name
    (so ``configs/coco_r101.yaml`` works both in a checkout and from an installed wheel)."""
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path.resolve()
    if path.suffix not in _SUFFIXES:
        raise ConfigError(f"{path_or_name}: a config is a .yaml or .py file")
    try:
        return get_config_file(str(path_or_name))
    except ConfigError as e:
        raise ConfigError(f"{path_or_name}: no such file, and {e}") from None


def config_kind(path) -> str:
    """ "lazy" (a LazyConfig .py), "pipeline", "pretrain" or "detection" (YAML), read off
    the keys of the file and its ``_BASE_`` chain: a pipeline config names its DETECT
    stage, a pretraining config has the PRETRAIN node."""
    path = Path(path)
    if path.suffix == ".py":
        return "lazy"
    from detectron2.config import CfgNode

    try:
        keys = CfgNode.load_yaml_with_base(str(path), allow_unsafe=False) or {}
    except Exception as e:  # yaml errors, a missing _BASE_: one line naming the file
        raise ConfigError(f"{path}: cannot be read as a config: {str(e).splitlines()[0]}") from None
    if "DETECT" in keys:
        return "pipeline"
    return "pretrain" if "PRETRAIN" in keys else "detection"


def get_config(name):
    """The shipped config ``name`` ready to edit: for a YAML an unfrozen CfgNode with every
    key of its kind (:func:`resdet.get_resdet_cfg` for detection,
    :func:`resdet.pretrain.get_pretrain_cfg` for pretraining, the pipeline's own keys for
    ``pipeline/*``) merged with the file; for a ``.py`` its LazyConfig."""
    path = get_config_file(name)
    kind = config_kind(path)
    if kind == "lazy":
        from detectron2.config import LazyConfig

        return LazyConfig.load(str(path))
    if kind == "pipeline":
        from .pipeline import get_pipeline_cfg as defaults
    elif kind == "pretrain":
        from .pretrain.config import get_pretrain_cfg as defaults
    else:
        from .config import get_resdet_cfg as defaults
    cfg = defaults()
    try:
        cfg.merge_from_file(str(path))
    except KeyError as e:
        raise ConfigError(f"{path}: {str(e).strip(chr(39))}") from None
    return cfg

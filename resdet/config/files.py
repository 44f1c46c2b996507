"""Where config files are: resdet's shipped configs, found the same way in a checkout and
in an installed wheel, and what kind of config a file is.

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

from ..errors import ConfigError, cwd_hint

__all__ = [
    "configs_root",
    "list_configs",
    "shipped_config_file",
    "resolve_config_file",
    "config_kind",
    "KINDS",
]

_SUFFIXES = (".yaml", ".yml", ".py")
_PREFIX = "configs/"  # how the README and the pipeline configs spell a config's path
# what a config can be: a LazyConfig .py, or a YAML of one of three key sets
KINDS = ("lazy", "detection", "pretrain", "pipeline")


def configs_root() -> Path:
    """The folder of shipped configs (in a checkout: the top-level ``configs/`` itself)."""
    root = Path(__file__).resolve().parent.parent / "configs"
    if not root.is_dir():
        raise ConfigError(
            f"{root}: resdet's configs folder is missing; reinstall resdet, or in "
            f"a checkout make resdet/configs a link to ../configs "
            f"(git config core.symlinks true)"
        )
    return root.resolve()


def list_configs() -> List[str]:
    """Every shipped config as a name for :func:`shipped_config_file`, sorted."""
    root = configs_root()
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix in _SUFFIXES and p.is_file() and "__pycache__" not in p.parts
    )


def shipped_config_file(name) -> Path:
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
    if path.is_dir():
        raise ConfigError(f"{path_or_name}: is a folder; a config is a .yaml or .py file")
    if path.suffix not in _SUFFIXES:
        raise ConfigError(f"{path_or_name}: no such config file (a config is a .yaml or .py file)")
    try:
        return shipped_config_file(str(path_or_name))
    except ConfigError as e:
        raise ConfigError(f"{path_or_name}: no such file{cwd_hint(path)}, and {e}") from None


def config_kind(keys) -> str:
    """ "pipeline", "pretrain", "detection" or "lazy": which key set a YAML config (its
    top-level keys, ``_BASE_`` chain merged) belongs to. A pipeline config names its DETECT
    stage, a pretraining config has the PRETRAIN node, a LazyConfig saved as YAML (the
    config.yaml of a LazyConfig run) has a lower-case ``model``."""
    if "model" in keys and "MODEL" not in keys:
        return "lazy"
    if "DETECT" in keys:
        return "pipeline"
    return "pretrain" if "PRETRAIN" in keys else "detection"

"""resdet's shipped configs, as Detectron2's ``model_zoo`` offers its own.

    from resdet import model_zoo
    model_zoo.list_configs()                        # ['Base-RCNN-C4.yaml', ..., 'lazy/...py']
    path = model_zoo.get_config_file("coco_r101.yaml")   # a str, as Detectron2's
    cfg = model_zoo.get_config("coco_r101.yaml")     # a CfgNode (or a LazyConfig for .py)

Names are paths under the shipped configs folder (``coco_r101.yaml``,
``imagenet/r50.yaml``, ``lazy/faster_rcnn_r101_c4.py``); ``configs/...`` works too.
"""

from .config.files import list_configs, shipped_config_file
from .config.load import load_config

__all__ = ["list_configs", "get_config_file", "get_config"]


def get_config_file(name) -> str:
    """The path of the shipped config ``name`` as a ``str``, like Detectron2's
    ``model_zoo.get_config_file`` (so ``LazyConfig.load(get_config_file(name))`` works)."""
    return str(shipped_config_file(name))


def get_config(name, overrides=None):
    """The shipped config ``name`` ready to edit: an unfrozen CfgNode with every key of its
    kind (detection, pretraining or pipeline) merged with the file, or for a ``.py`` its
    LazyConfig; ``overrides`` as :func:`resdet.config.load_config` takes them."""
    return load_config(get_config_file(name), overrides).cfg

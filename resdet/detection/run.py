"""Detection runs as one call: datasets given as paths, the config loaded and checked once,
then the run on every process of the launch (``resdet.train_detector`` and
``resdet.evaluate_detector`` delegate here; so do tools/train_det.py and the pipeline).

Datasets (``train``/``test``), one of:

- a registered Detectron2 dataset name (``coco_2017_val``, ``voc_2007_test``, ...);
- a VOC-layout folder (every annotated image), or ``{"voc": folder, "split": "train"}``
  (an ImageSets/Main split), or ``{"voc": folder, "holdout": 0.2}`` (a deterministic
  held-out test share: ``train`` gets the rest, ``test`` (when not given) the held-out part);
- a COCO JSON with its image folder: ``("file.json", "images/")`` or
  ``{"json": "file.json", "images": "images/"}``.
"""

import json
import os
from pathlib import Path

from ..config import get_resdet_cfg, is_lazy, merge_overrides, override_pairs
from ..data import register_user_datasets  # importing resdet.data registers the standard names
from ..engine import launch, load
from ..errors import ConfigError
from .train import train_net

__all__ = ["train_detector", "evaluate_detector", "register_datasets", "dataset_overrides"]


def _dataset(spec, part):
    """(RESDET.DATA overrides, dataset name) for a dataset given as documented above."""
    from detectron2.data import DatasetCatalog

    if spec is None:
        return {}, None
    key, name = f"RESDET.DATA.{part}", f"resdet_{part.lower()}"
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise ConfigError(
                f"{part.lower()} {spec!r}: a COCO dataset is (json_file, image_folder)"
            )
        spec = {"json": spec[0], "images": spec[1]}
    if isinstance(spec, dict):
        if "json" in spec:
            return {key: str(spec["json"]), f"{key}_IMAGES": str(spec.get("images", ""))}, name
        if "voc" in spec:
            opts = {key: str(spec["voc"]), f"{key}_SPLIT": str(spec.get("split") or "")}
            if spec.get("holdout"):
                opts["RESDET.DATA.HOLDOUT_FRACTION"] = float(spec["holdout"])
            return opts, name
        raise ConfigError(f"{part.lower()} {spec!r}: a dict needs 'json' (+ 'images') or 'voc'")
    spec = str(spec)
    if spec in DatasetCatalog.list():
        return {}, spec
    if spec.endswith(".json"):
        raise ConfigError(f'{spec}: a COCO file needs its image folder: give ("{spec}", "images/")')
    if os.path.isdir(spec):
        return {key: spec}, name
    raise ConfigError(
        f"{spec}: neither a registered dataset name, a VOC folder nor a COCO (json, images) pair"
    )


def dataset_overrides(train=None, test=None) -> dict:
    """The config overrides (YAML keys) that make a config train/test on these datasets."""
    train_opts, train_name = _dataset(train, "TRAIN")
    test_opts, test_name = _dataset(test, "TEST")
    if test is None and "RESDET.DATA.HOLDOUT_FRACTION" in train_opts:
        test_name = "resdet_test"  # the held-out part of the training folder
    opts = {**train_opts, **test_opts}
    if train_name:
        opts["DATASETS.TRAIN"] = (train_name,)
    if test_name:
        opts["DATASETS.TEST"] = (test_name,)
    elif train_name:  # the config's own test set has other classes than the given data
        opts["DATASETS.TEST"] = ()
    return opts


def register_datasets(train=None, test=None):
    """Register datasets given as in this module's docstring with Detectron2; returns
    their names ``(train, test)`` (None where not given): registered names stay as they
    are, the others become "resdet_train"/"resdet_test"."""
    cfg = merge_overrides(get_resdet_cfg(), dataset_overrides(train, test))
    register_user_datasets(cfg)
    return (
        cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None,
        cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None,
    )


def _is_lazy_config(config) -> bool:
    return is_lazy(config) or str(config).endswith(".py")


def _run(config, weights, overrides, output_dir, eval_only, resume, overwrite, dist):
    """Load and check the config here, once, then run it on every process of ``dist``;
    the results (read back from metrics.json when several processes ran)."""
    setup = load(
        config, weights, overrides, output_dir, kind="detection", datasets=True, eval_only=eval_only
    )
    out = setup.output_dir
    # each process loads the config again: a LazyConfig object goes as itself
    args = (config, weights, overrides, output_dir, eval_only, resume, overwrite)
    result = launch(train_net, args, **dist)
    if result is not None:
        return result
    path = Path(out) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _user_overrides(config, overrides, data):
    """The user's overrides with the dataset ones first (the user's win), in the config
    system's form."""
    if not data:
        return overrides
    if _is_lazy_config(config):
        raise ConfigError(
            f"{config}: a LazyConfig names its datasets (dataloader.train/test); set them "
            f"there or with KEY=VALUE overrides, not train=/test="
        )
    return {**data, **dict(override_pairs(overrides))}


def train_detector(
    config,
    *,
    weights=None,
    train=None,
    test=None,
    output_dir=None,
    resume=False,
    overwrite=False,
    overrides=None,
    num_gpus=1,
    num_machines=1,
    machine_rank=0,
    dist_url="auto",
) -> dict:
    """Fine-tune Faster R-CNN (tools/train_det.py); the final evaluation as in
    OUTPUT_DIR/metrics.json (``{"bbox": {"AP": ..., ...}}``; {} without a test set)."""
    data = dataset_overrides(train, test) if (train is not None or test is not None) else {}
    dist = dict(
        num_gpus=num_gpus, num_machines=num_machines, machine_rank=machine_rank, dist_url=dist_url
    )
    overrides = _user_overrides(config, overrides, data)
    return _run(config, weights, overrides, output_dir, False, resume, overwrite, dist)


def evaluate_detector(
    config,
    weights=None,
    *,
    test=None,
    output_dir=None,
    resume=False,
    overrides=None,
    num_gpus=1,
    num_machines=1,
    machine_rank=0,
    dist_url="auto",
) -> dict:
    """Evaluate detector ``weights`` on ``test`` (default: the config's test set), as
    ``tools/train_det.py --eval-only``: every parameter must come from the weights
    (resdet.weights' inference policy). What OUTPUT_DIR/metrics.json holds."""
    data = {}
    if test is not None:  # the classes come from the test set, not the config's training set
        data = dict(dataset_overrides(None, test), **{"DATASETS.TRAIN": ()})
    dist = dict(
        num_gpus=num_gpus, num_machines=num_machines, machine_rank=machine_rank, dist_url=dist_url
    )
    overrides = _user_overrides(config, overrides, data)
    return _run(config, weights, overrides, output_dir, True, resume, False, dist)

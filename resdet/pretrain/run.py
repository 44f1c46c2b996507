"""Pretraining as one call (``resdet.pretrain``, tools/pretrain_imagenet.py): the config
loaded and checked once, then the run on every process of the launch."""

import json

from ..config import override_pairs
from ..engine import launch, load
from .data import load_splits
from .engine import check_cfg, evaluate_checkpoint, train

__all__ = ["pretrain"]


def _overrides(data, overrides):
    extra = {"PRETRAIN.DATA.ROOT": str(data)} if data is not None else {}
    return {**extra, **dict(override_pairs(overrides))}


def pretrain(
    config,
    *,
    data=None,
    output_dir=None,
    resume=False,
    overwrite=False,
    overrides=None,
    eval_only=False,
    num_gpus=1,
    num_machines=1,
    machine_rank=0,
    dist_url="auto",
) -> dict:
    """Pretrain a resdet classifier (tools/pretrain_imagenet.py): ``data`` is the
    class-folder root (PRETRAIN.DATA.ROOT). Returns the final metrics (``top1``, ``top5``,
    ...; with ``eval_only`` the evaluation of MODEL.WEIGHTS or OUTPUT_DIR/model_final.pth).
    Several processes (``num_gpus``) use gloo on a CPU; their result is what the run
    folder's metrics.json holds (``top1``, ``top5``, ``modes``)."""
    overrides = _overrides(data, overrides)
    setup = load(config, None, overrides, output_dir, kind="pretrain")
    check_cfg(setup.cfg)  # bad values and a bad dataset fail here, once, before any process
    load_splits(setup.cfg)
    args = (config, overrides, output_dir, resume, overwrite, eval_only)
    result = launch(
        _worker,
        args,
        num_gpus=num_gpus,
        num_machines=num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
    )
    if result is None:
        path = setup.output_dir / "metrics.json"
        result = json.loads(path.read_text()) if path.is_file() else {}
    return result


def _worker(config, overrides, output_dir, resume, overwrite, eval_only):
    # each process loads the config itself (a spawned process gets the arguments, not
    # the parent's Setup); train/evaluate_checkpoint run in setup.run, the run folder
    setup = load(config, None, overrides, output_dir, kind="pretrain")
    if eval_only:
        return evaluate_checkpoint(setup)
    return train(setup, resume=resume, overwrite=overwrite)

"""ImageNet / CIFAR pretraining of the resdet ResNet classifier (paper and modern recipes).

Command line::

    python tools/pretrain_imagenet.py --config configs/imagenet/r50.yaml --data DIR \\
        [--output DIR] [--resume] [--eval-only] [--num-gpus N] [KEY VALUE ...]

Python API (what the degradation study and other scripts reuse)::

    from resdet.pretrain import get_pretrain_cfg, train
    cfg = get_pretrain_cfg()
    cfg.merge_from_file("configs/cifar/plain20.yaml")
    cfg.merge_from_list(["PRETRAIN.DATA.ROOT", "../shared/data/cifar10-mini",
                         "SOLVER.MAX_ITER", "2000", "TEST.EVAL_PERIOD", "100",
                         "OUTPUT_DIR", "out/p20"])
    metrics = train(cfg)            # {"top1", "top5", "eval": {mode: {...}}, "bad_images", ...}

- ``train(cfg, resume=False, overwrite=False) -> dict``: trains in OUTPUT_DIR as a run folder
  (resdet.run_folder), evaluates, writes ``model_final.pth`` (``{"model", "meta"}``, the
  classifier handed to resdet.convert), ``metrics.json`` (the evaluation, as in every run
  folder: ``{"top1", "top5", "modes"}``, fractions), ``train_log.json`` (Detectron2's
  one-JSON-per-line training log: ``total_loss``, ``lr``, ``epoch``, ``images_per_s``,
  ``data/bad_images``, Detectron2's timings; at every TEST.EVAL_PERIOD ``train/top1_err``
  (training batches since the previous evaluation), ``val/top1``, ``val/top5``,
  ``val/top1_err``; a last line with ``final/<mode>/top1|top5``), TensorBoard events,
  ``curves.png``, and ``model_<iter>.pth`` training checkpoints (Detectron2's names: the
  iteration that had just finished). The console shows Detectron2's progress lines.
- ``PretrainTrainer(cfg_or_setup, run=None, resume=False)``: Detectron2's SimpleTrainer
  and hooks (resdet.engine.train) on the classifier, with access to ``.model``, ``.ema``,
  ``.classes``, ``.trainer``; ``.train()`` runs it, ``.run_step()`` one step. A time
  budget is SOLVER.MAX_ITER.
- ``evaluate_checkpoint(cfg, weights=None)``: 1-crop / 10-crop / multi-scale results
  (OUTPUT_DIR/metrics.json).
- ``evaluate(model, loader, mode)``, ``predict``, ``build_test_loader``: evaluation pieces.
- ``load_splits(cfg)``: checks a class-folder dataset, ``(classes, train, val)`` samples.
- ``plot_pretrain_curves(train_log_json, png)``: the loss / top-1 error figure of a run.

Distributed: ``--num-gpus N`` (Detectron2's ``launch``; gloo on CPU, NCCL on CUDA) or
several machines with ``--num-machines/--machine-rank/--dist-url``. SOLVER.IMS_PER_BATCH
is the total batch over all processes, as in Detectron2.
"""

import sys as _sys  # noqa: E402
import types as _types  # noqa: E402

from ..config import add_pretrain_config, get_pretrain_cfg  # noqa: F401
from . import run  # noqa: E402  (the call below)
from .data import load_splits  # noqa: F401
from .engine import (  # noqa: F401
    PretrainTrainer,
    build_classifier,
    classifier_meta,
    evaluate_checkpoint,
    plot_pretrain_curves,
    train,
)
from .evaluate import build_test_loader, evaluate, evaluate_modes, predict  # noqa: F401


class _CallablePackage(_types.ModuleType):
    """``resdet.pretrain(config, data=..., output_dir=...)`` is
    :func:`resdet.pretrain.run.pretrain`: the API's name is this package's, so the package
    itself is the call."""

    def __call__(self, config, **kwargs):
        return run.pretrain(config, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage

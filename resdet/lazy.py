"""resdet in Detectron2's LazyConfig world: config nodes for its trunk and C4 head, and
the train/eval loop of Detectron2's ``tools/lazyconfig_train_net.py`` with resdet's rules.

Putting resdet's trunk into any Detectron2 zoo LazyConfig is one line::

    from detectron2 import model_zoo
    from resdet.lazy import resdet_bottom_up

    cfg = model_zoo.get_config("new_baselines/mask_rcnn_R_50_FPN_100ep_LSJ.py")
    cfg.model.backbone.bottom_up = resdet_bottom_up(50, norm="SyncBN", freeze_at=0)

Weights converted with ``--layout fpn`` then load into ``backbone.bottom_up``. The zoo
configs assume BGR Caffe2 inputs; :func:`merge_weights_fragment` (which :func:`train_lazy`
calls) sets the input format and pixel statistics the converted weights need.
resdet's own Faster R-CNN LazyConfigs are ``configs/lazy/*.py``
(``resdet.model_zoo.get_config("lazy/faster_rcnn_r101_c4.py")``).
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Sequence

import torch
from detectron2.config import LazyCall as L
from torch import nn

from .errors import ConfigError
from .modeling.resnet import build_resnet, make_stages, stage_specs

__all__ = [
    "resdet_bottom_up",
    "resdet_res5",
    "build_res5",
    "merge_weights_fragment",
    "LazyRun",
    "load_lazy_config",
    "train_lazy",
]

logger = logging.getLogger(__name__)

TRUNK_FEATURES = ("res2", "res3", "res4", "res5")


def resdet_bottom_up(
    depth: int = 50,
    *,
    out_features: Sequence[str] = TRUNK_FEATURES,
    norm="FrozenBN",
    freeze_at: int = 2,
    stride_in_1x1: bool = False,
    shortcut: str = "B",
    residual: bool = True,
    **kwargs,
):
    """resdet's ResNet trunk (:func:`resdet.modeling.build_resnet` without classifier) as
    a LazyCall node: ``model.backbone.bottom_up`` of an FPN config, ``model.backbone`` of a
    C4 one (``out_features=["res4"]``). Other keyword arguments go to ``build_resnet``."""
    return L(build_resnet)(
        depth=depth,
        num_classes=None,
        out_features=list(out_features),
        norm=norm,
        freeze_at=freeze_at,
        stride_in_1x1=stride_in_1x1,
        shortcut=shortcut,
        residual=residual,
        **kwargs,
    )


def build_res5(
    depth: int,
    *,
    norm="FrozenBN",
    shortcut: str = "B",
    residual: bool = True,
    stride_in_1x1: bool = False,
    zero_init_residual: bool = False,
    stem_out_channels: int = 64,
    res2_out_channels=None,
    num_groups: int = 1,
    width_per_group: int = 64,
) -> nn.Sequential:
    """The C4 model's per-RoI head: resdet's res5 stage of ``depth``, as
    :class:`resdet.modeling.ResdetRes5ROIHeads` builds it from a yacs config (no
    dilation: in the head res5 always subsamples the 14x14 RoI features)."""
    spec = stage_specs(
        depth,
        stem_out_channels=stem_out_channels,
        res2_out_channels=res2_out_channels,
        num_groups=num_groups,
        width_per_group=width_per_group,
    )[3]
    (blocks,) = make_stages(
        [spec],
        norm=norm,
        shortcut=shortcut,
        residual=residual,
        stride_in_1x1=stride_in_1x1,
        zero_init_residual=zero_init_residual,
        num_groups=num_groups,
    )
    return nn.Sequential(*blocks)


def resdet_res5(depth=50, **kwargs):
    """:func:`build_res5` as a LazyCall node, for ``model.roi_heads.res5`` of a C4 config."""
    return L(build_res5)(depth=depth, **kwargs)


# where each key of a converted checkpoint's YAML fragment (resdet.convert) lives in a
# LazyConfig: on the model, on the training mapper, on a resdet trunk
_FRAGMENT_KEYS = {
    "INPUT.FORMAT": [("model", "input_format"), ("mapper", "image_format")],
    "MODEL.PIXEL_MEAN": [("model", "pixel_mean")],
    "MODEL.PIXEL_STD": [("model", "pixel_std")],
    "MODEL.RESNETS.DEPTH": [("trunk", "depth")],
    "MODEL.RESNETS.STRIDE_IN_1X1": [("trunk", "stride_in_1x1")],
    "MODEL.RESDET.SHORTCUT": [("trunk", "shortcut")],
    "MODEL.RESDET.RESIDUAL": [("trunk", "residual")],
}


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _trunk_path(model):
    """Where the resdet trunk (a build_resnet node) sits in a model config, or None."""
    for path in ("backbone", "backbone.bottom_up"):
        node = model
        for part in path.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        target = node.get("_target_") if hasattr(node, "get") else None
        name = getattr(target, "__name__", str(target).rsplit(".", 1)[-1])  # object or dotted
        if target is not None and name == "build_resnet":
            return "model." + path
    return None


def merge_weights_fragment(cfg) -> List[str]:
    """Give a LazyConfig what the converted weights at ``train.init_checkpoint`` need,
    from the YAML fragment beside them: input format, pixel mean/std and, for a resdet
    trunk, depth, stride_in_1x1, shortcut and residual. In place. As on the YAML path
    (:func:`resdet.detection.merge_weights_fragment`) the weights win: a detector fed
    other inputs than its backbone learned on silently loses most of what it learned.
    Returns one line per value changed."""
    from omegaconf import OmegaConf

    from .convert import read_fragment

    found = read_fragment(cfg.train.get("init_checkpoint") or "")
    if found is None:
        return []
    path, frag = found
    places = {
        "model": "model",
        "mapper": "dataloader.train.mapper",
        "trunk": _trunk_path(cfg.model),
    }
    changes = []
    for key, value in _flatten(frag):
        for where, attr in _FRAGMENT_KEYS.get(key, []):
            node = OmegaConf.select(cfg, places[where]) if places[where] else None
            if node is None or (attr not in node and where != "model"):
                continue
            old = node.get(attr)
            if OmegaConf.is_config(old):
                old = OmegaConf.to_container(old)
            if old != value:
                node[attr] = value
                changes.append(
                    f"{places[where]}.{attr}: {old!r} -> {value!r} ({key} of {path.name})"
                )
    return changes


@dataclass(frozen=True)
class LazyRun:
    """What a LazyConfig run was asked to do (logged and used by Detectron2's default_setup,
    which reads ``config_file`` and ``eval_only``)."""

    config_file: str
    overrides: List[str] = field(default_factory=list)
    resume: bool = False
    eval_only: bool = False


def load_lazy_config(config_file, overrides=(), output_dir=None):
    """A LazyConfig .py (a path or a shipped name) with KEY=VALUE ``overrides``; returns
    (path, cfg, notes on what was changed for this machine). Errors are one line."""
    from detectron2.config import LazyConfig

    from .model_zoo import resolve_config_file

    path = resolve_config_file(config_file)
    if path.suffix != ".py":
        raise ConfigError(
            f"{config_file}: a LazyConfig is a .py file; YAML configs go to resdet.detection"
        )
    cfg = LazyConfig.load(str(path))
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(
            f"override '{bad[0]}': LazyConfig overrides are KEY=VALUE, e.g. train.max_iter=100"
        )
    try:
        cfg = LazyConfig.apply_overrides(cfg, list(overrides))
    except Exception as e:  # omegaconf/hydra errors: one line naming the override
        raise ConfigError(
            f"{path.name}: overrides {list(overrides)}: {str(e).splitlines()[0]}"
        ) from None
    for key in ("model", "train"):
        if key not in cfg:
            raise ConfigError(f"{path}: a LazyConfig for resdet needs '{key}' (see configs/lazy/)")
    if output_dir is not None:
        cfg.train.output_dir = str(output_dir)
    notes = []
    if str(cfg.train.get("device", "cpu")).startswith("cuda") and not torch.cuda.is_available():
        cfg.train.device = "cpu"
        notes.append("CUDA is not available: train.device set to cpu")
    if cfg.train.get("amp", {}).get("enabled", False) and cfg.train.device == "cpu":
        cfg.train.amp.enabled = False
        notes.append("train.amp.enabled set to False: mixed precision needs CUDA")
    return path, cfg, notes


def _test(cfg, model):
    """Detectron2's do_test, writing resdet's metrics.json beside the run."""
    from detectron2.config import instantiate
    from detectron2.evaluation import inference_on_dataset, print_csv_format
    from detectron2.utils import comm

    from .evaluation import write_metrics

    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process():
        print_csv_format(results)
        write_metrics(results, Path(cfg.train.output_dir) / "metrics.json")
    return results


def _train_loader(cfg):
    """``cfg.dataloader.train`` as a resumable loader when it is Detectron2's
    build_detection_train_loader with its default sampler, else as the config builds it."""
    from detectron2.config import instantiate

    from .detection.data_loader import resumable_loader

    dl = cfg.dataloader.train
    target = dl.get("_target_")
    name = target if isinstance(target, str) else getattr(target, "__qualname__", "")
    if not str(name).endswith("build_detection_train_loader") or dl.get("sampler") is not None:
        logger.warning(
            "dataloader.train is not Detectron2's default training loader: the data order "
            "of a resumed run will differ from an uninterrupted one"
        )
        return instantiate(dl)
    return resumable_loader(
        instantiate(dl.dataset),
        instantiate(dl.mapper),
        dl.total_batch_size,
        seed=cfg.train.get("seed", -1),
        num_workers=dl.get("num_workers", 0),
        aspect_ratio_grouping=dl.get("aspect_ratio_grouping", True),
    )


def train_lazy(
    config_file,
    overrides: Sequence[str] = (),
    *,
    resume: bool = False,
    eval_only: bool = False,
    output_dir=None,
) -> dict:
    """Train (or with ``eval_only`` evaluate) a LazyConfig model as Detectron2's
    tools/lazyconfig_train_net.py does, with ``KEY=VALUE`` ``overrides``.

    resdet's differences: the converted weights' YAML fragment is merged
    (:func:`merge_weights_fragment`), checkpoints load safely and save atomically
    (:class:`resdet.detection.ResdetCheckpointer`), the training log is ``train_log.json``
    and evaluations land in ``metrics.json`` (as for YAML configs), ``--eval-only`` folds
    frozen BN first, a run without CUDA goes to the CPU. ``config_file`` is a path or a
    shipped name (``lazy/faster_rcnn_r101_c4.py``). Returns the last evaluation's results
    (``{}`` when the config has no evaluator).
    """
    from detectron2.config import instantiate
    from detectron2.engine import AMPTrainer, SimpleTrainer, default_setup, hooks
    from detectron2.engine.defaults import create_ddp_model
    from detectron2.utils import comm
    from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

    from . import data  # noqa: F401  (registers resdet's checked dataset loaders)
    from .checkpoint import RNGState
    from .detection import ResdetCheckpointer
    from .detection.visualize import plot_detection_curves
    from .modeling import prepare_for_inference
    from .sampling import ResumableLoader

    overrides = [str(o) for o in overrides]
    path, cfg, notes = load_lazy_config(config_file, overrides, output_dir)
    changes = merge_weights_fragment(cfg)
    default_setup(cfg, LazyRun(str(path), overrides, resume, eval_only))
    for msg in notes:
        logger.info(msg)
    for msg in changes:
        logger.warning("set to what the weights need: %s", msg)
    out = cfg.train.output_dir

    model = instantiate(cfg.model).to(cfg.train.device)
    if eval_only:
        ResdetCheckpointer(model, save_dir=out).resume_or_load(
            cfg.train.init_checkpoint, resume=resume
        )
        # the weights no longer change: fold frozen BN (as the YAML path's --eval-only)
        with torch.no_grad():
            return _test(cfg, create_ddp_model(prepare_for_inference(model)))

    cfg.optimizer.params.model = model
    optim = instantiate(cfg.optimizer)
    train_loader = _train_loader(cfg)
    model = create_ddp_model(model, **cfg.train.ddp)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optim)
    # the same exact-resume state as the yacs trainer: RNG states and the data position
    checkpointer = ResdetCheckpointer(
        model,
        out,
        optimizer=optim,
        trainer=trainer,
        rng=RNGState(),
        **({"data": train_loader} if isinstance(train_loader, ResumableLoader) else {}),
    )
    last = {}

    def evaluate():
        last.clear()
        last.update(_test(cfg, model))
        return last

    writers = [
        CommonMetricPrinter(cfg.train.max_iter),
        JSONWriter(os.path.join(out, "train_log.json")),
        TensorboardXWriter(out),
    ]
    main = comm.is_main_process()
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if main else None,
            hooks.EvalHook(cfg.train.eval_period, evaluate),
            hooks.PeriodicWriter(writers, period=cfg.train.log_period) if main else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    # the checkpoint holds the iteration that just finished
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    if main:
        metric = next((f"bbox/{k}" for k in ("AP", "AP50") if k in last.get("bbox", {})), None)
        plot_detection_curves(Path(out) / "train_log.json", Path(out) / "curves.png", metric)
    return dict(last)

"""The one setup layer: ``load(config, weights, overrides, output_dir)`` for YAML and
LazyConfig alike, and what every entry point needs from a config.

Every command, the Python API, the pipeline, the exporter, the Predictor and the benches
start from :func:`load`; what differs between the two config systems is answered here,
once (:class:`Setup`: the device, the output folder, the model and its weights, the test
resize, the class names, the training parts, the run setup), so no path is silently
different from another.

The one device policy (:func:`resolve_device`): ``auto`` (resdet's default) is CUDA when
the machine has it, else the CPU; a named device that is not there is a one-line error,
never a silent fallback.
"""

import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..checkpoint import load_weights
from ..config import (
    check_solver,
    check_weights_path,
    flat_items,
    get_resdet_cfg,
    load_config,
    merge_config_dict,
    override_pairs,
    read_yaml,
)
from ..config.keys import AUTO_DEVICE
from ..data import register_user_datasets
from ..data.mapper import SkipUnreadable
from ..data.train_loader import build_train_loader, resumable_loader
from ..errors import ConfigError, ResdetError, one_line
from ..evaluation import build_evaluator, write_metrics
from ..modeling.resnet import stage_specs
from ..run_folder import RunFolder
from ..weights import (
    check_class_names,
    config_settings,
    detector_meta,
    merge_weights_settings,
    read_meta,
)
from .datasets import check_datasets

__all__ = ["load", "Setup", "resolve_device", "DEFAULT_TEST_RESIZE"]

logger = logging.getLogger(__name__)

# Detectron2's INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST defaults: a LazyConfig without a test
# dataloader resizes as a default YAML config would
DEFAULT_TEST_RESIZE = {"min_size": 800, "max_size": 1333}


def resolve_device(device, key="MODEL.DEVICE") -> str:
    """The device to run on: ``auto`` (or None) is CUDA when available, else the CPU;
    ``cpu``, ``cuda`` and ``cuda:N`` must exist here (a one-line ConfigError naming
    ``key`` otherwise)."""
    value = AUTO_DEVICE if device is None else str(device).strip()
    if value in ("", AUTO_DEVICE):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise ConfigError(f"{key} {value!r} is not a device; use auto, cpu, cuda or cuda:N")
    if value.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"{key} {value!r}: CUDA is not available on this machine; use cpu (or auto)"
            )
        index = int(value.split(":")[1]) if ":" in value else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                f"{key} {value!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return value


@dataclass
class _Args:
    """What Detectron2's default_setup logs and reads of a command line."""

    config_file: str = ""
    eval_only: bool = False
    resume: bool = False
    opts: list = field(default_factory=list)


class Setup:
    """A loaded config and everything derived from it, the same for both config systems.

    Attributes: ``cfg`` (a frozen CfgNode, or a LazyConfig), ``kind`` ("detection",
    "lazy", "pretrain", "pipeline"), ``path`` (the config file or None), ``weights`` (a
    path or None), ``weights_meta`` (what the weights carry, resdet.weights), ``device``,
    ``output_dir`` (a Path or None), ``overrides`` (as ``(key, value)`` pairs), ``notes``
    (what loading changed, logged by :meth:`run`).
    """

    def __init__(self, cfg, kind, path, weights, weights_meta, device, overrides, notes):
        self.cfg, self.kind, self.path = cfg, kind, path
        self.weights, self.weights_meta = weights, weights_meta
        self.device, self.overrides, self.notes = device, overrides, notes

    @property
    def is_lazy(self) -> bool:
        return self.kind == "lazy"

    def _get(self, yacs_key, lazy_key, default=None):
        """A setting by its YAML key or its LazyConfig key (the one place that knows both)."""
        from omegaconf import OmegaConf

        if self.is_lazy:
            value = OmegaConf.select(self.cfg, lazy_key, default=default)
            return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        node = self.cfg
        for part in yacs_key.split("."):
            if part not in node:
                return default
            node = node[part]
        return node

    @property
    def output_dir(self) -> Optional[Path]:
        out = self._get("OUTPUT_DIR", "train.output_dir")
        return Path(out) if out else None

    @property
    def seed(self) -> int:
        return int(self._get("SEED", "train.seed", -1))

    @property
    def input_format(self) -> str:
        return self._get("INPUT.FORMAT", "model.input_format", "BGR")

    # ---- test-time preprocessing and classes ---------------------------------------------
    @property
    def test_resize(self) -> Optional[dict]:
        """``{"min_size", "max_size"}`` of the test-time ResizeShortestEdge."""
        if not self.is_lazy:
            return {
                "min_size": self.cfg.INPUT.MIN_SIZE_TEST,
                "max_size": self.cfg.INPUT.MAX_SIZE_TEST,
            }
        for aug in self._get(None, "dataloader.test.mapper.augmentations", None) or []:
            target = aug.get("_target_") if isinstance(aug, dict) else None
            if str(getattr(target, "__name__", target)).endswith("ResizeShortestEdge"):
                short = aug.get("short_edge_length")
                short = short[0] if isinstance(short, (list, tuple)) and len(short) == 1 else short
                return {"min_size": short, "max_size": aug.get("max_size")}
        found = (self.weights_meta or {}).get("test_resize")
        return found or dict(DEFAULT_TEST_RESIZE)

    def test_augmentation(self):
        """The test-time resize as a Detectron2 augmentation (DefaultPredictor's)."""
        from detectron2.data import transforms as T

        r = self.test_resize
        short = r["min_size"]
        short = [short, short] if isinstance(short, int) else list(short)
        return T.ResizeShortestEdge(short, r["max_size"])

    def dataset_names(self, part=None) -> list:
        """The registered dataset names of the config: DATASETS.TEST/TRAIN or
        dataloader.test/train.dataset.names (``part``: "test" or "train"; None: both,
        test first)."""
        names = []
        for p in [part] if part else ["test", "train"]:
            found = self._get(f"DATASETS.{p.upper()}", f"dataloader.{p}.dataset.names", ())
            names += [found] if isinstance(found, str) else list(found or ())
        return names

    def dataset_classes(self) -> Optional[list]:
        """The class names of the config's first dataset that has them, None if none."""
        from detectron2.data import MetadataCatalog

        for name in self.dataset_names():
            classes = MetadataCatalog.get(name).get("thing_classes")
            if classes is not None:
                return list(classes)
        return None

    @property
    def class_names(self) -> Optional[list]:
        """What the model's classes are called: what the weights carry, else the data's."""
        found = (self.weights_meta or {}).get("class_names")
        return list(found) if found else self.dataset_classes()

    # ---- the model -------------------------------------------------------------------------
    def build_model(self, weights=None):
        """The model of the config on :attr:`device` (train mode); ``weights``: a policy of
        resdet.weights ("fine-tune" or "inference") to load :attr:`weights` under."""
        if self.kind == "pretrain":
            raise ConfigError("a pretraining config builds its classifier in resdet.pretrain")
        if self.is_lazy:
            from detectron2.config import instantiate

            try:
                model = instantiate(self.cfg.model)
            except Exception as e:  # noqa: BLE001 - a LazyCall the user wrote
                raise ConfigError(
                    f"{self.path or 'config'}: model cannot be built: "
                    f"{type(e).__name__}: {one_line(e)}"
                ) from None
            model.to(self.device)
        else:
            model = _build_yacs_model(self.cfg)
        if weights is not None:
            self.load_weights(model, weights)
        return model

    def load_weights(self, model, policy):
        """Load :attr:`weights` into ``model`` under ``policy``; a missing weights file for
        inference is an error (a model with random weights predicts nothing real)."""
        if not self.weights:
            if policy == "inference":
                key = "train.init_checkpoint" if self.is_lazy else "MODEL.WEIGHTS"
                raise ConfigError(f"{key} is empty: give the trained detector's weights")
            return model
        strict = True if self.is_lazy else self.cfg.RESDET.WEIGHTS.STRICT
        return load_weights(model, self.weights, policy, strict=strict)

    def check_classes(self, what="the test set"):
        """Weights that carry other class names than the data's: CheckpointError."""
        check_class_names(self.weights, self.weights_meta, self.dataset_classes(), what)

    def checkpoint_meta(self) -> dict:
        """The meta every checkpoint of this run carries (resdet.weights)."""
        return detector_meta(self)

    # ---- the training parts (both config systems) -----------------------------------------
    @property
    def schedule(self) -> dict:
        """max_iter, checkpoint_period, eval_period, log_period, amp, base_lr of training."""
        if self.is_lazy:
            t = self.cfg.train
            return {
                "max_iter": int(t.max_iter),
                "checkpoint_period": int(t.get("checkpointer", {}).get("period", 5000)),
                "eval_period": int(t.get("eval_period", 0)),
                "log_period": int(t.get("log_period", 20)),
                "amp": bool(t.get("amp", {}).get("enabled", False)),
                "base_lr": float(self._get(None, "optimizer.lr", 0.0) or 0.0),
            }
        s = self.cfg.SOLVER
        return {
            "max_iter": s.MAX_ITER,
            "checkpoint_period": s.CHECKPOINT_PERIOD,
            "eval_period": self.cfg.TEST.EVAL_PERIOD,
            "log_period": 20,
            "amp": s.AMP.ENABLED,
            "base_lr": s.BASE_LR,
        }

    def build_optimizer(self, model):
        with _building("the optimizer", "optimizer", "SOLVER.*", self):
            if self.is_lazy:
                from detectron2.config import instantiate

                self.cfg.optimizer.params.model = model
                return instantiate(self.cfg.optimizer)
            from detectron2.solver import build_optimizer

            return build_optimizer(self.cfg, model)

    def lr_scheduler_hook(self, optimizer):
        """Detectron2's LRScheduler hook: its state travels in the trainer's checkpoint."""
        from detectron2.engine import hooks

        with _building("the learning-rate schedule", "lr_multiplier", "SOLVER.*", self):
            if self.is_lazy:
                from detectron2.config import instantiate

                return hooks.LRScheduler(scheduler=instantiate(self.cfg.lr_multiplier))
            from detectron2.solver import build_lr_scheduler

            return hooks.LRScheduler(optimizer, build_lr_scheduler(self.cfg, optimizer))

    def build_train_loader(self):
        """The training loader, resumable (its position is checkpointed) where the config
        uses Detectron2's default training sampler; unreadable images skipped and counted."""
        with _building(
            "the training data loader", "dataloader.train", "INPUT.* and DATALOADER.*", self
        ):
            return self._build_train_loader()

    def _build_train_loader(self):
        from detectron2.data import DatasetMapper

        if not self.is_lazy:
            return build_train_loader(
                self.cfg, mapper=SkipUnreadable(DatasetMapper(self.cfg, True))
            )
        from detectron2.config import instantiate

        dl = self.cfg.dataloader.train
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
            SkipUnreadable(instantiate(dl.mapper)),
            dl.total_batch_size,
            seed=self.seed,
            num_workers=dl.get("num_workers", 0),
            aspect_ratio_grouping=dl.get("aspect_ratio_grouping", True),
        )

    def evaluate(self, model) -> dict:
        """Evaluate ``model`` on the config's test set(s) as Detectron2's ``test`` does,
        with resdet's evaluator (metrics.json, predictions.json under OUTPUT_DIR/inference);
        the results ({} without a test set), also written to OUTPUT_DIR/metrics.json."""
        from detectron2.config import instantiate
        from detectron2.data import build_detection_test_loader
        from detectron2.evaluation import inference_on_dataset, print_csv_format
        from detectron2.utils import comm

        results = {}
        if self.is_lazy:
            if "evaluator" in self.cfg.dataloader:
                results = inference_on_dataset(
                    model,
                    instantiate(self.cfg.dataloader.test),
                    instantiate(self.cfg.dataloader.evaluator),
                )
        else:
            for name in self.cfg.DATASETS.TEST:
                evaluator = build_evaluator(
                    self.cfg, name, str(self.output_dir / "inference" / name)
                )
                loader = build_detection_test_loader(self.cfg, name)
                results[name] = inference_on_dataset(model, loader, evaluator)
            if len(results) == 1:
                results = next(iter(results.values()))
        if comm.is_main_process() and results:
            print_csv_format(results)
            write_metrics(results, self.output_dir / "metrics.json")
        return results

    # ---- the run -----------------------------------------------------------------------------
    def run(self, kind=None, *, task="train", resume=False, overwrite=False):
        """The run folder of this run (resdet.run_folder), set up on entering: owned, checked
        (for ``resume``: the config against the checkpoint, before anything is written),
        then Detectron2's ``default_setup`` (loggers, environment, config.yaml, seed) and
        the notes of loading logged."""
        from detectron2.utils import comm

        kind = kind or ("detection" if self.kind == "lazy" else self.kind)
        out = self.output_dir
        if out is None:
            raise ConfigError("OUTPUT_DIR is empty: give the run an output folder")
        folder = RunFolder(
            out,
            kind,
            task=task,
            resume=resume,
            overwrite=overwrite,
            main=comm.is_main_process(),
            check=(lambda: check_resume(self)) if resume and task == "train" else None,
        )
        return _SetUpRun(self, folder, task == "eval", resume)

    def _setup_run(self, eval_only, resume):
        from detectron2.engine import default_setup
        from detectron2.utils import comm
        from detectron2.utils.logger import setup_logger

        args = _Args(
            str(self.path or ""), eval_only, resume, [f"{k}={v}" for k, v in self.overrides]
        )
        default_setup(self.cfg, args)
        setup_logger(str(self.output_dir), distributed_rank=comm.get_rank(), name="resdet")
        for level, msg in self.notes:
            logger.log(level, msg)


# the loggers default_setup (and our run setup) give handlers: console and OUTPUT_DIR/log.txt
_RUN_LOGGERS = ("detectron2", "fvcore", "resdet")


class _SetUpRun:
    """``with setup.run(...) as run``: the run folder entered, then the run set up; on
    leaving, the loggers are as they were. (Detectron2's setup_logger adds a console and a
    file handler per output folder: without this, a second run in one process (the
    pipeline's pretrain, then detect) printed every line twice and wrote into the first
    run's log.txt.)"""

    def __init__(self, setup, folder, eval_only, resume):
        self.setup, self.folder, self.eval_only, self.resume = setup, folder, eval_only, resume
        self._saved = {}

    def __enter__(self):
        run = self.folder.__enter__()
        try:
            self._saved = _take_loggers()
            self.setup._setup_run(self.eval_only, self.resume)
            for msg in run.notes:
                logger.info(msg)
        except BaseException as e:
            self._restore()
            self.folder.__exit__(type(e), e, e.__traceback__)
            raise
        return run

    def __exit__(self, *exc):
        try:
            return self.folder.__exit__(*exc)
        finally:
            self._restore()

    def _restore(self):
        if self._saved:
            _give_back_loggers(self._saved)
            self._saved = {}


def _take_loggers():
    """Detach the run loggers' handlers (returned, to give back) so the run's own are the
    only ones; Detectron2's setup_logger cache forgets them, so it makes them anew."""
    from detectron2.utils.logger import setup_logger

    saved = {}
    for name in _RUN_LOGGERS:
        log = logging.getLogger(name)
        saved[name] = (list(log.handlers), log.propagate, log.level)
        log.handlers = []
    setup_logger.cache_clear()
    return saved


def _give_back_loggers(saved):
    from detectron2.utils.logger import setup_logger

    for name, (handlers, propagate, level) in saved.items():
        log = logging.getLogger(name)
        for h in log.handlers:
            if h not in handlers:
                h.close()
        log.handlers, log.propagate, log.level = handlers, propagate, level
    setup_logger.cache_clear()


# what Detectron2's builders raise for a config value they cannot use (their asserts and
# "Unknown ..." ValueErrors); resdet's own errors pass through as they are
_BUILD_ERRORS = (AssertionError, KeyError, ValueError, TypeError, IndexError)


@contextmanager
def _building(what, lazy_key, yacs_keys, setup):
    """Turn a Detectron2 builder's failure on a config value into one line naming the keys
    (specific values are checked when the config loads: resdet.config.values)."""
    try:
        yield
    except ResdetError:
        raise
    except _BUILD_ERRORS as e:
        keys = lazy_key if setup.is_lazy else yacs_keys
        raise ConfigError(
            f"{setup.path or 'config'}: {what} cannot be built from this config "
            f"({type(e).__name__}: {one_line(e)}); check {keys}"
        ) from None


def _build_yacs_model(cfg):
    """Detectron2's build_model, with its assertions on the config as one line."""
    from detectron2.modeling import build_model

    try:
        return build_model(cfg)
    except ResdetError:
        raise
    except _BUILD_ERRORS as e:
        raise ConfigError(_explain_build_error(cfg, e)) from None


def _explain_build_error(cfg, e) -> str:
    """Name the key behind a Detectron2 build failure (its asserts name none)."""
    from detectron2.modeling import build_backbone

    try:
        features = set(build_backbone(cfg).output_shape())
    except Exception:  # noqa: BLE001 - the backbone itself is what fails
        features = None
    if features is not None:
        for key in ("MODEL.RPN.IN_FEATURES", "MODEL.ROI_HEADS.IN_FEATURES"):
            node = cfg
            for part in key.split("."):
                node = node[part]
            unknown = [f for f in node if f not in features]
            if unknown:
                return (
                    f"{key}: {unknown[0]!r} is not a feature of the backbone "
                    f"{cfg.MODEL.BACKBONE.NAME} (it has {', '.join(sorted(features))})"
                )
        sizes, n = cfg.MODEL.ANCHOR_GENERATOR.SIZES, len(cfg.MODEL.RPN.IN_FEATURES)
        if len(sizes) not in (1, n):
            return (
                f"MODEL.ANCHOR_GENERATOR.SIZES has {len(sizes)} levels but MODEL.RPN.IN_FEATURES "
                f"{n}; give one list of sizes per feature"
            )
    text = one_line(e)  # the type's name when the message is empty
    what = text if text == type(e).__name__ else f"{type(e).__name__}: {text}"
    return f"the config does not describe a model Detectron2 can build ({what}); check MODEL.*"


def check_resume(setup):
    """``--resume`` with a config other than the checkpoint's would continue another model:
    compare the checkpoint's recorded config (resdet.weights meta) with this one, before
    anything is written. Settings of the schedule (SOLVER.*) may change."""
    out = setup.output_dir
    pointer = out / "last_checkpoint"
    if not pointer.is_file():
        return
    last = out / pointer.read_text().strip()
    if not last.is_file():
        return  # the checkpointer falls back to an earlier one, or says why
    meta = read_meta(last)
    if not meta:
        return
    recorded = meta.get("config")
    if recorded and not setup.is_lazy:
        import yaml

        theirs = dict(flat_items(yaml.safe_load(recorded) or {}))
        ours = dict(flat_items(yaml.safe_load(setup.cfg.dump())))
        for key in sorted(set(theirs) | set(ours)):
            if not key.startswith(("MODEL.", "INPUT.", "DATASETS.", "RESDET.DATA.", "PRETRAIN.")):
                continue
            if key in ("MODEL.WEIGHTS", "MODEL.DEVICE"):
                continue
            if theirs.get(key) != ours.get(key):
                raise ConfigError(
                    f"--resume: {key} is {ours.get(key)!r} here but {theirs.get(key)!r} in "
                    f"{last}; resume with the config the run started with, or start a new run"
                )
    check_class_names(last, meta, setup.dataset_classes(), "this run's data")


# ---------------------------------------------------------------------------- load
def load(
    config,
    weights=None,
    overrides=None,
    output_dir=None,
    *,
    device=None,
    kind=None,
    datasets=False,
    eval_only=False,
) -> Setup:
    """Load ``config`` for one job: the config (a shipped name, a path, a CfgNode or a
    LazyConfig) with ``overrides`` (a list of ``KEY VALUE`` / ``KEY=VALUE``, or a dict),
    ``weights`` (MODEL.WEIGHTS / train.init_checkpoint; their recorded settings merged,
    resdet.weights), ``output_dir`` (OUTPUT_DIR / train.output_dir) and ``device`` (else
    the config's), resolved by the one device policy.

    ``config`` None with ``weights``: the YAML config the weights carry (a detection run's
    checkpoint). ``datasets``: register the config's own datasets (RESDET.DATA), size the
    box predictor to their classes and check them (``eval_only``: a test set is needed),
    as training and evaluation need; inference does not. ``kind``: the kind of config the
    caller needs ("detection" accepts a LazyConfig detector too).
    """
    # "~" is the home folder wherever a path is given (the config's own keys: load_config)
    weights = None if weights is None else os.path.expanduser(str(weights))
    output_dir = None if output_dir is None else os.path.expanduser(str(output_dir))
    meta = read_meta(weights) if weights and Path(weights).is_file() else None
    if config is None:
        config = _carried_config(weights, meta)
    loaded = load_config(config, overrides, kind=kind)
    cfg, found, path = loaded
    pairs = override_pairs(overrides, lazy=found == "lazy")
    notes = []
    if found == "pipeline":
        if output_dir is not None:
            cfg.OUTPUT_DIR = str(output_dir)
        cfg.freeze()
        return Setup(cfg, found, path, None, None, None, pairs, notes)
    if found == "lazy":
        weights = _lazy_weights(cfg, weights)
    else:
        weights = _yacs_weights(cfg, weights)
    if weights and meta is None and Path(weights).is_file():
        meta = read_meta(weights)
    if meta and found != "pretrain":  # a classifier's settings are its config's own
        explicit = set() if found == "lazy" else _explicit_keys(path, pairs)
        for msg in merge_weights_settings(cfg, config_settings(meta), weights, explicit):
            notes.append((logging.WARNING, msg))
    if found == "lazy":
        dev = _finish_lazy(cfg, output_dir, device, notes)
    else:
        check_depth(cfg, found)  # after the weights' settings: they may set it
        dev = _finish_yacs(cfg, found, output_dir, device, notes, datasets, eval_only)
    return Setup(cfg, found, path, weights or None, meta, dev, pairs, notes)


def check_depth(cfg, kind):
    """MODEL.RESNETS.DEPTH against the depths resdet builds for the network family
    (resdet.modeling's table: ImageNet depths, or 6n+2 for CIFAR); "unexpected ValueError"
    from deep in the trainer before."""
    depth = _get_key(cfg, "MODEL.RESNETS.DEPTH")
    family = _get_key(cfg, "PRETRAIN.DATASET") if kind == "pretrain" else "imagenet"
    if depth is None or family not in ("imagenet", "cifar"):
        return  # a family that is not one is its own rule's error
    try:
        stage_specs(depth, dataset=family)
    except ValueError as e:
        where = " (PRETRAIN.DATASET cifar)" if family == "cifar" else ""
        raise ConfigError(f"MODEL.RESNETS.DEPTH {depth!r}{where}: {one_line(e)}") from None


def _get_key(cfg, key):
    node = cfg
    for part in key.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def _carried_config(weights, meta):
    """The YAML config a detection checkpoint carries (never Python: a LazyConfig run's
    config would be code, and nothing in a checkpoint is executed)."""
    if not weights:
        raise ConfigError("no config given; give a config (or weights that carry one)")
    recorded = (meta or {}).get("config")
    if not recorded:
        raise ConfigError(
            f"{weights}: carries no config of its own; give the config it was trained with"
        )
    import yaml

    return merge_config_dict(get_resdet_cfg(), yaml.safe_load(recorded), f"{weights} (its config)")


def _yacs_weights(cfg, weights):
    if "MODEL" not in cfg:
        return weights
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    check_weights_path(cfg)
    w = cfg.MODEL.WEIGHTS
    return w[len("file://") :] if w.startswith("file://") else w


def _lazy_weights(cfg, weights):
    if "train" not in cfg:
        return weights
    if weights is not None:
        cfg.train.init_checkpoint = weights
    w = cfg.train.get("init_checkpoint") or ""
    if w and "://" in w:
        raise ConfigError(
            f"train.init_checkpoint {w}: resdet loads local files only; download it and give "
            f"its path"
        )
    if w and not Path(w).is_file():
        raise ConfigError(f"train.init_checkpoint {w}: no such file")
    return w


def _explicit_keys(path, pairs) -> set:
    """Keys the user set: in the config file (with its _BASE_ chain) or as overrides."""
    keys = {str(k) for k, _ in pairs}
    if path is not None and path.suffix != ".py":
        keys.update(k for k, _ in flat_items(read_yaml(path)))
    return keys


def _finish_lazy(cfg, output_dir, device, notes):
    if "train" not in cfg:  # a model-only LazyConfig (Detectron2's common/models/*.py)
        return resolve_device(device, "device")
    if output_dir is not None:
        cfg.train.output_dir = str(output_dir)
    cfg.train.device = resolve_device(
        device if device is not None else cfg.train.get("device"), "train.device"
    )
    if cfg.train.get("amp", {}).get("enabled", False) and cfg.train.device == "cpu":
        cfg.train.amp.enabled = False
        notes.append((logging.INFO, "train.amp.enabled set to False: mixed precision needs CUDA"))
    return cfg.train.device


def _finish_yacs(cfg, kind, output_dir, device, notes, datasets, eval_only):
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    key = "MODEL.DEVICE" if device is None else "device"
    cfg.MODEL.DEVICE = resolve_device(device if device is not None else cfg.MODEL.DEVICE, key)
    if kind == "detection":
        if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu":
            cfg.SOLVER.AMP.ENABLED = False
            notes.append(
                (logging.INFO, "SOLVER.AMP.ENABLED set to False: mixed precision needs CUDA")
            )
        if datasets:  # a run: its schedule and data must be usable
            check_solver(cfg, training=not eval_only)
            _register_datasets(cfg, notes, eval_only)
    cfg.freeze()
    return cfg.MODEL.DEVICE


def _register_datasets(cfg, notes, eval_only):
    """Register RESDET.DATA's datasets, check every dataset of the config, and size the box
    predictor to their classes."""
    register_user_datasets(cfg)
    classes = check_datasets(cfg, eval_only)
    if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        notes.append(
            (
                logging.INFO,
                f"MODEL.ROI_HEADS.NUM_CLASSES set to {len(classes)} "
                f"(was {cfg.MODEL.ROI_HEADS.NUM_CLASSES}): the classes of the data",
            )
        )
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)

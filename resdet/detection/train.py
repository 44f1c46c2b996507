"""Faster R-CNN fine-tuning and evaluation: Detectron2's DefaultTrainer plus resdet's rules.

What resdet adds to Detectron2's train_net: the YAML fragment of converted weights is
merged into the config, checkpoints load safely and save atomically, evaluation uses
resdet.evaluation and lands in OUTPUT_DIR/metrics.json (Detectron2's JSON-lines
training log goes to train_log.json instead), the best checkpoint is kept as
model_best.pth, and each run leaves curves.png and predictions/ to look at.
"""

import difflib
import json
import logging
import math
import os
import re
import weakref
from pathlib import Path

import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, hooks
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.logger import setup_logger

from ..checkpoint import ResdetCheckpointer, RNGState, divergence_error
from ..config import (
    add_resdet_config,
    check_solver,
    check_weights_path,
    get_resdet_cfg,
    merge_config_file,
    merge_overrides,
)
from ..errors import ConfigError, DatasetError, ResdetError
from ..io import atomic_write
from ..modeling import prepare_for_inference
from ..run_folder import discard_unstarted_run, listing, remove_orphan_temp_files
from ..sampling import ResumableLoader
from .checkpoint import _flatten, explicit_keys, merge_weights_fragment
from .data_loader import build_train_loader
from .visualize import draw_predictions, plot_detection_curves

__all__ = ["Trainer", "setup_cfg", "train", "evaluate", "train_net", "best_metric"]

logger = logging.getLogger(__name__)


class _NoTracebackForUserErrors(logging.Filter):
    """Detectron2's TrainerBase.train logs "Exception during training:" with the traceback
    before re-raising; a ResdetError (bad data, divergence, a full disk) is a user's
    problem whose one line the command prints: keep the log line, drop the traceback."""

    def filter(self, record):
        if record.exc_info and isinstance(record.exc_info[1], ResdetError):
            record.msg = f"{record.msg} {record.exc_info[1]}"
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("detectron2.engine.train_loop").addFilter(_NoTracebackForUserErrors())


def setup_cfg(config, opts=(), *, output_dir=None, eval_only=False):
    """The frozen config of one run, and the run set up (logger, config.yaml, seed).

    Config = resdet defaults + ``config`` (a YAML path, or a CfgNode used as given) +
    ``opts`` (KEY VALUE pairs) + ``output_dir`` + the weights' YAML fragment; registers the
    user's datasets (RESDET.DATA.*) and sizes the box predictor to their classes. Then
    what Detectron2's default_setup does, with no argparse object: loggers, environment
    info, OUTPUT_DIR/config.yaml (written atomically), the seed."""
    from ..data import register_user_datasets

    opts = list(opts or [])
    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.defrost()
        if "RESDET" not in cfg:
            add_resdet_config(cfg)
        # a CfgNode carries no record of what the user set: count every non-default key
        explicit = _changed_keys(cfg) | set(opts[0::2])
    else:
        cfg = get_resdet_cfg()
        if config:
            merge_config_file(cfg, config)
        explicit = explicit_keys(config, opts)
    merge_overrides(cfg, opts)
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    check_weights_path(cfg)  # before its fragment is looked for beside it
    check_solver(cfg, training=not eval_only)
    warnings = merge_weights_fragment(cfg, explicit)
    register_user_datasets(cfg)
    check_datasets(cfg, eval_only)
    notes = []
    classes = _thing_classes(cfg)
    if classes is not None and len(classes) != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        msg = (
            f"MODEL.ROI_HEADS.NUM_CLASSES set to {len(classes)} "
            f"(was {cfg.MODEL.ROI_HEADS.NUM_CLASSES}): the classes of the data"
        )
        (warnings if "MODEL.ROI_HEADS.NUM_CLASSES" in explicit else notes).append(msg)
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(classes)
    if not re.fullmatch(r"cpu|cuda(:\d+)?", cfg.MODEL.DEVICE):
        raise ConfigError(f"MODEL.DEVICE {cfg.MODEL.DEVICE!r} is not a device; use cpu or cuda")
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
        notes.append("CUDA is not available: MODEL.DEVICE set to cpu")
    if cfg.SOLVER.AMP.ENABLED and cfg.MODEL.DEVICE == "cpu":
        cfg.SOLVER.AMP.ENABLED = False
        notes.append("SOLVER.AMP.ENABLED set to False: mixed precision needs CUDA")
    cfg.freeze()
    _setup_run(cfg, config if not isinstance(config, CfgNode) else None, eval_only)
    for msg in warnings:
        logger.warning(msg)
    for msg in notes:
        logger.info(msg)
    return cfg


def _changed_keys(cfg):
    default = dict(_flatten(get_resdet_cfg()))
    return {k for k, v in _flatten(cfg) if k not in default or default[k] != v}


def _setup_run(cfg, config_file, eval_only):
    """Detectron2's default_setup without its argparse object: loggers, environment info,
    the config saved as OUTPUT_DIR/config.yaml (atomically), the seed, cudnn benchmark."""
    from detectron2.utils.collect_env import collect_env_info
    from detectron2.utils.env import seed_all_rng

    out, rank = cfg.OUTPUT_DIR, comm.get_rank()
    if comm.is_main_process() and out:
        Path(out).mkdir(parents=True, exist_ok=True)
    setup_logger(out, distributed_rank=rank, name="fvcore")
    d2 = setup_logger(out, distributed_rank=rank)
    setup_logger(out, distributed_rank=rank, name="resdet")
    d2.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    d2.info("Environment info:\n%s", collect_env_info())
    if config_file:
        d2.info("Config file: %s", config_file)
    if comm.is_main_process() and out:
        with atomic_write(Path(out) / "config.yaml", "w") as f:
            f.write(cfg.dump())
        d2.info("Full config saved to %s", Path(out) / "config.yaml")
    seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    if not eval_only:
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def check_datasets(cfg, eval_only=False):
    """The datasets and evaluation settings of a run, checked before anything is built: every
    name registered, train and test of one class list, something to evaluate with
    --eval-only, a known metric and a best-checkpoint key that evaluation will write."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..evaluation import METRICS, resolve_metric

    registered = DatasetCatalog.list()
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                close = difflib.get_close_matches(name, registered, n=3)
                raise ConfigError(
                    f"DATASETS.{key}: {name!r} is not a registered dataset"
                    f"{'; did you mean ' + ' or '.join(close) + '?' if close else ''} (your"
                    f" own data: "
                    f"set RESDET.DATA.{key} to a COCO .json or a VOC folder and DATASETS.{key} "
                    f"('resdet_{key.lower()}',))"
                )
    if eval_only and not cfg.DATASETS.TEST:
        raise ConfigError(
            "--eval-only with DATASETS.TEST empty: nothing to evaluate; set "
            "DATASETS.TEST (or RESDET.DATA.TEST)"
        )
    if cfg.RESDET.EVAL.METRIC not in ("auto",) + METRICS:
        raise ConfigError(
            f"RESDET.EVAL.METRIC {cfg.RESDET.EVAL.METRIC!r} is not a metric; use one "
            f"of auto, {', '.join(METRICS)}"
        )
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    classes = {n: MetadataCatalog.get(n).get("thing_classes") for n in names}
    first = next((n for n in names if classes[n] is not None), None)

    def source(n):
        meta = MetadataCatalog.get(n)
        return f"{n!r} ({meta.get('json_file') or meta.get('dirname') or 'registered'})"

    for n in names:
        if classes[n] is not None and classes[n] != classes[first]:
            raise DatasetError(
                f"dataset {source(n)} has the classes {_few(classes[n])} but {source(first)} "
                f"has {_few(classes[first])}: train and test must share one class list"
            )
    best = cfg.RESDET.EVAL.BEST_METRIC
    if best != "auto" and cfg.DATASETS.TEST:
        test = cfg.DATASETS.TEST[0]
        kind = "voc" if MetadataCatalog.get(test).get("evaluator_type") == "pascal_voc" else "coco"
        metric = resolve_metric(cfg.RESDET.EVAL.METRIC, kind)
        heads = (
            ("AP", "AP50", "AP75", "APs", "APm", "APl")
            if metric == "coco"
            else ("AP", "AP50", "AP75")
        )
        per_class = "AP-" if metric == "coco" else "AP50-"
        known = [f"bbox/{h}" for h in heads] + [
            f"bbox/{per_class}{c}" for c in classes.get(test) or []
        ]
        if best not in known:
            raise ConfigError(
                f"RESDET.EVAL.BEST_METRIC {best!r} is not a key the {metric} evaluation "
                f"writes; use auto or one of {', '.join(known[: len(heads)])}, "
                f"bbox/{per_class}<class>"
            )


def _few(names, n=5):
    return f"{list(names[:n])}{'...' if len(names) > n else ''}"


def _thing_classes(cfg):
    """Class names of the first training (else test) dataset, None when unknown."""
    from detectron2.data import MetadataCatalog

    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    return MetadataCatalog.get(names[0]).get("thing_classes") if names else None


def best_metric(cfg, dataset_name):
    """The metrics key (``task/metric``) that picks model_best.pth: RESDET.EVAL.BEST_METRIC,
    or for "auto" bbox/AP under the COCO metric and bbox/AP50 under the VOC ones."""
    from detectron2.data import MetadataCatalog

    from ..evaluation import resolve_metric

    if cfg.RESDET.EVAL.BEST_METRIC != "auto":
        return cfg.RESDET.EVAL.BEST_METRIC
    kind = (
        "voc" if MetadataCatalog.get(dataset_name).get("evaluator_type") == "pascal_voc" else "coco"
    )
    return "bbox/AP" if resolve_metric(cfg.RESDET.EVAL.METRIC, kind) == "coco" else "bbox/AP50"


class BestCheckpointer(hooks.BestCheckpointer):
    """Detectron2's BestCheckpointer that also records the best score beside the weights
    (``model_best.json``: metric, value, iteration), so a resumed run keeps comparing to it
    instead of overwriting a better model_best.pth with its first evaluation. (The trainer
    state in a checkpoint cannot carry it: checkpoints are saved before that step's eval.)"""

    def _record(self):
        return Path(self._checkpointer.save_dir) / f"{self._file_prefix}.json"

    def before_train(self):
        record = self._record()
        if self.trainer.start_iter > 0 and record.is_file():
            best = json.loads(record.read_text())
            if best.get("metric") == self._val_metric:
                self.best_metric, self.best_iter = best["value"], best["iteration"]

    def _update_best(self, val, iteration):
        if not super()._update_best(val, iteration):
            return False
        with atomic_write(self._record(), "w") as f:
            json.dump({"metric": self._val_metric, "value": val, "iteration": iteration}, f)
        return True


class RunOutputs(hooks.HookBase):
    """Redraws curves.png after every evaluation and at the end, then draws the final
    model's predictions on RESDET.EVAL.NUM_VIS test images (main process only)."""

    def __init__(self, cfg, metric):
        self.cfg, self.metric = cfg, metric

    def after_step(self):
        period, next_iter = self.cfg.TEST.EVAL_PERIOD, self.trainer.iter + 1
        if period > 0 and next_iter % period == 0:
            plot_detection_curves(*_curve_paths(self.cfg), self.metric)

    def after_train(self):
        plot_detection_curves(*_curve_paths(self.cfg), self.metric)
        if self.trainer.iter + 1 >= self.trainer.max_iter:  # not after a crash
            _draw(self.cfg, self.trainer.model)


def _curve_paths(cfg):
    return Path(cfg.OUTPUT_DIR) / "train_log.json", Path(cfg.OUTPUT_DIR) / "curves.png"


def _draw(cfg, model):
    if cfg.DATASETS.TEST and cfg.RESDET.EVAL.NUM_VIS > 0:
        model = getattr(model, "module", model)  # unwrap DistributedDataParallel
        draw_predictions(
            cfg,
            model,
            cfg.DATASETS.TEST[0],
            Path(cfg.OUTPUT_DIR) / "predictions",
            cfg.RESDET.EVAL.NUM_VIS,
        )


class Trainer(DefaultTrainer):
    """DefaultTrainer with resdet's checkpointer, evaluator, writers and outputs.

    Its checkpoints carry everything the run depends on (the RNG states and the data
    position beside Detectron2's model/optimizer/scheduler/iteration), so a resumed CPU
    run ends bit-identical to an uninterrupted one. A non-finite loss stops it with a
    TrainingError before the optimizer step, and non-finite weights are never saved.
    """

    def __init__(self, cfg):
        if comm.is_main_process():
            remove_orphan_temp_files(cfg.OUTPUT_DIR)
        self._output_dir = cfg.OUTPUT_DIR
        self._outputs_before = listing(cfg.OUTPUT_DIR)
        try:
            super().__init__(cfg)
        except BaseException:
            self._discard_unstarted()
            raise
        self._guard_loss()

    def _discard_unstarted(self):
        """A run that fails before its first step leaves only its log (no config.yaml of a
        run that does not exist, no empty train_log.json or events file)."""
        if comm.is_main_process():
            discard_unstarted_run(self._output_dir, self._outputs_before)

    def _guard_loss(self):
        """Check the loss of every step before the optimizer uses it (Detectron2's own check
        raises a FloatingPointError only on the main process, after logging a traceback)."""
        inner, write = weakref.proxy(self._trainer), self._trainer._write_metrics
        base_lr, out = self.cfg.SOLVER.BASE_LR, self.cfg.OUTPUT_DIR

        def checked(loss_dict, data_time, prefix="", iter=None):
            total = sum(float(v.detach()) for v in loss_dict.values())
            if not math.isfinite(total):
                raise divergence_error(total, inner.iter if iter is None else iter, base_lr, out)
            return write(loss_dict, data_time, prefix=prefix, iter=iter)

        self._trainer._write_metrics = checked

    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError:  # Detectron2's own checks inside the model (RPN boxes)
            raise divergence_error(
                "the model's outputs became non-finite",
                self.iter,
                self.cfg.SOLVER.BASE_LR,
                self.cfg.OUTPUT_DIR,
            ) from None

    def resume_or_load(self, resume=True):
        try:
            super().resume_or_load(resume=resume)
        except BaseException:
            self._discard_unstarted()
            raise

    def train(self):
        try:
            return super().train()
        except BaseException:
            if self.start_iter == 0 and self.iter == 0:
                self._discard_unstarted()
            elif comm.is_main_process():  # Detectron2's JSONWriter opens its file at start
                log = Path(self._output_dir) / "train_log.json"
                if log.is_file() and log.stat().st_size == 0:
                    log.unlink()
            raise

    @classmethod
    def build_train_loader(cls, cfg):
        from detectron2.data import DatasetMapper

        from ..data.mapper import SkipUnreadable

        # an image damaged after the load-time check is skipped (and logged), not fatal
        return build_train_loader(cfg, mapper=SkipUnreadable(DatasetMapper(cfg, True)))

    def build_hooks(self):
        # DefaultTrainer.__init__ creates a plain DetectionCheckpointer right before it
        # calls build_hooks; swap it here so every hook saves and loads through ours, with
        # the RNG states and the data position as checkpointables.
        old = self.checkpointer
        extra = {"rng": RNGState()}
        if isinstance(self._trainer.data_loader, ResumableLoader):
            extra["data"] = self._trainer.data_loader
        self.checkpointer = ResdetCheckpointer(
            old.model,
            old.save_dir,
            strict=self.cfg.RESDET.WEIGHTS.STRICT,
            **old.checkpointables,
            **extra,
        )
        ret = super().build_hooks()
        for h in ret:  # PreciseBN draws from a loader of its own: resume its position too
            if isinstance(h, hooks.PreciseBN) and isinstance(h._data_loader, ResumableLoader):
                self.checkpointer.checkpointables["precise_bn_data"] = h._data_loader
        if comm.is_main_process():
            metric = (
                best_metric(self.cfg, self.cfg.DATASETS.TEST[0]) if self.cfg.DATASETS.TEST else None
            )
            if metric:
                at = next(i for i, h in enumerate(ret) if isinstance(h, hooks.EvalHook)) + 1
                ret.insert(
                    at, BestCheckpointer(self.cfg.TEST.EVAL_PERIOD, self.checkpointer, metric)
                )
            ret.append(RunOutputs(self.cfg, metric))  # after the writers: reads their log
        return ret

    def build_writers(self):
        # Detectron2's default_writers, with the JSON log renamed: metrics.json holds the
        # evaluation results (Detectron2's {"bbox": {...}} shape), as every resdet command.
        return [
            CommonMetricPrinter(self.max_iter),
            JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "train_log.json")),
            TensorboardXWriter(self.cfg.OUTPUT_DIR),
        ]

    @classmethod
    def build_evaluator(cls, cfg, dataset_name):
        from ..evaluation import build_evaluator

        return build_evaluator(
            cfg, dataset_name, os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        from ..evaluation import write_metrics

        # evaluating must not move the training's random generators: an evaluation after a
        # checkpoint would otherwise make the run differ from one resumed from that checkpoint
        rng = RNGState().state_dict()
        try:
            results = super().test(cfg, model, evaluators)
        finally:
            RNGState().load_state_dict(rng)
        if comm.is_main_process():
            write_metrics(results, Path(cfg.OUTPUT_DIR) / "metrics.json")
        return results


def train(cfg, resume: bool = False) -> dict:
    """Fine-tune per ``cfg`` (from setup_cfg), continuing from OUTPUT_DIR's last checkpoint
    when ``resume``; the final evaluation (metrics.json's content; {} without a test set)."""
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()
    # DefaultTrainer.train returns them only when TEST.EXPECTED_RESULTS is set
    return _plain(getattr(trainer, "_last_eval_results", None))


def evaluate(cfg, resume: bool = False) -> dict:
    """Evaluate MODEL.WEIGHTS (or with ``resume`` OUTPUT_DIR's last checkpoint) on
    DATASETS.TEST with the prepared model; what metrics.json holds."""
    model = Trainer.build_model(cfg)
    ResdetCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
        cfg.MODEL.WEIGHTS, resume=resume
    )
    # the weights no longer change: fold frozen BN, channels_last (and compile if asked)
    model = prepare_for_inference(model, compile=cfg.RESDET.EVAL.COMPILE)
    results = Trainer.test(cfg, model)
    if comm.is_main_process():
        _draw(cfg, model)
    return _plain(results)


def train_net(config, opts=(), eval_only: bool = False, resume: bool = False) -> dict:
    """One process of Detectron2's train_net for resdet (what ``launch`` runs): set up,
    then train or evaluate."""
    cfg = setup_cfg(config, opts, eval_only=eval_only)
    if not eval_only:
        return train(cfg, resume)
    before = listing(cfg.OUTPUT_DIR)  # config.yaml goes too, unless checkpoints stand beside it
    try:
        return evaluate(cfg, resume)
    except Exception:
        if comm.is_main_process() and not (Path(cfg.OUTPUT_DIR) / "metrics.json").exists():
            discard_unstarted_run(cfg.OUTPUT_DIR, before)
        raise


def _plain(results) -> dict:
    """Results as metrics.json holds them: plain dicts, NaN (nothing to measure) as None."""
    if not results:
        return {}
    return {
        k: _plain(v) if isinstance(v, dict) else (None if isinstance(v, float) and v != v else v)
        for k, v in results.items()
    }

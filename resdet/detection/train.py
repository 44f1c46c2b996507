"""Faster R-CNN fine-tuning and evaluation, one trainer for YAML and LazyConfig configs.

What resdet adds to Detectron2's train_net / lazyconfig_train_net: the setup layer
(resdet.engine.load: one loader, the weights' recorded settings, one device policy), the
run folder (resdet.run_folder: one owner, one kind, no silent overwrite), the shared loop
(resdet.engine.train: Detectron2's SimpleTrainer and hooks, exact resume, a finite-loss
guard), evaluation with resdet.evaluation into OUTPUT_DIR/metrics.json (the JSON-lines
training log is train_log.json), the best checkpoint kept as model_best.pth, and each run
leaves curves.png and predictions/ to look at.
"""

import json
from pathlib import Path

import torch
from detectron2.engine import hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.utils import comm

from ..checkpoint import ResdetCheckpointer
from ..engine import load
from ..engine.train import TRAIN_LOG, MarkStarted, SeedEachStep, Writers, build_trainer
from ..evaluation import resolve_metric
from ..io import atomic_write
from ..modeling import prepare_for_inference
from ..sampling import ResumableLoader
from ..weights import check_class_names, read_meta
from .visualize import draw_predictions, plot_detection_curves

__all__ = ["DetectionTrainer", "train", "evaluate", "train_net", "best_metric", "log_period"]


def log_period(max_iter, period=20) -> int:
    """Iterations between the console lines (Detectron2's CommonMetricPrinter: iteration,
    ETA, losses) and log writes: ``period``, or often enough for about 20 lines in a short
    run; at Detectron2's 20 a 20-iteration CPU run showed nothing for minutes."""
    return max(1, min(int(period), int(max_iter) // 20))


def best_metric(setup, dataset_name):
    """The metrics key (``task/metric``) that picks model_best.pth: RESDET.EVAL.BEST_METRIC,
    or for "auto" bbox/AP under the COCO metric and bbox/AP50 under the VOC ones."""
    from detectron2.data import MetadataCatalog

    chosen = "auto" if setup.is_lazy else setup.cfg.RESDET.EVAL.BEST_METRIC
    if chosen != "auto":
        return chosen
    metric = "auto" if setup.is_lazy else setup.cfg.RESDET.EVAL.METRIC
    kind = (
        "voc" if MetadataCatalog.get(dataset_name).get("evaluator_type") == "pascal_voc" else "coco"
    )
    return "bbox/AP" if resolve_metric(metric, kind) == "coco" else "bbox/AP50"


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

    def __init__(self, setup, metric):
        self.setup, self.metric = setup, metric

    def after_step(self):
        period, next_iter = self.setup.schedule["eval_period"], self.trainer.iter + 1
        if period > 0 and next_iter % period == 0:
            _plot(self.setup, self.metric)

    def after_train(self):
        _plot(self.setup, self.metric)
        if self.trainer.iter + 1 >= self.trainer.max_iter:  # not after a crash
            _draw(self.setup, self.trainer.model)


def _plot(setup, metric):
    out = setup.output_dir
    plot_detection_curves(out / TRAIN_LOG, out / "curves.png", metric)


def _draw(setup, model):
    tests = setup.dataset_names("test")
    num = 8 if setup.is_lazy else setup.cfg.RESDET.EVAL.NUM_VIS
    thresh = 0.5 if setup.is_lazy else setup.cfg.RESDET.EVAL.VIS_THRESH
    if tests and num > 0:
        model = getattr(model, "module", model)  # unwrap DistributedDataParallel
        draw_predictions(setup, model, tests[0], setup.output_dir / "predictions", num, thresh)


class DetectionTrainer:
    """Detectron2's SimpleTrainer and hooks (resdet.engine.train) on the parts a
    :class:`resdet.engine.Setup` builds, the same for both config systems.

    Its checkpoints carry everything the run depends on (the data position beside the
    model, optimizer, scheduler and iteration; every step reseeds from (seed, rank,
    iteration)) and the run's meta (resdet.weights), so a resumed CPU run ends
    bit-identical to an uninterrupted one, with one process or several.
    """

    def __init__(self, setup, run=None):
        self.setup = setup
        sched = setup.schedule
        out = str(setup.output_dir)
        model = setup.build_model()
        optimizer = setup.build_optimizer(model)
        loader = setup.build_train_loader()
        ddp = create_ddp_model(
            model,
            broadcast_buffers=False,
            # gloo on the CPU: DistributedDataParallel takes no device ids there
            **({"device_ids": None} if setup.device == "cpu" else {}),
        )
        self.trainer = build_trainer(
            ddp, loader, optimizer, amp=sched["amp"], base_lr=sched["base_lr"], output_dir=out
        )
        extra = {"data": loader} if isinstance(loader, ResumableLoader) else {}
        self.checkpointer = ResdetCheckpointer(
            model,
            out,
            policy="fine-tune",
            strict=True if setup.is_lazy else setup.cfg.RESDET.WEIGHTS.STRICT,
            meta=setup.checkpoint_meta() if comm.is_main_process() else None,
            trainer=self.trainer,
            **extra,
        )
        self.model, self.results, self.start_iter = model, {}, 0
        self.trainer.register_hooks(self._hooks(optimizer, loader, run))

    def _hooks(self, optimizer, loader, run):
        setup, sched, main = self.setup, self.setup.schedule, comm.is_main_process()
        tests = setup.dataset_names("test")
        metric = best_metric(setup, tests[0]) if tests else None

        def test_and_save():
            self.results = setup.evaluate(self.model)
            return self.results

        seed = loader.seed if isinstance(loader, ResumableLoader) else setup.seed
        seed = seed if seed >= 0 else comm.shared_random_seed()
        return [
            SeedEachStep(lambda: loader.seed if isinstance(loader, ResumableLoader) else seed),
            hooks.IterationTimer(),
            setup.lr_scheduler_hook(optimizer),
            self._precise_bn(loader),
            hooks.PeriodicCheckpointer(
                self.checkpointer, sched["checkpoint_period"], max_iter=sched["max_iter"]
            )
            if main
            else None,
            hooks.EvalHook(sched["eval_period"], test_and_save),
            BestCheckpointer(sched["eval_period"], self.checkpointer, metric)
            if main and metric
            else None,
            # after the checkpointer and the evaluation: a failure after the first step
            # keeps what the run wrote
            MarkStarted(run) if main else None,
            Writers(
                setup.output_dir,
                sched["max_iter"],
                log_period(sched["max_iter"], sched["log_period"]),
            )
            if main
            else None,
            RunOutputs(setup, metric) if main else None,  # after the writers: reads their log
        ]

    def _precise_bn(self, loader):
        from fvcore.nn.precise_bn import get_bn_modules

        cfg = self.setup.cfg
        if self.setup.is_lazy or not cfg.TEST.PRECISE_BN.ENABLED or not get_bn_modules(self.model):
            return None
        hook = hooks.PreciseBN(
            cfg.TEST.EVAL_PERIOD,
            self.model,
            self.setup.build_train_loader(),
            cfg.TEST.PRECISE_BN.NUM_ITER,
        )
        if isinstance(hook._data_loader, ResumableLoader):  # it draws from a loader of its own
            self.checkpointer.checkpointables["precise_bn_data"] = hook._data_loader
        return hook

    def resume_or_load(self, resume=True):
        """Load the weights (fine-tune policy), or with ``resume`` the run's last
        checkpoint, as Detectron2's DefaultTrainer.resume_or_load."""
        self.checkpointer.resume_or_load(self.setup.weights or "", resume=resume)
        # the checkpoint holds the iteration that had just finished
        self.start_iter = (
            self.trainer.iter + 1 if resume and self.checkpointer.has_checkpoint() else 0
        )

    def train(self) -> dict:
        """Train to the end; the last evaluation (metrics.json's content; {} without a
        test set)."""
        self.trainer.train(self.start_iter, self.setup.schedule["max_iter"])
        return _plain(self.results)


def train(setup, resume=False, overwrite=False) -> dict:
    """Fine-tune per ``setup`` in its run folder (continuing from its last checkpoint with
    ``resume``; replacing a finished run there with ``overwrite``)."""
    with setup.run(task="train", resume=resume, overwrite=overwrite) as run:
        trainer = DetectionTrainer(setup, run)
        trainer.resume_or_load(resume)
        return trainer.train()


def evaluate(setup, resume=False) -> dict:
    """Evaluate the weights (or with ``resume`` the run folder's last checkpoint) on the
    test set, under the inference policy: every parameter of the model must come from the
    file, and weights that carry class names must carry the test set's. What metrics.json
    holds."""
    with setup.run(task="eval", resume=False) as run:
        model = setup.build_model()
        checkpointer = ResdetCheckpointer(model, str(setup.output_dir), policy="inference")
        # the classes first: weights of other classes also have other head shapes, and
        # "trained on other classes" says what is wrong where a shape mismatch does not
        if resume and checkpointer.has_checkpoint():
            path = checkpointer.resumable_checkpoint()
            check_class_names(path, read_meta(path), setup.dataset_classes())
            checkpointer.load(path, checkpointables=[])
        else:
            setup.check_classes()
            setup.load_weights(model, "inference")
        # the weights no longer change: fold frozen BN, channels_last (and compile if asked)
        compile_ = False if setup.is_lazy else setup.cfg.RESDET.EVAL.COMPILE
        with torch.no_grad():
            model = prepare_for_inference(model, compile=compile_)
        results = setup.evaluate(create_ddp_model(model))
        run.started()
        if comm.is_main_process():
            _draw(setup, model)
        return _plain(results)


def train_net(
    config,
    weights=None,
    overrides=None,
    output_dir=None,
    eval_only=False,
    resume=False,
    overwrite=False,
) -> dict:
    """One process of a detection run (what resdet.engine.launch runs in each): load the
    config for it, then train or evaluate."""
    setup = load(
        config, weights, overrides, output_dir, kind="detection", datasets=True, eval_only=eval_only
    )
    if eval_only:
        return evaluate(setup, resume)
    return train(setup, resume, overwrite)


def _plain(results) -> dict:
    """Results as metrics.json holds them: plain dicts, NaN (nothing to measure) as None."""
    if not results:
        return {}
    return {
        k: _plain(v) if isinstance(v, dict) else (None if isinstance(v, float) and v != v else v)
        for k, v in results.items()
    }

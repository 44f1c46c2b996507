"""Pretraining on the loop every resdet trainer shares (resdet.engine.train): Detectron2's
``SimpleTrainer`` (``AMPTrainer`` for float16) and hooks, as detection runs.

The classifier enters SimpleTrainer through :class:`ClassifierLoss` (a batch in,
``{"loss_cls"}`` out), so Detectron2's step (zero_grad, backward, optimizer step) runs
unchanged with resdet's finite-loss guard before the optimizer step. Everything else is a
hook: the step's random numbers from (seed, rank, iteration), Detectron2's IterationTimer,
LRScheduler (or a ReduceLROnPlateau hook stepped on validation top-1), the EMA update,
progress scalars, validation every TEST.EVAL_PERIOD (Detectron2's EvalHook), Detectron2's
PeriodicCheckpointer on a :class:`resdet.checkpoint.ResdetCheckpointer` (model, trainer
state with optimizer, scheduler and grad scaler, EMA, data position; atomic, finite
only, with the classifier's meta), the final evaluation in every test mode, the writers
(console progress, ``train_log.json``, TensorBoard) and curves.png. A resumed CPU run
with SEED set ends bit-identical to an uninterrupted one, with one process or several.

A run folder (``setup.run``, resdet.run_folder) holds ``metrics.json`` (the evaluation:
``{"top1", "top5", "modes"}``), ``train_log.json`` (the JSON-lines training log),
``model_final.pth`` (contract 1), ``model_<iter>.pth`` checkpoints, curves.png and
TensorBoard events. The command line is tools/pretrain_imagenet.py over resdet.pretrain.
"""

import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from detectron2.engine import HookBase, hooks
from detectron2.solver import build_lr_scheduler, get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage
from timm.utils import distribute_bn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..checkpoint import ResdetCheckpointer
from ..config import check_solver
from ..engine import Setup, load
from ..engine.train import TRAIN_LOG, MarkStarted, SeedEachStep, Writers, build_trainer
from ..errors import ConfigError, DatasetError
from ..io import CheckpointError, atomic_save, atomic_write, safe_torch_load
from ..modeling import build_resnet
from ..plots import plot_json_lines
from ..run_folder import remove_orphan_temp_files
from ..sampling import BatchSampler, ResumableLoader, ResumableSampler
from ..weights import check_class_names, versions
from .data import ClassFolder, check_readable, collate_skip_bad, load_splits
from .evaluate import build_test_loader, evaluate, evaluate_modes
from .transforms import (
    TEST_MODES,
    build_batch_normalize,
    build_batch_transform,
    build_test_transform,
    build_train_transform,
    test_decode_size,
    train_decode_size,
)

__all__ = [
    "build_classifier",
    "classifier_meta",
    "build_sgd",
    "ClassifierLoss",
    "PretrainTrainer",
    "train",
    "evaluate_checkpoint",
    "plot_pretrain_curves",
    "check_cfg",
]

logger = logging.getLogger("resdet.pretrain")

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
RESULTS = "metrics.json"  # the evaluation results, as in every run folder


def build_classifier(cfg, num_classes: int):
    """The resdet classifier a pretraining config describes (always plain BN)."""
    return build_resnet(
        cfg.MODEL.RESNETS.DEPTH,
        dataset=cfg.PRETRAIN.DATASET,
        shortcut=cfg.MODEL.RESDET.SHORTCUT,
        residual=cfg.MODEL.RESDET.RESIDUAL,
        num_classes=num_classes,
        norm="BN",
        stride_in_1x1=cfg.MODEL.RESNETS.STRIDE_IN_1X1,
        zero_init_residual=cfg.MODEL.RESDET.ZERO_INIT_RESIDUAL,
    )


def classifier_meta(cfg, classes, metrics=None):
    """The ``meta`` of model_final.pth (and, without ``metrics``, of every training
    checkpoint): what the weight conversion needs to rebuild the net and feed it the same
    pixels (contract 1 of the project), the class names and the versions that wrote it."""
    return {
        "format": "resdet-classifier",
        "depth": cfg.MODEL.RESNETS.DEPTH,
        "dataset": cfg.PRETRAIN.DATASET,
        "shortcut": cfg.MODEL.RESDET.SHORTCUT,
        "residual": cfg.MODEL.RESDET.RESIDUAL,
        "stride_in_1x1": cfg.MODEL.RESNETS.STRIDE_IN_1X1,
        "num_classes": len(classes),
        "norm": "BN",
        "input_format": cfg.INPUT.FORMAT,
        "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
        "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
        "recipe": cfg.PRETRAIN.RECIPE,
        "classes": list(classes),
        # the weights contract's names (resdet.weights): read_meta's readers find them
        "class_names": list(classes),
        "versions": versions(),
        "metrics": metrics,
    }


def build_sgd(cfg, model):
    """Detectron2's ``build_optimizer`` (its parameter groups, weight-decay rules and
    gradient clipping) with PyTorch's fused SGD kernel: one pass over all parameters
    instead of a loop per tensor, the same update up to float rounding."""
    params = get_default_optimizer_params(
        model,
        base_lr=cfg.SOLVER.BASE_LR,
        weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
        weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS,
    )
    return maybe_add_gradient_clipping(
        cfg,
        torch.optim.SGD(
            params,
            lr=cfg.SOLVER.BASE_LR,
            momentum=cfg.SOLVER.MOMENTUM,
            nesterov=cfg.SOLVER.NESTEROV,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            fused=True,
        ),
    )


def _device(cfg) -> torch.device:
    if cfg.MODEL.DEVICE.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"MODEL.DEVICE={cfg.MODEL.DEVICE!r} but CUDA is not available; use MODEL.DEVICE cpu"
            )
        return torch.device("cuda", comm.get_local_rank())
    return torch.device(cfg.MODEL.DEVICE)


def check_cfg(cfg):
    """One-line ConfigError for pretraining values Detectron2 does not check."""
    for key in ("CROP_SIZE", "TEST_SIZE"):
        if cfg.INPUT[key] <= 0:
            raise ConfigError(f"INPUT.{key} must be positive, got {cfg.INPUT[key]}")
    for m in cfg.PRETRAIN.TEST.MODES:
        if m not in TEST_MODES:
            raise ConfigError(
                f"PRETRAIN.TEST.MODES: {m!r} is not supported; allowed: {', '.join(TEST_MODES)}"
            )
    if cfg.PRETRAIN.AMP_DTYPE not in AMP_DTYPES:
        raise ConfigError(
            f"PRETRAIN.AMP_DTYPE={cfg.PRETRAIN.AMP_DTYPE!r} is not supported; allowed:"
            f" {', '.join(AMP_DTYPES)}"
        )
    if (
        cfg.SOLVER.AMP.ENABLED
        and cfg.PRETRAIN.AMP_DTYPE == "float16"
        and not cfg.MODEL.DEVICE.startswith("cuda")
    ):
        raise ConfigError("PRETRAIN.AMP_DTYPE=float16 needs CUDA; use bfloat16 on CPU")
    if cfg.SOLVER.IMS_PER_BATCH % comm.get_world_size():
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by the "
            f"{comm.get_world_size()} processes"
        )


def _setup(config) -> Setup:
    """A pretraining config as a Setup (resdet.engine.load; a CfgNode is copied)."""
    return config if isinstance(config, Setup) else load(config, kind="pretrain")


class ClassifierLoss(torch.nn.Module):
    """A classifier as Detectron2's SimpleTrainer wants its model: a training batch in,
    ``{"loss_cls": loss}`` out, so SimpleTrainer's step runs unchanged. ``loss(net,
    batch)`` computes the loss of ``net`` (the classifier, DDP- or compile-wrapped)."""

    def __init__(self, net, loss):
        super().__init__()
        self.net = net
        self._loss = loss

    def forward(self, batch):
        return {"loss_cls": self._loss(self.net, batch)}


class _Batches:
    """SimpleTrainer's data: the resumable loader's batches as ``(images, labels)``,
    unreadable images counted and batches without a readable one skipped. A whole epoch
    of those stops the run: the files went bad mid-run, and skipping would never end."""

    def __init__(self, owner):
        self.owner = owner

    def __iter__(self):
        t = self.owner
        most, empty = len(t.train_set) // t.world_size // t.batch_size + 2, 0
        for images, labels, num_bad in t.loader:
            t.bad_images += num_bad
            if labels is None:
                empty += 1
                if empty >= most:
                    raise DatasetError(
                        f"{t.cfg.PRETRAIN.DATA.ROOT}: {empty} batches in a row without a "
                        "readable image; check the files of the dataset"
                    )
                continue
            empty = 0
            yield images, labels


class PretrainTrainer:
    """Trains ``build_classifier(cfg)`` on PRETRAIN.DATA with Detectron2's SimpleTrainer
    and hooks; ``train()`` returns the final metrics.

    ``setup``: a pretraining Setup (resdet.engine.load) or config; ``run``: the run folder
    it trains in (``setup.run(...)``), told when the first step is done; without one the
    trainer writes into OUTPUT_DIR as it is. ``resume``: continue from its last checkpoint.

    Attributes worth reusing: ``model`` (the unwrapped classifier), ``ema``
    (AveragedModel or None), ``classes``, ``trainer`` (Detectron2's SimpleTrainer),
    ``iter`` (its iteration; after a resume the last one done, ``start_iter`` the next),
    ``optimizer``, ``output_dir``, ``checkpointer``.
    """

    def __init__(self, setup, run=None, resume: bool = False):
        setup = _setup(setup)
        cfg = setup.cfg
        check_cfg(cfg)
        check_solver(cfg)
        self.setup, self.cfg, self.run = setup, cfg, run
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.device = _device(cfg)
        self.output_dir = Path(cfg.OUTPUT_DIR)
        if run is None and comm.is_main_process():  # what opening a run folder does
            remove_orphan_temp_files(self.output_dir)
        # the data seed must agree across processes; model init differs per rank but DDP
        # broadcasts rank 0's weights
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        seed_all_rng(seed + self.rank)

        self.classes, train_samples, self.val_samples = load_splits(cfg)
        # uint8 crops decoded by torchvision.io (at reduced size where the crop allows),
        # normalised per batch in the loss: the fast form of build_train_transform
        self.train_set = ClassFolder(
            train_samples,
            build_train_transform(cfg, from_path=True),
            train_decode_size(cfg),
            decode=False,
        )
        root = Path(cfg.PRETRAIN.DATA.ROOT)
        check_readable(self.train_set, root / cfg.PRETRAIN.DATA.TRAIN_SPLIT)
        check_readable(
            ClassFolder(
                self.val_samples, build_test_transform(cfg, "1crop"), test_decode_size(cfg, "1crop")
            ),
            root / cfg.PRETRAIN.DATA.VAL_SPLIT,
            what="validation",
        )
        self.normalize = build_batch_normalize(cfg)
        self.batch_size = cfg.SOLVER.IMS_PER_BATCH // self.world_size
        self.batch_transform = build_batch_transform(cfg, len(self.classes))
        self.loader = self._build_loader(seed)

        self.model = build_classifier(cfg, len(self.classes)).to(self.device)
        if cfg.PRETRAIN.CHANNELS_LAST:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_sgd(cfg, self.model)
        self.plateau = cfg.SOLVER.LR_SCHEDULER_NAME == "ReduceLROnPlateau"
        if self.plateau:
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                mode="max",
                factor=cfg.SOLVER.GAMMA,
                patience=cfg.PRETRAIN.PLATEAU.PATIENCE,
                threshold=cfg.PRETRAIN.PLATEAU.THRESHOLD,
            )
        else:
            self.scheduler = build_lr_scheduler(cfg, self.optimizer)
        amp_dtype = AMP_DTYPES[cfg.PRETRAIN.AMP_DTYPE]
        self.autocast = {"dtype": amp_dtype, "enabled": cfg.SOLVER.AMP.ENABLED}
        self.ema = (
            AveragedModel(
                self.model,
                multi_avg_fn=get_ema_multi_avg_fn(cfg.PRETRAIN.EMA.DECAY),
                use_buffers=True,
            )
            if cfg.PRETRAIN.EMA.ENABLED
            else None
        )

        train_model = self.model
        if self.world_size > 1:
            train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.PRETRAIN.COMPILE:
            train_model = torch.compile(train_model)
        self.train_model = train_model  # what the step calls (DDP- and compile-wrapped)
        # this process's counts: unreadable images, and training top-1 since the last
        # validation (on the device: counting costs no host sync)
        self.bad_images, self.images = 0, 0
        self._correct = torch.zeros((), dtype=torch.long, device=self.device)
        self._seen = 0
        # float16 needs loss scaling: Detectron2's AMPTrainer and its GradScaler; bfloat16
        # and float32 are SimpleTrainer's step, the loss computing under autocast
        self.trainer = build_trainer(
            ClassifierLoss(train_model, self._loss),
            _Batches(self),
            self.optimizer,
            amp=cfg.SOLVER.AMP.ENABLED and amp_dtype == torch.float16,
            base_lr=cfg.SOLVER.BASE_LR,
            output_dir=str(self.output_dir),
        )
        # one checkpoint of everything the run depends on; "pretrain" first, so that a
        # run on other classes stops before the optimizer is loaded
        state = {"pretrain": self, "trainer": self.trainer, "data": self.loader}
        if self.ema is not None:
            state["ema"] = self.ema
        self.checkpointer = ResdetCheckpointer(
            self.model,
            str(self.output_dir),
            meta=classifier_meta(cfg, self.classes) if comm.is_main_process() else None,
            **state,
        )
        self.metrics = None
        self.start_iter = 0
        self.trainer.register_hooks(self._hooks())
        if resume:
            self.resume_or_load()

    def _build_loader(self, seed):
        sampler = ResumableSampler(
            len(self.train_set), seed=seed, rank=self.rank, world_size=self.world_size
        )
        workers = self.cfg.DATALOADER.NUM_WORKERS
        if workers < 0:  # auto: the cores this process may use, one left for the loop
            workers = max(0, min(8, (os.cpu_count() or 1) // self.world_size - 1))
        return ResumableLoader(
            self.train_set,
            BatchSampler(sampler, self.batch_size),
            num_workers=workers,
            collate_fn=collate_skip_bad,
            pin_memory=self.device.type == "cuda",
        )

    def _hooks(self):
        cfg, main = self.cfg, comm.is_main_process()
        max_iter, log_period = cfg.SOLVER.MAX_ITER, max(cfg.PRETRAIN.LOG_PERIOD, 1)
        return [
            SeedEachStep(lambda: self.loader.seed),
            hooks.IterationTimer(),
            _PlateauLR(self.optimizer, self.scheduler)
            if self.plateau
            else hooks.LRScheduler(self.optimizer, self.scheduler),
            # before the validation and the checkpoint, which see this step's EMA
            _EMAUpdate(self.ema, self.model) if self.ema is not None else None,
            _Progress(self, log_period),  # a collective at log writes: on every process
            _Validation(cfg.TEST.EVAL_PERIOD, self.validate),
            # on every process: averaging the BN statistics before a save is collective
            _Checkpoints(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD, self._before_save),
            # after the checkpoint and the validation: a failure later keeps what was written
            MarkStarted(self.run) if main else None,
            _FinalEvaluation(self),
            # smoothed over the log period: the lines of a resumed run repeat exactly
            Writers(self.output_dir, max_iter, log_period, window_size=log_period, defer=True)
            if main
            else None,
            _Curves(self.output_dir) if main else None,  # after the writers: reads their log
        ]

    def train_loader(self):
        """The training batches ``(images, labels, num_bad)`` from the data position on."""
        return self.loader

    @property
    def iter(self) -> int:
        return self.trainer.iter

    @property
    def seed(self) -> int:
        """The data seed (the sampler's; restored on resume even when SEED is -1)."""
        return self.loader.seed

    @property
    def epoch(self) -> float:
        return (
            self.loader.batches * self.batch_size / max(len(self.train_set) // self.world_size, 1)
        )

    def sync_buffers(self):
        """Average BN running statistics over processes: DDP only broadcasts rank 0's at
        each forward, so after a step every replica holds its own; evaluation and
        checkpoints then see the same model on every rank."""
        if self.world_size > 1:
            for m in [self.model] + ([self.ema.module] if self.ema is not None else []):
                distribute_bn(m, self.world_size, reduce=True)

    # ---- the step -------------------------------------------------------------------------
    def _loss(self, net, batch):
        """The label-smoothed cross-entropy of a batch (normalised here, MixUp/CutMix drawn
        from the step's random numbers, channels_last, autocast)."""
        images, labels = batch
        images = self.normalize(images.to(self.device, non_blocking=True))
        labels = labels.to(self.device, non_blocking=True)
        targets = labels
        if self.batch_transform is not None:  # on normalised float batches
            images, targets = self.batch_transform(images, labels)
        if self.cfg.PRETRAIN.CHANNELS_LAST:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, **self.autocast):
            logits = net(images)["linear"]
        self._correct += (logits.detach().argmax(1) == labels).sum()
        self._seen += len(labels)
        self.images += len(labels)
        return F.cross_entropy(
            logits.float(), targets, label_smoothing=self.cfg.PRETRAIN.LABEL_SMOOTHING
        )

    def run_step(self, images=None, labels=None):
        """One step of Detectron2's SimpleTrainer (what ``train()`` runs between the hooks)
        on the next training batch, or on ``images`` (uint8, as the loader yields them) and
        ``labels``; outside ``train()`` no hook runs (benchmarks, the degradation study's
        timing)."""
        t = self.trainer
        if images is not None:
            batches = t.data_loader
            t.reset_data_loader(lambda: [(images, labels)])
        try:
            with EventStorage(t.iter):  # what the step writes its loss into
                t.run_step()
        finally:
            if images is not None:  # the training batches continue where they were
                t.reset_data_loader(lambda: batches)

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self):
        """The loop's own counts (a checkpointable beside the trainer, data and EMA)."""
        return {
            "classes": list(self.classes),
            "bad_images": self.bad_images,
            "train_top1": [int(self._correct), self._seen],
        }

    def load_state_dict(self, state):
        if state.get("classes") != list(self.classes):
            raise CheckpointError(
                f"{self.checkpointer.get_checkpoint_file()}: trained on"
                f" {len(state.get('classes') or [])} "
                f"classes that differ from the {len(self.classes)} classes of"
                f" {self.cfg.PRETRAIN.DATA.ROOT}"
            )
        # the checkpoint holds every process's counts in the main process's (_before_save)
        main = comm.is_main_process()
        self.bad_images = state["bad_images"] if main else 0
        correct, self._seen = state["train_top1"] if main else (0, 0)
        self._correct.fill_(correct)

    def _before_save(self):
        """On every process before a checkpoint: BN statistics averaged, and every
        process's counts gathered into the main process's, which the checkpoint carries."""
        self.sync_buffers()
        if self.world_size > 1:
            counts = torch.tensor([self.bad_images, int(self._correct), self._seen])
            total = [int(v) for v in sum(comm.all_gather(counts))]
            if not comm.is_main_process():
                total = [0, 0, 0]
            self.bad_images, correct, self._seen = total
            self._correct.fill_(correct)

    def resume_or_load(self) -> bool:
        """Restore the last complete checkpoint of OUTPUT_DIR if there is one."""
        if not self.checkpointer.has_checkpoint():
            logger.info("no checkpoint in %s; starting from scratch", self.output_dir)
            return False
        try:
            self.checkpointer.resume_or_load("", resume=True)
        except KeyError as e:  # Detectron2's trainer state lacks an entry (its optimizer)
            raise CheckpointError(
                f"{self.checkpointer.get_checkpoint_file()}: no {e} in its trainer state: not a "
                f"checkpoint of this pretraining loop (an earlier resdet's?); start a new run "
                f"(--overwrite) or resume with the resdet that wrote it"
            ) from None
        # a checkpoint holds the iteration that had just finished (Detectron2's convention)
        self.start_iter = self.trainer.iter + 1
        logger.info("resuming at iteration %d", self.start_iter)
        return True

    # ---- training -------------------------------------------------------------------------
    def validate(self) -> dict:
        """1-crop validation of the model, the training top-1 error since the previous
        one, a ReduceLROnPlateau step: what the log records every TEST.EVAL_PERIOD."""
        self.sync_buffers()
        res = evaluate(
            self.model,
            build_test_loader(self.cfg, self.val_samples, "1crop"),
            "1crop",
            self.autocast,
        )
        counts = torch.tensor([int(self._correct), self._seen])
        correct, seen = (int(v) for v in sum(comm.all_gather(counts)))
        self._correct.zero_()
        self._seen = 0
        train_err = 1 - correct / max(seen, 1)
        if self.plateau:
            self.scheduler.step(res["top1"])
        logger.info(
            "iter %d: val top-1 %.4f top-5 %.4f, train top-1 err %.4f",
            self.trainer.iter,
            res["top1"],
            res["top5"],
            train_err,
        )
        return {
            "val/top1": res["top1"],
            "val/top5": res["top5"],
            "val/top1_err": 1 - res["top1"],
            "train/top1_err": train_err,
        }

    def train(self) -> dict:
        """Train to SOLVER.MAX_ITER, evaluate, write model_final.pth / metrics.json /
        curves.png; the final metrics."""
        cfg = self.cfg
        if comm.is_main_process():  # a run folder made it already; a bare trainer did not
            self.output_dir.mkdir(parents=True, exist_ok=True)
        logger.info(
            "training %s-%d on %d images / %d classes, %d process(es), batch %d, from iteration %d",
            cfg.PRETRAIN.DATASET,
            cfg.MODEL.RESNETS.DEPTH,
            len(self.train_set),
            len(self.classes),
            self.world_size,
            cfg.SOLVER.IMS_PER_BATCH,
            self.start_iter,
        )
        self.trainer.train(self.start_iter, cfg.SOLVER.MAX_ITER)
        return self.metrics

    def final_evaluation(self, storage=None) -> dict:
        """Evaluate the shipped weights (EMA when enabled) in every PRETRAIN.TEST.MODES and
        write model_final.pth (contract 1) and metrics.json (first mode, and every mode)."""
        # stop the loader's workers before the evaluation starts its own
        batches = self.trainer.data_loader
        self.trainer.reset_data_loader(lambda: batches)
        self.sync_buffers()
        shipped = self.ema.module if self.ema is not None else self.model
        results = evaluate_modes(self.cfg, shipped, self.val_samples, autocast=self.autocast)
        first = results[self.cfg.PRETRAIN.TEST.MODES[0]]
        max_iter = self.cfg.SOLVER.MAX_ITER
        metrics = {
            "top1": first["top1"],
            "top5": first["top5"],
            "eval": {m: {"top1": r["top1"], "top5": r["top5"]} for m, r in results.items()},
            "weights": "ema" if self.ema is not None else "model",
            "iterations": max_iter,
            "epochs": self.epoch,
            "bad_images": sum(comm.all_gather(self.bad_images)),
            "val_bad_images": first["bad_images"],
        }
        if storage is not None:
            storage.iter = max_iter  # its own train_log.json line, after the last training one
            storage.put_scalars(
                **{f"final/{m}/{k}": r[k] for m, r in results.items() for k in ("top1", "top5")},
                **{"data/bad_images": metrics["bad_images"]},
                smoothing_hint=False,
            )
        if comm.is_main_process():
            final = {
                "model": shipped.state_dict(),
                "meta": classifier_meta(self.cfg, self.classes, metrics),
            }
            self.checkpointer.check_finite(final, "model_final")
            atomic_save(final, self.output_dir / "model_final.pth")
            _write_results(
                self.output_dir, {"top1": first["top1"], "top5": first["top5"]}, metrics["eval"]
            )
        logger.info("final evaluation: %s", json.dumps(metrics["eval"]))
        comm.synchronize()
        self.metrics = metrics
        return metrics


# ---- hooks ----------------------------------------------------------------------------------
class _PlateauLR(hooks.LRScheduler):
    """Detectron2's LRScheduler hook (the LR logged every step, the scheduler's state in
    the trainer's checkpoint) for ReduceLROnPlateau, which steps on validation top-1
    (:meth:`PretrainTrainer.validate`) instead of every iteration."""

    def after_step(self):
        lr = self._optimizer.param_groups[self._best_param_group_id]["lr"]
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)

    # ReduceLROnPlateau is no LRScheduler subclass, which Detectron2's hook checks for
    def state_dict(self):
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict):
        self.scheduler.load_state_dict(state_dict)


class _EMAUpdate(HookBase):
    """The EMA weights follow the model after every optimizer step."""

    def __init__(self, ema, model):
        self.ema, self.model = ema, model

    def after_step(self):
        self.ema.update_parameters(self.model)


class _Progress(HookBase):
    """The epoch every step; at every log write the images per second and the unreadable
    images of all processes (``data/bad_images``; a collective, so on every process)."""

    def __init__(self, owner, period):
        self.owner, self.period = owner, period

    def before_train(self):
        self._tick, self._images = time.perf_counter(), self.owner.images

    def after_step(self):
        t, storage = self.trainer, self.trainer.storage
        storage.put_scalar("epoch", self.owner.epoch, smoothing_hint=False)
        if (t.iter + 1) % self.period and t.iter != t.max_iter - 1:
            return
        now, images = time.perf_counter(), self.owner.images
        rate = (images - self._images) * self.owner.world_size / max(now - self._tick, 1e-9)
        self._tick, self._images = now, images
        storage.put_scalars(
            images_per_s=rate,
            **{"data/bad_images": sum(comm.all_gather(self.owner.bad_images))},
            smoothing_hint=False,
        )


class _Validation(hooks.EvalHook):
    """Detectron2's EvalHook every period and at the last iteration, inside that step:
    before its checkpoint, which then holds what the validation changed (a plateau step,
    the reset training counts), and logged at that iteration. The final evaluation in
    every test mode (:class:`_FinalEvaluation`) replaces its evaluation after training."""

    def __init__(self, period, function):
        super().__init__(period, function, eval_after_train=False)

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if self._period > 0 and (
            next_iter % self._period == 0 or next_iter == self.trainer.max_iter
        ):
            self._do_eval()


class _Checkpoints(hooks.PeriodicCheckpointer):
    """Detectron2's PeriodicCheckpointer on every process (``before_save`` is collective;
    only the main process's checkpointer writes). The last iteration's checkpoint is
    ``model_<iter>.pth`` like the others: model_final.pth is the shipped classifier
    (:meth:`PretrainTrainer.final_evaluation`), not a training checkpoint."""

    def __init__(self, checkpointer, period, before_save):
        super().__init__(checkpointer, period)
        self._before_save = before_save

    def before_train(self):
        self.max_iter = None  # fvcore's step would save the last one as model_final

    def after_step(self):
        it = self.trainer.iter
        periodic, last = (it + 1) % self.period == 0, it == self.trainer.max_iter - 1
        if not (periodic or last):
            return
        self._before_save()
        if periodic:
            self.step(it)
        else:
            self.save(f"{self.file_prefix}_{it:07d}", iteration=it)
        comm.synchronize()  # the checkpoint is complete before any process goes on


class _FinalEvaluation(HookBase):
    """After training to the end (not after a failure): the final evaluation, its scalars
    in the last log line, model_final.pth and metrics.json."""

    def __init__(self, owner):
        self.owner = owner

    def after_train(self):
        if self.trainer.iter >= self.trainer.max_iter:
            self.owner.final_evaluation(self.trainer.storage)


class _Curves(HookBase):
    """curves.png from train_log.json after training to the end."""

    def __init__(self, output_dir):
        self.output_dir = Path(output_dir)

    def after_train(self):
        if self.trainer.iter >= self.trainer.max_iter:
            plot_pretrain_curves(self.output_dir / TRAIN_LOG, self.output_dir / "curves.png")


def _write_results(output_dir, first, modes):
    """metrics.json of a pretraining run folder: ``{"top1", "top5", "modes"}``."""
    with atomic_write(Path(output_dir) / RESULTS, "w") as f:
        json.dump({**first, "modes": modes}, f, indent=1)


def plot_pretrain_curves(log_json, png_path):
    """Loss, and train/val top-1 error, against iterations from a train_log.json."""
    return plot_json_lines(
        log_json,
        png_path,
        [("training loss", ["total_loss"]), ("top-1 error", ["train/top1_err", "val/top1_err"])],
    )


def train(config, resume: bool = False, overwrite: bool = False) -> dict:
    """Train per ``config`` (a Setup or a pretraining config) in its run folder
    (continuing from its last checkpoint with ``resume``; replacing a finished run there
    with ``overwrite``); the final metrics. A run that fails before its first step
    leaves only its log."""
    setup = _setup(config)
    with setup.run(task="train", resume=resume, overwrite=overwrite) as run:
        return PretrainTrainer(setup, run, resume=resume).train()


def evaluate_checkpoint(config, weights=None) -> dict:
    """Evaluate model_final.pth (or a training checkpoint, or ``weights``) on the
    validation split in every PRETRAIN.TEST.MODES, in OUTPUT_DIR as a run folder: writes
    its metrics.json and returns the results."""
    setup = _setup(config)
    cfg = setup.cfg
    check_cfg(cfg)
    with setup.run(task="eval") as run:
        path = Path(weights or setup.weights or Path(cfg.OUTPUT_DIR) / "model_final.pth")
        ckpt = safe_torch_load(path)
        if not isinstance(ckpt, dict) or "model" not in ckpt:
            raise CheckpointError(f"{path}: not a resdet classifier checkpoint (no 'model' entry)")
        classes, _, val = load_splits(cfg)
        check_class_names(path, ckpt.get("meta"), classes, "the validation set")
        model = build_classifier(cfg, len(classes)).to(_device(cfg))
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise CheckpointError(
                f"{path}: does not fit {cfg.PRETRAIN.DATASET}-{cfg.MODEL.RESNETS.DEPTH} with "
                f"{len(classes)} classes: {str(e).splitlines()[1].strip()}"
            ) from None
        autocast = {"dtype": AMP_DTYPES[cfg.PRETRAIN.AMP_DTYPE], "enabled": cfg.SOLVER.AMP.ENABLED}
        results = evaluate_modes(cfg, model, val, autocast=autocast)
        first = results[cfg.PRETRAIN.TEST.MODES[0]]
        modes = {m: {"top1": r["top1"], "top5": r["top5"]} for m, r in results.items()}
        if comm.is_main_process():
            _write_results(cfg.OUTPUT_DIR, {"top1": first["top1"], "top5": first["top5"]}, modes)
        run.started()
        return {"top1": first["top1"], "top5": first["top5"], "modes": modes}

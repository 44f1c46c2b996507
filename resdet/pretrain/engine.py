"""The pretraining loop: one CPU, one GPU, or many through torch.distributed.

A plain loop in the style of torchvision's classification references (the recipe is
visible in the config), built from library parts: Detectron2's optimizer parameters and
LR-scheduler builders, EventStorage + JSON/TensorBoard writers and ``comm``;
torch.optim.swa_utils for EMA, torch.amp for mixed precision, DDP for several processes,
timm's distribute_bn. Checkpoints go through the detection trainer's mechanism
(resdet.checkpoint, resdet.sampling): model, optimizer, scheduler, grad scaler, EMA,
iteration, data position and RNG states, saved atomically and only when finite, so a
resumed CPU run with SEED set ends bit-identical to an uninterrupted one. The command
line is tools/pretrain_imagenet.py over resdet.api.pretrain.
"""

import json
import logging
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from detectron2.solver import build_lr_scheduler, get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage, JSONWriter, TensorboardXWriter
from timm.utils import distribute_bn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ..checkpoint import ResdetCheckpointer, RNGState, divergence_error
from ..config import check_solver
from ..errors import ConfigError, DatasetError
from ..io import CheckpointError, atomic_save, atomic_write, safe_torch_load
from ..modeling import build_resnet
from ..plots import plot_json_lines
from ..run_folder import discard_unstarted_run, listing, remove_orphan_temp_files
from ..sampling import BatchSampler, ResumableLoader, ResumableSampler, sample_seed
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
    "PretrainTrainer",
    "train",
    "evaluate_checkpoint",
    "plot_pretrain_curves",
    "check_cfg",
]

logger = logging.getLogger("resdet.pretrain")

AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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


def classifier_meta(cfg, classes, metrics):
    """The ``meta`` of model_final.pth: what the weight conversion needs to rebuild the
    net and feed it the same pixels (contract 1 of the project)."""
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


class PretrainTrainer:
    """Trains ``build_classifier(cfg)`` on PRETRAIN.DATA; ``train()`` returns the final metrics.

    Attributes worth reusing: ``model`` (unwrapped classifier), ``ema`` (AveragedModel or
    None), ``classes``, ``iter`` (completed iterations), ``output_dir``, ``checkpointer``.
    """

    def __init__(self, cfg, resume: bool = False):
        check_cfg(cfg)
        check_solver(cfg)
        self.cfg = cfg
        self.rank, self.world_size = comm.get_rank(), comm.get_world_size()
        self.device = _device(cfg)
        self.output_dir = Path(cfg.OUTPUT_DIR)
        if comm.is_main_process():
            remove_orphan_temp_files(self.output_dir)
        # the data seed must agree across processes; model init differs per rank but DDP
        # broadcasts rank 0's weights
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
        seed_all_rng(seed + self.rank)

        self.classes, train_samples, self.val_samples = load_splits(cfg)
        # uint8 crops decoded by torchvision.io (at reduced size where the crop allows),
        # normalised per batch in run_step: the fast form of build_train_transform
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
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=cfg.SOLVER.AMP.ENABLED and amp_dtype == torch.float16
        )
        self.ema = (
            AveragedModel(
                self.model,
                multi_avg_fn=get_ema_multi_avg_fn(cfg.PRETRAIN.EMA.DECAY),
                use_buffers=True,
            )
            if cfg.PRETRAIN.EMA.ENABLED
            else None
        )

        self.iter = self.start_iter = 0
        self.bad_images = 0  # this process's count
        # the detection trainer's mechanism: everything the run depends on is a checkpointable
        state = dict(
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            trainer=self,
            data=self.loader,
            rng=RNGState(),
        )
        if self.ema is not None:
            state["ema"] = self.ema
        self.checkpointer = ResdetCheckpointer(self.model, str(self.output_dir), **state)
        if resume:
            self.resume_or_load()

        self.train_model = self.model
        if self.world_size > 1:
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.PRETRAIN.COMPILE:
            self.train_model = torch.compile(self.train_model)

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

    def train_loader(self):
        """The training batches ``(images, labels, num_bad)`` from the data position on."""
        return self.loader

    @property
    def seed(self) -> int:
        """The data seed (the sampler's; restored on resume even when SEED is -1)."""
        return self.loader.seed

    def sync_buffers(self):
        """Average BN running statistics over processes: DDP only broadcasts rank 0's at
        each forward, so after a step every replica holds its own; evaluation and
        checkpoints then see the same model on every rank."""
        if self.world_size > 1:
            for m in [self.model] + ([self.ema.module] if self.ema is not None else []):
                distribute_bn(m, self.world_size, reduce=True)

    # ---- checkpoints -------------------------------------------------------------------
    def state_dict(self):
        """The loop's own state (a checkpointable beside model, optimizer, data, RNG...)."""
        return {
            "iteration": self.iter,
            "bad_images": self.bad_images,
            "classes": list(self.classes),
        }

    def load_state_dict(self, state):
        if state.get("classes") != list(self.classes):
            raise CheckpointError(
                f"{self.checkpointer.get_checkpoint_file()}: trained on"
                f" {len(state.get('classes') or [])} "
                f"classes that differ from the {len(self.classes)} classes of"
                f" {self.cfg.PRETRAIN.DATA.ROOT}"
            )
        self.iter = self.start_iter = state["iteration"]
        self.bad_images = state["bad_images"]

    def save_checkpoint(self):
        """Rank 0 writes model_<iter>.pth (atomically, finite only), then points
        last_checkpoint at it."""
        self.sync_buffers()
        self.checkpointer.save(f"model_{self.iter:07d}")
        comm.synchronize()

    def resume_or_load(self) -> bool:
        """Restore the last complete checkpoint of OUTPUT_DIR if there is one."""
        if not self.checkpointer.has_checkpoint():
            logger.info("no checkpoint in %s; starting from scratch", self.output_dir)
            return False
        self.checkpointer.resume_or_load("", resume=True)
        logger.info("resumed at iteration %d", self.iter)
        return True

    @property
    def epoch(self) -> float:
        return (
            self.loader.batches * self.batch_size / max(len(self.train_set) // self.world_size, 1)
        )

    # ---- training ----------------------------------------------------------------------
    def run_step(self, images, labels):
        """One SGD step; returns (loss, number of correct top-1 predictions)."""
        images = self.normalize(images.to(self.device, non_blocking=True))
        targets = labels.to(self.device, non_blocking=True)
        if self.batch_transform is not None:  # MixUp/CutMix, on normalised float batches
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, -1 - self.rank, self.iter))
                images, targets = self.batch_transform(images, targets)
        if self.cfg.PRETRAIN.CHANNELS_LAST:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, **self.autocast):
            logits = self.train_model(images)["linear"]
        loss = F.cross_entropy(
            logits.float(), targets, label_smoothing=self.cfg.PRETRAIN.LABEL_SMOOTHING
        )
        if not torch.isfinite(loss):  # before the step: the weights stay as they were
            raise divergence_error(loss.item(), self.iter, self.cfg.SOLVER.BASE_LR, self.output_dir)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        if not self.plateau:
            self.scheduler.step()
        correct = int((logits.argmax(1).cpu() == labels).sum())
        return loss.item(), correct

    def _eval_during_training(self, storage, train_stats):
        self.sync_buffers()
        res = evaluate(
            self.model,
            build_test_loader(self.cfg, self.val_samples, "1crop"),
            "1crop",
            self.autocast,
        )
        correct, seen = (int(v) for v in sum(comm.all_gather(torch.tensor(train_stats))))
        storage.put_scalars(
            **{
                "val/top1": res["top1"],
                "val/top5": res["top5"],
                "val/top1_err": 1 - res["top1"],
                "train/top1_err": 1 - correct / max(seen, 1),
            },
            smoothing_hint=False,
        )
        if self.plateau:
            self.scheduler.step(res["top1"])
        logger.info(
            "iter %d: val top-1 %.4f top-5 %.4f, train top-1 err %.4f",
            self.iter,
            res["top1"],
            res["top5"],
            1 - correct / max(seen, 1),
        )

    def _writers(self, log_period):
        """Created at the first write, so a run that fails before it leaves no empty
        metrics.json or events file."""
        if not comm.is_main_process():
            return []
        return [
            JSONWriter(str(self.output_dir / "metrics.json"), window_size=log_period),
            TensorboardXWriter(str(self.output_dir), window_size=log_period),
        ]

    def train(self) -> dict:
        """Train to SOLVER.MAX_ITER, evaluate, write model_final.pth / eval.json / curves.png."""
        cfg, main = self.cfg, comm.is_main_process()
        max_iter, period = cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD
        eval_period, log_period = cfg.TEST.EVAL_PERIOD, max(cfg.PRETRAIN.LOG_PERIOD, 1)
        writers = None
        if main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            _truncate_metrics(self.output_dir / "metrics.json", self.iter)
        logger.info(
            "training %s-%d on %d images / %d classes, %d process(es), batch %d, from iteration %d",
            cfg.PRETRAIN.DATASET,
            cfg.MODEL.RESNETS.DEPTH,
            len(self.train_set),
            len(self.classes),
            self.world_size,
            cfg.SOLVER.IMS_PER_BATCH,
            self.iter,
        )
        self.model.train()
        train_stats = [0, 0]  # top-1 correct, images: training error since the last evaluation
        # a whole epoch of batches without one readable image: the files went bad mid-run
        empty, max_empty = 0, len(self.train_set) // self.world_size // self.batch_size + 2
        bar = tqdm(
            total=max_iter, initial=self.iter, desc="pretrain", disable=not main, dynamic_ncols=True
        )
        data = iter(self.loader) if self.iter < max_iter else None
        with EventStorage(self.iter) as storage:
            try:
                tick, ticked = time.perf_counter(), 0
                while self.iter < max_iter:
                    images, labels, num_bad = next(data)
                    self.bad_images += num_bad
                    if labels is None:
                        empty += 1
                        if empty >= max_empty:
                            raise DatasetError(
                                f"{cfg.PRETRAIN.DATA.ROOT}: {empty} batches in a row without a "
                                "readable image; check the files of the dataset"
                            )
                        continue
                    empty = 0
                    storage.iter = self.iter
                    lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
                    loss, correct = self.run_step(images, labels)
                    self.iter += 1
                    train_stats[0] += correct
                    train_stats[1] += len(labels)
                    ticked += len(labels)
                    storage.put_scalars(loss=loss, lr=lr, epoch=self.epoch)
                    bar.update(1)
                    if self.iter % log_period == 0 or self.iter == max_iter:
                        rate = ticked * self.world_size / (time.perf_counter() - tick)
                        tick, ticked = time.perf_counter(), 0
                        bad = sum(comm.all_gather(self.bad_images))
                        storage.put_scalars(
                            images_per_s=rate, **{"data/bad_images": bad}, smoothing_hint=False
                        )
                        bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}", bad=bad)
                    if eval_period > 0 and (self.iter % eval_period == 0 or self.iter == max_iter):
                        self._eval_during_training(storage, train_stats)
                        train_stats = [0, 0]
                    if (period > 0 and self.iter % period == 0) or self.iter == max_iter:
                        self.save_checkpoint()
                    if self.iter % log_period == 0 or self.iter == max_iter:
                        writers = self._writers(log_period) if writers is None else writers
                        for w in writers:
                            w.write()
            finally:  # a bar left open prints itself again below the error line
                bar.close()
            del data  # stop the loader's workers before the final evaluation starts its own
            metrics = self.final_evaluation(storage)
            for w in writers if writers is not None else self._writers(log_period):
                w.write()
                w.close()
        if main:
            plot_pretrain_curves(self.output_dir / "metrics.json", self.output_dir / "curves.png")
        comm.synchronize()
        return metrics

    def final_evaluation(self, storage=None) -> dict:
        """Evaluate the shipped weights (EMA when enabled) in every PRETRAIN.TEST.MODES and
        write model_final.pth (contract 1) and eval.json (first mode)."""
        self.sync_buffers()
        shipped = self.ema.module if self.ema is not None else self.model
        results = evaluate_modes(self.cfg, shipped, self.val_samples, autocast=self.autocast)
        first = results[self.cfg.PRETRAIN.TEST.MODES[0]]
        metrics = {
            "top1": first["top1"],
            "top5": first["top5"],
            "eval": {m: {"top1": r["top1"], "top5": r["top5"]} for m, r in results.items()},
            "weights": "ema" if self.ema is not None else "model",
            "iterations": self.iter,
            "epochs": self.epoch,
            "bad_images": sum(comm.all_gather(self.bad_images)),
            "val_bad_images": first["bad_images"],
        }
        if storage is not None:
            storage.iter = self.iter  # its own metrics.json line, after the last training one
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
            with atomic_write(self.output_dir / "eval.json", "w") as f:
                json.dump(
                    {"top1": first["top1"], "top5": first["top5"], "modes": metrics["eval"]},
                    f,
                    indent=1,
                )
        logger.info("final evaluation: %s", json.dumps(metrics["eval"]))
        comm.synchronize()
        return metrics


def _truncate_metrics(path: Path, start_iter: int):
    """Drop metrics.json lines a killed run wrote after its last checkpoint (or all, when
    starting from scratch), so the history of a resumed run has no duplicates."""
    if not path.is_file():
        return
    keep = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("iteration", 0) < start_iter
    ]
    with atomic_write(path, "w") as f:
        f.write("".join(line + "\n" for line in keep))


def plot_pretrain_curves(metrics_json, png_path):
    """Loss, and train/val top-1 error, against iterations from a metrics.json."""
    return plot_json_lines(
        metrics_json,
        png_path,
        [("training loss", ["loss"]), ("top-1 error", ["train/top1_err", "val/top1_err"])],
    )


def train(cfg, resume: bool = False) -> dict:
    """Train per ``cfg`` (resuming from OUTPUT_DIR when asked); the final metrics.

    A run that fails before its first step leaves only its log in OUTPUT_DIR (no
    config.yaml of a run that does not exist, no empty metrics.json)."""
    before = listing(cfg.OUTPUT_DIR)
    trainer = None
    try:
        trainer = PretrainTrainer(cfg, resume=resume)
        return trainer.train()
    except BaseException:
        unstarted = trainer is None or trainer.iter == trainer.start_iter == 0
        if unstarted and comm.is_main_process():
            discard_unstarted_run(cfg.OUTPUT_DIR, before)
        raise


def evaluate_checkpoint(cfg, weights=None) -> dict:
    """Evaluate model_final.pth (or a training checkpoint) on the validation split in every
    PRETRAIN.TEST.MODES; writes eval.json beside OUTPUT_DIR and returns the results."""
    check_cfg(cfg)
    path = Path(weights or cfg.MODEL.WEIGHTS or Path(cfg.OUTPUT_DIR) / "model_final.pth")
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a resdet classifier checkpoint (no 'model' entry)")
    classes, _, val = load_splits(cfg)
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
    out = {
        "top1": first["top1"],
        "top5": first["top5"],
        "modes": {m: {"top1": r["top1"], "top5": r["top5"]} for m, r in results.items()},
    }
    if comm.is_main_process():
        with atomic_write(Path(cfg.OUTPUT_DIR) / "eval.json", "w") as f:
            json.dump(out, f, indent=1)
    return out

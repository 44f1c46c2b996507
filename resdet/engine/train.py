"""The training loop every resdet trainer shares (detection in both config systems, and
pretraining): Detectron2's ``SimpleTrainer`` / ``AMPTrainer`` and hooks, with

- one guard: a non-finite loss stops the run on every process before the optimizer
  step (Detectron2 checks on the main process only, after logging a traceback), so
  non-finite weights are never saved;
- one checkpoint mechanism: :class:`resdet.checkpoint.ResdetCheckpointer` with the data
  position as a checkpointable and every step's random numbers drawn from (seed, rank,
  iteration) (:class:`SeedEachStep`), so a resumed run continues exactly, on any number of
  processes;
- one set of writers: Detectron2's console progress (iteration, ETA, losses), the
  JSON-lines training log ``train_log.json`` and TensorBoard events; ``metrics.json``
  is left to the evaluation results, in every kind of run folder.
"""

import json
import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from detectron2.engine import AMPTrainer, HookBase, SimpleTrainer, hooks
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter

from ..checkpoint import divergence_error
from ..errors import ResdetError
from ..io import atomic_write
from ..sampling import sample_seed

__all__ = [
    "build_trainer",
    "default_writers",
    "Writers",
    "MarkStarted",
    "SeedEachStep",
    "truncate_log",
    "TRAIN_LOG",
]

TRAIN_LOG = "train_log.json"


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


class _FiniteLoss:
    """The loss of every step checked on every process before the optimizer uses it."""

    base_lr = 0.0
    output_dir = None

    def _write_metrics(self, loss_dict, data_time, prefix="", iter=None):
        total = sum(float(v.detach()) for v in loss_dict.values())
        if not math.isfinite(total):
            raise divergence_error(
                total, self.iter if iter is None else iter, self.base_lr, self.output_dir
            )
        return super()._write_metrics(loss_dict, data_time, prefix=prefix, iter=iter)

    def run_step(self):
        try:
            super().run_step()
        except FloatingPointError:  # Detectron2's own checks inside the model (RPN boxes)
            raise divergence_error(
                "the model's outputs became non-finite", self.iter, self.base_lr, self.output_dir
            ) from None


class _Trainer(_FiniteLoss, SimpleTrainer):
    pass


class _AMPTrainer(_FiniteLoss, AMPTrainer):
    pass


def build_trainer(model, data_loader, optimizer, *, amp=False, base_lr=0.0, output_dir=None):
    """Detectron2's SimpleTrainer (AMPTrainer with ``amp``) with the finite-loss guard;
    ``base_lr`` and ``output_dir`` go into the divergence error's advice."""
    trainer = (_AMPTrainer if amp else _Trainer)(model, data_loader, optimizer)
    trainer.base_lr, trainer.output_dir = base_lr, output_dir
    return trainer


def default_writers(output_dir, max_iter, window_size=20):
    """Detectron2's default writers with the JSON log named ``train_log.json``;
    ``window_size``: the iterations a smoothed value is the median of (Detectron2's 20)."""
    return [
        CommonMetricPrinter(max_iter, window_size=window_size),
        JSONWriter(os.path.join(output_dir, TRAIN_LOG), window_size=window_size),
        TensorboardXWriter(output_dir, window_size=window_size),
    ]


class Writers(hooks.PeriodicWriter):
    """Detectron2's PeriodicWriter over :func:`default_writers`, made when training starts:
    after the checkpoint is loaded, so the lines a killed run wrote after its last
    checkpoint are dropped from train_log.json first (:func:`truncate_log`), and a run
    that fails before it leaves no empty log behind.

    ``window_size``: see :func:`default_writers` (a window no longer than ``period``
    makes each line summarise its own iterations, so a resumed run writes the lines of an
    uninterrupted one). ``defer``: make the writers at their first write instead, so a
    run that fails before it leaves no empty log even without a run folder to remove it.
    """

    def __init__(self, output_dir, max_iter, period=20, *, window_size=20, defer=False):
        super().__init__([], period=period)
        self._output_dir, self._max_iter = str(output_dir), max_iter
        self._window_size, self._defer = window_size, defer

    def _make(self):
        if not self._writers:
            self._writers = default_writers(self._output_dir, self._max_iter, self._window_size)

    def before_train(self):
        truncate_log(os.path.join(self._output_dir, TRAIN_LOG), self.trainer.start_iter)
        if not self._defer:
            self._make()

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            self._make()
        super().after_step()

    def after_train(self):
        if self.trainer.storage.latest():  # something to write (also after a failure)
            self._make()
        super().after_train()


class SeedEachStep(HookBase):
    """Every step draws its random numbers from (the run's seed, the rank, the iteration):
    Detectron2's RPN and ROI box sampling then repeat exactly when a run resumes, with any
    number of processes (a checkpoint written by rank 0 cannot carry the other ranks'
    generators). ``seed_of()`` gives the run's seed (the resumable loader's, which its
    checkpoint restores)."""

    def __init__(self, seed_of):
        self.seed_of = seed_of

    def before_step(self):
        seed = sample_seed(self.seed_of(), -1000 - comm.get_rank(), self.trainer.iter)
        torch.manual_seed(seed)  # the CPU generator and this process's CUDA one
        random.seed(seed)
        np.random.seed(seed % 2**32)


class MarkStarted(HookBase):
    """Tells the run folder the first step is done: a failure after it keeps the outputs."""

    def __init__(self, run):
        self.run = run

    def after_step(self):
        if self.run is not None:
            self.run.started()
            self.run = None


def truncate_log(path, start_iter: int):
    """Drop the lines of a JSON-lines log that a run resumed at ``start_iter`` writes again
    (a killed run's lines after its last checkpoint), so its history has no duplicates.
    A line at ``start_iter`` without training metrics (no "lr") is the final evaluation
    of a finished run that is being extended: it stays."""
    path = Path(path)
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by the kill
            continue
        it = record.get("iteration", 0)
        if it < start_iter or (it == start_iter and "lr" not in record):
            keep.append(line)
    with atomic_write(path, "w") as f:
        f.write("".join(line + "\n" for line in keep))

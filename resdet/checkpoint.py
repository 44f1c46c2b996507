"""Checkpoints of both trainers: safe to load, atomic, finite, and enough to resume exactly.

One mechanism for detection (Detectron2's DefaultTrainer) and pretraining
(resdet.pretrain): a :class:`ResdetCheckpointer` whose checkpointables carry everything
a run depends on, namely the model, optimizer, scheduler and trainer state, plus the RNG
states (:class:`RNGState`) and the data position (``resdet.sampling.ResumableLoader``).
A resumed CPU run with SEED set then ends bit-identical to an uninterrupted one.

What it changes in Detectron2's DetectionCheckpointer:

- loading never executes code (.pkl through a restricted unpickler, .pth with
  ``weights_only=True``); Detectron2 uses plain pickle / torch.load;
- saving is atomic (temporary file, fsync, rename), so a crash mid-save never leaves a
  truncated checkpoint, and refuses non-finite weights (``TrainingError``), so
  ``last_checkpoint`` always names finite weights to go back to;
- ``--resume`` onto an unreadable or non-finite newest checkpoint falls back, with a
  warning, to the newest earlier one that is complete;
- what the weights must fill is a named policy of resdet.weights ("fine-tune" or
  "inference"), checked after every load, and every save carries the run's ``meta``
  (what the weights were trained with; resdet.weights).
"""

import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from .errors import CheckpointError, TrainingError
from .io import atomic_save, atomic_write, safe_pickle_load, safe_torch_load
from .weights import check_loaded, read_checkpoint

__all__ = ["ResdetCheckpointer", "RNGState", "load_weights", "non_finite", "divergence_error"]

logger = logging.getLogger(__name__)


def non_finite(state_dict) -> list:
    """Names of the floating-point tensors of ``state_dict`` holding NaN or Inf."""
    return [
        k
        for k, v in state_dict.items()
        if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()
    ]


def divergence_error(loss, iteration: int, base_lr: float, save_dir) -> TrainingError:
    """The one-line error of a run whose loss became non-finite; ``loss`` is its value,
    or a phrase saying what else became non-finite."""
    pointer = Path(save_dir) / "last_checkpoint" if save_dir else None
    if pointer is not None and pointer.is_file():
        advice = f"resume from {Path(save_dir) / pointer.read_text().strip()} (--resume)"
    else:
        advice = "start again (no checkpoint was saved yet)"
    if isinstance(loss, str):
        what = loss
    else:
        what = f"loss became {'nan' if math.isnan(loss) else loss}"
    return TrainingError(
        f"{what} at iteration {iteration}; lower SOLVER.BASE_LR (now {base_lr:g}) and {advice}"
    )


class RNGState:
    """The global random generators (python, numpy, torch, CUDA) as a checkpointable.

    Restored on resume, they continue where the interrupted run left them: Detectron2's
    RPN/ROI box sampling and anything else drawing from them then draw the same numbers.
    One state per checkpoint: with several processes every rank resumes with rank 0's.
    """

    def state_dict(self):
        # numpy's key as a plain list so the checkpoint loads with weights_only=True
        np_state = np.random.get_state(legacy=False)
        np_state["state"]["key"] = np_state["state"]["key"].tolist()
        state = {"python": random.getstate(), "numpy": np_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state):
        random.setstate(state["python"])
        np_state = dict(state["numpy"])
        np_state["state"] = dict(
            np_state["state"], key=np.array(np_state["state"]["key"], dtype=np.uint32)
        )
        np.random.set_state(np_state)
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            cuda = state["cuda"][: torch.cuda.device_count()]
            torch.cuda.set_rng_state_all(cuda)


class ResdetCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with safe loading, atomic and finite saving, and a resume that
    falls back past a damaged newest checkpoint (see the module docstring).

    Loading keeps Detectron2's conventions: a .pkl holding ``model`` and ``__author__``
    is a Detectron2 checkpoint, any other .pkl is a Caffe2/MSRA one (``blobs``) and is
    matched by name heuristics; numpy arrays become tensors in ``_load_model``.
    """

    # Checkpoints that are snapshots beside the run, not where it continues from:
    # ``--resume`` must keep following the periodic checkpoints.
    untagged = ("model_best",)

    def __init__(
        self,
        model,
        save_dir="",
        *,
        policy="fine-tune",
        strict=True,
        meta=None,
        save_to_disk=None,
        **checkpointables,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.policy = policy  # which parameters must come from a file (resdet.weights)
        self.strict = strict  # RESDET.WEIGHTS.STRICT: fine-tune problems only logged
        self.meta = meta  # written into every checkpoint (resdet.weights)
        self.incompatible = None  # what the last load did not fit
        self._loading = None
        self._preloaded = None  # (path, data): a file read while choosing what to resume

    # ---- loading -----------------------------------------------------------------------
    def load(self, path, *args, **kwargs):
        self._loading = path
        return super().load(path, *args, **kwargs)

    def _load_model(self, checkpoint):
        file_keys = list(checkpoint["model"].keys())
        if file_keys and all(k.startswith("module.") for k in file_keys):
            # saved from a DataParallel wrapper: fvcore strips the prefix when loading
            file_keys = [k[len("module.") :] for k in file_keys]
        model_keys = list(self.model.state_dict().keys())
        incompatible = self.incompatible = super()._load_model(checkpoint)
        if checkpoint.get("matching_heuristics"):  # names were matched to the model's
            file_keys = [k for k in model_keys if k not in incompatible.missing_keys]
        for problem in check_loaded(
            self._loading, model_keys, file_keys, incompatible, self.policy, self.strict
        ):
            self.logger.warning(f"RESDET.WEIGHTS.STRICT is False, loading anyway: {problem}")
        return incompatible

    def _load_file(self, filename):
        if self._preloaded is not None and self._preloaded[0] == filename:
            data, self._preloaded = self._preloaded[1], None
            return data
        if filename.endswith(".pkl"):
            data = safe_pickle_load(filename)
            if "model" in data and "__author__" in data:
                self.logger.info("Reading a file from '{}'".format(data["__author__"]))
                return data
            if "blobs" in data:  # detection models have "blobs", ImageNet models do not
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):  # pycls
            data = safe_torch_load(filename)
            model_state = {
                k: v
                for k, v in data["model_state"].items()
                if not k.endswith("num_batches_tracked")
            }
            return {"model": model_state, "__author__": "pycls", "matching_heuristics": True}
        return super()._load_file(filename)  # .pth: through _torch_load below

    def _torch_load(self, f):
        data = read_checkpoint(f)  # safely, and once when resdet.weights read its meta
        weights = data.get("model", data) if isinstance(data, dict) else data
        if not isinstance(weights, dict):
            raise CheckpointError(
                f"{f}: holds a {type(weights).__name__}, not a dict of named weights; save "
                f"model.state_dict() (or {{'model': model.state_dict()}})"
            )
        bad = next(
            ((k, v) for k, v in weights.items() if not isinstance(v, (torch.Tensor, np.ndarray))),
            None,
        )
        if bad is not None:
            raise CheckpointError(
                f"{f}: entry {bad[0]!r} is a {type(bad[1]).__name__}, not a tensor: not a "
                f"weights file (a training checkpoint keeps its weights under 'model')"
            )
        return data

    def resume_or_load(self, path, *, resume=True):
        if resume and self.has_checkpoint():
            return self.load(self.resumable_checkpoint())
        return self.load(path, checkpointables=[])

    def resumable_checkpoint(self) -> str:
        """The file ``last_checkpoint`` names if it is complete and finite; else, with a
        warning, the newest earlier checkpoint of save_dir that is. CheckpointError (one
        line) when there is none."""
        newest = self.get_checkpoint_file()
        candidates = [newest] + [str(p) for p in self._checkpoints_by_age() if str(p) != newest]
        first_problem = None
        for path in candidates:
            try:
                data = self._torch_load(path)  # resume candidates are our own .pth files
                if not isinstance(data, dict) or "model" not in data:
                    raise CheckpointError(f"{path}: not a training checkpoint (no 'model' entry)")
                bad = non_finite(data["model"])
                if bad:
                    raise CheckpointError(f"{path}: {len(bad)} non-finite tensor(s) ({bad[0]})")
            except CheckpointError as e:
                first_problem = first_problem or str(e)
                self.logger.warning("cannot resume from %s", e)
                continue
            if path != newest:
                self.logger.warning(
                    "resuming from %s instead of %s, which is unusable",
                    path,
                    os.path.basename(newest),
                )
            self._preloaded = (path, data)
            return path
        raise CheckpointError(
            f"{first_problem}; no earlier complete checkpoint in "
            f"{self.save_dir} to resume from: run without --resume"
        )

    def _checkpoints_by_age(self):
        """The .pth files of save_dir a run may continue from, newest first."""
        files = [
            p
            for p in Path(self.save_dir).glob("*.pth")
            if not p.name.startswith(".") and p.stem not in self.untagged
        ]
        return sorted(files, key=lambda p: (p.stat().st_mtime, p.name), reverse=True)

    # ---- saving ------------------------------------------------------------------------
    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        if self.meta is not None:
            data["meta"] = self.meta
        data.update(kwargs)
        self.check_finite(data, name)
        basename = f"{name}.pth"
        path = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {path}")
        atomic_save(data, path)
        if name not in self.untagged:
            self.tag_last_checkpoint(basename)

    def check_finite(self, data, name):
        """Refuse to write weights with NaN/Inf: ``last_checkpoint`` must keep naming
        weights that a run with a lower learning rate can continue from."""
        bad = non_finite(data["model"])
        for key in ("ema",):  # averaged weights that are shipped instead of the model
            if isinstance(data.get(key), dict):
                bad += [f"{key}.{k}" for k in non_finite(data[key])]
        if bad:
            last = self.get_checkpoint_file() if self.has_checkpoint() else ""
            where = f"resume from {last} (--resume)" if last else "start again"
            raise TrainingError(
                f"not saving {name}.pth: {len(bad)} non-finite tensor(s) "
                f"({bad[0]}); the run diverged: lower SOLVER.BASE_LR and {where}"
            )

    def tag_last_checkpoint(self, last_filename_basename):
        with atomic_write(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)


def load_weights(model, weights, policy="inference", strict=True):
    """Load ``weights`` into ``model`` through the safe checkpointer under a named policy
    of resdet.weights ("fine-tune" or "inference"); returns the model."""
    ResdetCheckpointer(model, policy=policy, strict=strict).load(str(weights), checkpointables=[])
    return model

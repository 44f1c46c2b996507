"""The run-folder contract: an OUTPUT_DIR belongs to one run.

- **One owner.** A run holds ``.resdet-run.lock`` (pid, host, start time) while it
  writes; a second run into the folder is one line naming the owner. A lock whose process
  is gone on this host is stale: it is taken over, with a log line.
- **One kind.** ``run.json`` records the kind of run (detection, pretrain, pipeline), its
  status (running, finished, failed, interrupted) and the resdet version. A run refuses a
  folder of another kind: detection does not replace a classifier.
- **No silent overwrite.** A fresh training run refuses a folder that holds a finished run,
  or an unfinished one with checkpoints, unless it resumes (``--resume``) or is told to
  replace it (``--overwrite``, which removes the old run's outputs first, so no log is
  appended to). Evaluating into a training run's folder is allowed.
- **No half-made folder.** A run that fails before its first iteration (or an evaluation
  before its results) leaves only its log: what it created is removed.
- No leftovers from a killed save: the ``.<name>.<random>.tmp`` files of resdet.io's
  atomic writes are removed when the next run opens the folder.

Only the main process of a distributed run owns the folder; the other ranks get a
:class:`RunFolder` that does nothing.
"""

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path

from .errors import ConfigError, OutputError
from .io import atomic_write
from .version import __version__

__all__ = [
    "RunFolder",
    "KINDS",
    "LOCK_FILE",
    "RECORD_FILE",
    "read_record",
    "remove_orphan_temp_files",
    "discard_unstarted_run",
    "listing",
]

logger = logging.getLogger(__name__)

KINDS = ("detection", "pretrain", "pipeline")
LOCK_FILE = ".resdet-run.lock"
RECORD_FILE = "run.json"
# what a run writes into its folder: removed by --overwrite (logs stay with a new name)
RUN_OUTPUTS = (
    RECORD_FILE,
    "config.yaml",
    "last_checkpoint",
    "model_*.pth",
    "model_best.json",
    "metrics.json",
    "train_log.json",
    "eval.json",
    "curves.png",
    "events.out.tfevents.*",
    "inference",
    "predictions",
    "manifest.json",
    "summary.json",
    "report.md",
    "report.html",
)
# a folder written by a run from before run.json (or by Detectron2 itself)
_RUN_MARKERS = ("last_checkpoint", "model_final.pth", "train_log.json", "manifest.json")


def listing(folder) -> set:
    """The names in ``folder`` now (empty when it does not exist)."""
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()


def read_record(folder):
    """The ``run.json`` of ``folder`` as a dict, or None."""
    path = Path(folder) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (ValueError, OSError):
        raise ConfigError(
            f"{path}: not a readable run record; delete it if the folder is yours"
        ) from None
    return record if isinstance(record, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunFolder:
    """``with RunFolder(path, kind, task="train", resume=..., overwrite=...) as run:``
    owns ``path`` for one run (see the module docstring); ``run.started()`` says the run
    has produced something worth keeping if it fails later. ``check``: a callable run once
    the folder is owned and before anything is written (a resume's config check).

    ``task``: "train" (a fresh run or ``resume``), or "eval" (evaluation into a folder,
    which may hold a finished training run of the same kind)."""

    def __init__(
        self, path, kind, *, task="train", resume=False, overwrite=False, main=True, check=None
    ):
        if kind not in KINDS:
            raise ValueError(f"run kind {kind!r}")
        self.path, self.kind, self.task = Path(path), kind, task
        self.resume, self.overwrite, self.main = resume, overwrite, main
        self._check_more = check  # the caller's checks, owned but before anything is written
        self._before, self._locked, self._started = set(), False, False
        # what opening the folder did, for the run's log (its loggers are set up later)
        self.notes = []

    # ---- owning the folder ---------------------------------------------------------------
    def __enter__(self):
        if not self.main:
            return self
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(f"{self.path}: is a file; choose a folder for the run's output")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(
                f"{self.path}: cannot be created ({e.strerror or type(e).__name__}); choose a "
                f"folder you can write to"
            ) from None
        self._lock()
        try:
            self._check()
            if self._check_more is not None:
                self._check_more()
            orphans = remove_orphan_temp_files(self.path)
            if orphans:
                self.notes.append(
                    f"removed {orphans} temporary file(s) left in {self.path} by an "
                    f"interrupted save"
                )
            if self.overwrite and self.task == "train" and not self.resume:
                self._clear()
            self._before = listing(self.path)
            if self.task == "train" or read_record(self.path) is None:
                self._record("running" if self.task == "train" else "evaluated")
        except BaseException:
            self._unlock()
            raise
        return self

    def started(self):
        """The run has done a step (or written results): a later failure keeps them."""
        self._started = True

    def __exit__(self, exc_type, exc, tb):
        if not self.main:
            return False
        try:
            if exc_type is not None and not self._started:
                discard_unstarted_run(self.path, self._before)
            elif exc_type is not None:  # never a 0-byte file (a log opened, then the failure)
                for p in self.path.iterdir():
                    if p.name not in self._before and p.is_file() and p.stat().st_size == 0:
                        p.unlink()
            if self.task == "train" and (self.path / RECORD_FILE).is_file():
                status = (
                    "finished"
                    if exc_type is None
                    else "interrupted"
                    if issubclass(exc_type, KeyboardInterrupt)
                    else "failed"
                )
                self._record(status)
        finally:
            self._unlock()
        return False

    def _lock(self):
        lock = self.path / LOCK_FILE
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_stale(lock)
                continue
            except OSError as e:
                raise OutputError(
                    f"{self.path}: cannot be written ({e.strerror or type(e).__name__}); "
                    f"choose a folder you can write to"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._locked = True
            return
        raise OutputError(f"{lock}: could not be taken; another run keeps recreating it")

    def _take_stale(self, lock):
        try:
            owner = json.loads(lock.read_text())
            pid, host = int(owner["pid"]), str(owner["host"])
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(owner["since"])))
        except (OSError, ValueError, KeyError, TypeError):
            owner = None
        if owner is not None and host == socket.gethostname() and not _alive(pid):
            self.notes.append(f"{lock}: its run (pid {pid}) is gone; taking the folder over")
            lock.unlink(missing_ok=True)
            return
        if owner is None:
            raise OutputError(
                f"{lock}: an unreadable lock; if no run writes to {self.path}, delete it"
            )
        where = "this machine" if host == socket.gethostname() else f"host {host}"
        raise OutputError(
            f"{self.path}: in use by another run (pid {pid} on {where}, since {since}); wait "
            f"for it, choose another output folder, or delete {lock.name} if that run is gone"
        )

    def _unlock(self):
        if self._locked:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            self._locked = False

    # ---- what the folder holds -----------------------------------------------------------
    def _check(self):
        record = read_record(self.path)
        kind = record.get("kind") if record else None
        if kind is not None and kind != self.kind:
            raise ConfigError(
                f"{self.path}: holds a {kind} run; a {self.kind} run needs a folder of its "
                f"own (set OUTPUT_DIR / --output)"
            )
        if self.task != "train" or self.resume or self.overwrite:
            return
        status = record.get("status") if record else None
        checkpoints = any(self.path.glob("model_*.pth")) or (self.path / "last_checkpoint").exists()
        legacy = record is None and any((self.path / m).exists() for m in _RUN_MARKERS)
        if status == "finished" or legacy or (status is not None and checkpoints):
            what = {
                "finished": "a finished run",
                None: "the outputs of an earlier run",
                "interrupted": "an interrupted run with checkpoints",
                # its lock is free: the process that wrote "running" was killed
                "running": "a killed run with checkpoints",
            }.get(status, f"a {status} run with checkpoints")
            raise ConfigError(
                f"{self.path}: holds {what}; continue it with --resume (resume=True), replace "
                f"it with --overwrite (overwrite=True), or choose another output folder"
            )

    def _clear(self):
        removed = []
        for pattern in RUN_OUTPUTS:
            for p in self.path.glob(pattern):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(p.name)
        if removed:
            names = ", ".join(sorted(removed))
            self.notes.append(f"--overwrite: removed the earlier run's {names}")

    def _record(self, status):
        path = self.path / RECORD_FILE
        record = read_record(self.path) or {
            "kind": self.kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        record.update(status=status, resdet=__version__, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
        with atomic_write(path, "w") as f:
            json.dump(record, f, indent=1)


def remove_orphan_temp_files(folder) -> int:
    """Remove the ``.<name>.<random>.tmp`` files a killed atomic save left in ``folder``
    (``resdet.io.atomic_write``'s temporary names); returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    orphans = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for p in orphans:
        p.unlink(missing_ok=True)
    return len(orphans)


def discard_unstarted_run(folder, before) -> list:
    """After a run failed before its first iteration: remove what it created in ``folder``
    (files not in ``before``, and its config.yaml unless checkpoints of an earlier run
    are there to describe), keeping the log that says why. Returns the removed names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.iterdir():
        if p.name.startswith("log") or p.name == LOCK_FILE:
            continue
        ours = p.name not in before
        orphan_config = p.name == "config.yaml" and not any(folder.glob("*.pth"))
        if p.is_dir():
            if ours:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
            continue
        if ours or orphan_config:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        logger.info(
            "the run stopped before its first iteration: removed %s from %s",
            ", ".join(sorted(removed)),
            folder,
        )
    return removed

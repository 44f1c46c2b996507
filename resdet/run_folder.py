"""The run folder (OUTPUT_DIR) of both trainers: no leftovers from a killed save, no
half-made folder from a run that never started."""

import logging
import os
from pathlib import Path

__all__ = ["remove_orphan_temp_files", "discard_unstarted_run", "listing"]

logger = logging.getLogger(__name__)


def remove_orphan_temp_files(folder) -> int:
    """Remove the ``.<name>.<random>.tmp`` files a killed atomic save left in ``folder``
    (``resdet.io.atomic_write``'s temporary names); returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    orphans = [p for p in folder.glob(".*.tmp") if p.is_file()]
    for p in orphans:
        p.unlink(missing_ok=True)
    if orphans:
        logger.info(
            "removed %d temporary file(s) left in %s by an interrupted save", len(orphans), folder
        )
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
        if p.name.startswith("log") or not p.is_file():
            continue
        ours = p.name not in before
        orphan_config = p.name == "config.yaml" and not any(folder.glob("*.pth"))
        created = ours or orphan_config
        if created:
            p.unlink(missing_ok=True)
            removed.append(p.name)
    if removed:
        logger.info(
            "the run stopped before its first iteration: removed %s from %s",
            ", ".join(sorted(removed)),
            folder,
        )
    return removed


def listing(folder) -> set:
    """The names in ``folder`` now (empty when it does not exist)."""
    return set(os.listdir(folder)) if os.path.isdir(folder) else set()

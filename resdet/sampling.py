"""Training data whose order and augmentation resume exactly, for both trainers.

Detectron2's TrainingSampler and torch's DistributedSampler are seeded once and cannot
start mid-stream, and data-loader workers draw augmentations from their own generators,
so a resumed run sees other batches than the interrupted one would have. Here:

- :class:`ResumableSampler` is an endless stream of ``(index, seed)`` keys, epoch after
  epoch of DistributedSampler order, that can start at any position;
- every sample's augmentation draws from its own ``seed`` (:func:`seeded`), not from
  the worker's or the main process's generators, so the data is the same with 0 or N
  workers and the training RNG is untouched by loading;
- :class:`ResumableLoader` counts the batches the trainer took and is a checkpointable
  (``{"batches", "seed"}``): on resume the next batch is the one the interrupted run
  would have drawn next.
"""

import random
from contextlib import contextmanager
from itertools import islice

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from .errors import DatasetError

__all__ = ["sample_seed", "seeded", "ResumableSampler", "BatchSampler", "ResumableLoader"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The augmentation seed of one sample in one epoch: independent of workers, batch
    position and resumption, so an interrupted run sees exactly the same crops."""
    return ((seed * 1_000_003 + epoch) * 1_000_033 + index) % (2**63)


@contextmanager
def seeded(seed: int):
    """Run a block with python, numpy and torch (CPU) generators seeded by ``seed``, then
    put the callers' generator states back as they were."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed also queues a lazy seeding of every
        # accelerator, capturing a stack trace each time
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


class ResumableSampler(Sampler):
    """Endless ``(index, seed)`` stream: epoch after epoch of DistributedSampler order
    (shuffled by ``seed + epoch``, sharded by rank, drop_last), from position ``start``."""

    def __init__(self, size: int, *, seed: int, rank: int = 0, world_size: int = 1, start: int = 0):
        if size < world_size:
            raise DatasetError(f"{size} training images cannot be shared by {world_size} processes")
        self.size, self.seed, self.start = size, seed, start
        self.rank, self.world_size = rank, world_size
        self.per_epoch = size // world_size

    def epoch_order(self, epoch: int):
        s = DistributedSampler(
            range(self.size),
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
        )
        s.set_epoch(epoch)
        return s

    def __iter__(self):
        epoch, offset = divmod(self.start, self.per_epoch)
        while True:
            for index in islice(self.epoch_order(epoch), offset, None):
                yield index, sample_seed(self.seed, epoch, index)
            epoch, offset = epoch + 1, 0


class BatchSampler(Sampler):
    """Batches of ``batch_size`` keys of a :class:`ResumableSampler`, from batch ``start``.

    With ``group_ids`` (one small int per dataset index), a batch only holds samples of
    one group, as Detectron2's AspectRatioGroupedDataset does with ``width > height``;
    grouping needs only the ids, so skipping to ``start`` replays it without loading a
    single image.
    """

    def __init__(self, sampler: ResumableSampler, batch_size: int, group_ids=None):
        self.sampler, self.batch_size, self.group_ids = sampler, batch_size, group_ids
        self.start = 0  # batches to skip

    def __iter__(self):
        if self.group_ids is None:
            self.sampler.start = self.start * self.batch_size
            keys = iter(self.sampler)
            while True:
                yield list(islice(keys, self.batch_size))
        self.sampler.start = 0
        yield from islice(self._grouped(), self.start, None)

    def _grouped(self):
        buckets = {}
        for key in self.sampler:
            bucket = buckets.setdefault(self.group_ids[key[0]], [])
            bucket.append(key)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                del bucket[:]


class ResumableLoader:
    """A DataLoader over a :class:`BatchSampler` that remembers how many batches were
    taken from it; a checkpointable. The dataset takes ``(index, seed)`` keys."""

    def __init__(
        self,
        dataset,
        batch_sampler: BatchSampler,
        *,
        num_workers: int = 0,
        collate_fn=None,
        pin_memory: bool = False,
    ):
        self.dataset, self.batch_sampler = dataset, batch_sampler
        self.num_workers, self.collate_fn, self.pin_memory = num_workers, collate_fn, pin_memory
        self.batches = 0

    @property
    def seed(self) -> int:
        return self.batch_sampler.sampler.seed

    def __iter__(self):
        self.batch_sampler.start = self.batches
        # its own generator: creating the loader must not consume the global RNG, or a
        # resumed run (which creates it at another iteration) would draw other numbers
        loader = DataLoader(
            self.dataset,
            batch_sampler=self.batch_sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator(),
        )
        for batch in loader:
            self.batches += 1  # before the trainer uses it: a checkpoint then counts it
            yield batch

    def state_dict(self):
        return {"batches": self.batches, "seed": self.seed}

    def load_state_dict(self, state):
        self.batches = state["batches"]
        self.batch_sampler.sampler.seed = state["seed"]

"""Detectron2's training loader, made resumable (resdet.sampling).

The same dataset dicts, DatasetMapper, batch size and aspect-ratio grouping as
``detectron2.data.build_detection_train_loader`` with DATALOADER.SAMPLER_TRAIN
"TrainingSampler"; what differs is that the order can start at any batch and each
sample's augmentation draws from its own seed, so ``--resume`` continues with the very
batches the interrupted run would have seen. Other samplers keep Detectron2's loader
(their data order then does not resume exactly; a warning says so).
"""

import logging
import random

from detectron2.data import DatasetMapper, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm
from PIL import Image
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetError
from ..sampling import BatchSampler, ResumableLoader, ResumableSampler, seeded

__all__ = ["build_train_loader", "resumable_loader", "SeededMapDataset"]

logger = logging.getLogger(__name__)


class SeededMapDataset(Dataset):
    """``mapper(dataset[index])`` for an ``(index, seed)`` key, with the mapper's random
    augmentations drawn from ``seed``. A mapper that returns None (a sample it cannot use)
    is asked for other samples picked by the same seed, as Detectron2's MapDataset does
    with its own (not resumable) generator."""

    def __init__(self, dataset, mapper, retries: int = 10):
        self.dataset, self.mapper, self.retries = dataset, mapper, retries

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        rng = random.Random(seed)
        first = self.dataset[index].get("file_name")
        for _ in range(self.retries):
            with seeded(seed):
                data = self.mapper(self.dataset[index])
            if data is not None:
                return data
            index = rng.randrange(len(self.dataset))
        raise DatasetError(
            f"{first}: could not be used, nor {self.retries - 1} samples tried in its "
            "place (unreadable images?); check the training images the log names"
        )


def _orientation_swaps(path) -> bool:
    with Image.open(path) as img:
        return img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF rotations by 90 degrees


def _wide(d) -> bool:
    """Detectron2's grouping key, width > height (after EXIF rotation, as read_image)."""
    if "width" in d and "height" in d:
        return d["width"] > d["height"]
    with Image.open(d["file_name"]) as img:
        w, h = img.size
    return (h > w) if _orientation_swaps(d["file_name"]) else (w > h)


def build_train_loader(cfg, mapper=None):
    """The training loader of ``cfg``: a checkpointable ResumableLoader for the
    TrainingSampler, Detectron2's own loader for any other DATALOADER.SAMPLER_TRAIN."""
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        logger.warning(
            "DATALOADER.SAMPLER_TRAIN %s: the data order of a resumed run will differ "
            "from an uninterrupted one (only TrainingSampler resumes exactly)",
            cfg.DATALOADER.SAMPLER_TRAIN,
        )
        return build_detection_train_loader(cfg, mapper=mapper)
    try:
        dicts = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            min_keypoints=(
                cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
            ),
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
    except AssertionError:  # Detectron2's "No valid data found in ..."
        from detectron2.data import MetadataCatalog

        sources = [
            MetadataCatalog.get(n).get("json_file") or MetadataCatalog.get(n).get("dirname") or n
            for n in cfg.DATASETS.TRAIN
        ]
        raise DatasetError(
            f"{', '.join(map(str, sources))}: no training image has an annotated box "
            "(DATALOADER.FILTER_EMPTY_ANNOTATIONS drops images without one); nothing "
            "to train on"
        ) from None
    return resumable_loader(
        dicts,
        mapper if mapper is not None else DatasetMapper(cfg, True),
        cfg.SOLVER.IMS_PER_BATCH,
        seed=cfg.SEED,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
    )


def resumable_loader(
    dicts, mapper, total_batch_size, *, seed=-1, num_workers=0, aspect_ratio_grouping=True
):
    """``build_detection_train_loader(dataset, mapper=..., total_batch_size=...)`` with the
    TrainingSampler's order, resumable: the loader both config systems train from."""
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world:
        raise ConfigError(
            f"the total batch size {total_batch_size} (SOLVER.IMS_PER_BATCH) must be "
            f"a positive multiple of the {world} process(es)"
        )
    groups = [int(_wide(d)) for d in dicts] if aspect_ratio_grouping else None
    seed = seed if seed >= 0 else comm.shared_random_seed()
    sampler = ResumableSampler(len(dicts), seed=seed, rank=comm.get_rank(), world_size=world)
    dataset = SeededMapDataset(DatasetFromList(dicts, copy=False), mapper)
    batches = BatchSampler(sampler, total_batch_size // world, groups)
    return ResumableLoader(
        dataset, batches, num_workers=num_workers, collate_fn=trivial_batch_collator
    )

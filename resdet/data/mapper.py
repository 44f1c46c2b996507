"""The training mapper: Detectron2's DatasetMapper reading images with resdet's reader, and
a wrapper that skips an image that fails to decode mid-run, and counts it.

Every image's header is checked when the dataset loads (``check_image_file``), so a run
whose images are unreadable stops before it starts; what can still fail is a file cut off
after its header, or one damaged while the run goes on. One such file must not kill a
week-long run: the mapper returns None, Detectron2's MapDataset then maps another image,
and the skip is logged with the file name.
"""

import copy
import logging

import numpy as np
import torch
from detectron2.data import DatasetMapper as Detectron2DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image import BAD_IMAGE_ERRORS, read_image

__all__ = ["DatasetMapper", "SkipUnreadable"]

logger = logging.getLogger(__name__)


class DatasetMapper(Detectron2DatasetMapper):
    """Detectron2's DatasetMapper (same arguments, same output) whose images are read by
    :func:`resdet.data.read_image`: 16-bit images scaled instead of read as white, a
    decompression bomb a DatasetError naming the file. Detectron2 reads the image inside
    ``__call__`` with no hook to replace it, so this is its ``__call__`` (0.7) with that
    one call changed."""

    @classmethod
    def like(cls, mapper: Detectron2DatasetMapper) -> "DatasetMapper":
        """This mapper with the settings of a Detectron2 DatasetMapper."""
        new = cls.__new__(cls)
        new.__dict__.update(vars(mapper))
        return new

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        if "sem_seg_file_name" in dataset_dict:
            sem_seg_gt = read_image(dataset_dict.pop("sem_seg_file_name"), "L").squeeze(2)
        else:
            sem_seg_gt = None
        aug_input = T.AugInput(image, sem_seg=sem_seg_gt)
        transforms = self.augmentations(aug_input)
        image, sem_seg_gt = aug_input.image, aug_input.sem_seg
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if sem_seg_gt is not None:
            dataset_dict["sem_seg"] = torch.as_tensor(sem_seg_gt.astype("long"))
        if self.proposal_topk is not None:
            utils.transform_proposals(
                dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk
            )
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            dataset_dict.pop("sem_seg_file_name", None)
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict


class SkipUnreadable:
    """``mapper(record)``, or None (logged with the file name and counted) when the image
    cannot be used. A Detectron2 DatasetMapper given here is replaced by resdet's
    :class:`DatasetMapper` with its settings, so the trainer's images are read by
    resdet's reader."""

    def __init__(self, mapper):
        if type(mapper) is Detectron2DatasetMapper:
            mapper = DatasetMapper.like(mapper)
        self.mapper = mapper
        self.skipped = 0  # in this process (each loader worker has its own copy)

    def __call__(self, record):
        try:
            return self.mapper(record)
        except BAD_IMAGE_ERRORS as e:
            self.skipped += 1
            logger.warning(
                "skipping unreadable image %s (%s: %s); %d skipped in this worker",
                record.get("file_name"),
                type(e).__name__,
                e,
                self.skipped,
            )
            return None

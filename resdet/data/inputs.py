"""A detector's test-time input, made the one way DefaultPredictor makes it."""

import numpy as np
import torch

__all__ = ["model_input"]


def model_input(image, augmentation) -> dict:
    """``{"image": CHW float tensor, "height", "width"}`` for a GeneralizedRCNN from an
    HWC uint8 array in the model's channel order: DefaultPredictor's steps (the test
    resize applied with ``augmentation.get_transform``, the original size kept so the
    model rescales its boxes to it)."""
    from detectron2.data import transforms as T

    height, width = image.shape[:2]
    aug_input = T.AugInput(image)
    augmentation(aug_input)
    resized = aug_input.image
    tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
    return {"image": tensor, "height": height, "width": width}

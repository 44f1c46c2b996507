"""Reading image files: one opener and one reader for detection, pretraining and tools.

What Detectron2's ``detection_utils.read_image`` and a bare ``Image.open(...).convert("RGB")``
get wrong, and what is done here instead:

- More than 8 bits per channel: PIL opens a 16-bit grayscale PNG or TIFF as mode ``I;16``
  and ``convert("RGB")`` clips it, so the image reads as white. Such images are scaled to
  8 bits by their high byte (the rule PIL already applies to 16-bit RGB PNGs and
  torchvision's ``to_dtype(..., scale=True)`` to uint16 tensors, so every path gives the
  same pixels). Mode ``I`` (32-bit integers; PIL's mode for 16-bit PGM/PPM) is scaled as
  16-bit when its values fit 0..65535, mode ``F`` (32-bit float) from [0, 1]; other
  values have no known white level and are refused.
- Decompression bombs: PIL raises ``DecompressionBombError`` above twice
  ``PIL.Image.MAX_IMAGE_PIXELS`` and only warns above it; both become a one-line
  :class:`~resdet.errors.DatasetError` naming the file.

EXIF orientation is applied as Detectron2 applies it.
"""

import contextlib
import os
import warnings

import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from PIL import ExifTags, Image, ImageOps

from ..errors import DatasetError

__all__ = ["BAD_IMAGE_ERRORS", "open_image", "to_8_bit", "read_image"]

# what PIL, Detectron2's mapper and this module raise for a file that cannot be used
# (truncated, corrupt, not an image, a bomb, a size that differs from its record); a
# long run skips and counts such a file instead of dying (DatasetError is a ValueError)
BAD_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@contextlib.contextmanager
def open_image(path):
    """``Image.open(path)`` (the header only, nothing decoded yet) that turns a
    decompression bomb, refused or only warned about by PIL, into a DatasetError."""
    path = os.fspath(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise DatasetError(
                f"{path}: {str(e).rstrip('.')} (PIL.Image.MAX_IMAGE_PIXELS ="
                f" {Image.MAX_IMAGE_PIXELS}); downscale the image, or raise that limit if"
                " the image is genuine"
            ) from None
    with img:
        yield img


def to_8_bit(img, path):
    """``img`` with 8 bits per channel: modes of 16 or 32 bits per pixel scaled to ``L``
    (see the module docstring), any other mode unchanged."""
    if img.mode.startswith("I;16"):
        a = np.asarray(img).astype(np.uint16) >> 8
    elif img.mode == "I":
        a = np.asarray(img)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise DatasetError(
                f"{os.fspath(path)}: 32-bit integer pixels from {a.min()} to {a.max()} have no"
                " known white level (0..65535 would be read as 16-bit); convert the image to"
                " 8 or 16 bits per channel"
            )
        a = a.astype(np.uint16) >> 8
    elif img.mode == "F":
        a = np.asarray(img)
        if not (np.isfinite(a).all() and (a.size == 0 or (a.min() >= 0 and a.max() <= 1))):
            raise DatasetError(
                f"{os.fspath(path)}: 32-bit float pixels outside [0, 1] (from {np.nanmin(a)}"
                f" to {np.nanmax(a)}) have no known white level; convert the image to 8 or"
                " 16 bits per channel"
            )
        a = np.round(a * 255)
    else:
        return img
    return Image.fromarray(a.astype(np.uint8), "L")


def read_image(path, format="RGB"):
    """An image file as an HWC uint8 array, like Detectron2's
    ``detection_utils.read_image(path, format)`` (EXIF orientation applied; ``format``
    "RGB", "BGR", "L" or another PIL mode), with more than 8 bits per channel scaled and
    decompression bombs refused (see the module docstring). Raises FileNotFoundError,
    PIL's errors for unreadable files, or DatasetError."""
    with open_image(path) as img:
        if img.getexif().get(ExifTags.Base.Orientation, 1) != 1:  # else no copy
            img = ImageOps.exif_transpose(img)
        return convert_PIL_to_numpy(to_8_bit(img, path), format)

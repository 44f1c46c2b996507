"""A training mapper that skips an image that fails to decode mid-run, and counts it.

Every image's header is checked when the dataset loads (``check_image_file``), so a run
whose images are unreadable stops before it starts; what can still fail is a file cut off
after its header, or one damaged while the run goes on. One such file must not kill a
week-long run: the mapper returns None, Detectron2's MapDataset then maps another image,
and the skip is logged with the file name.
"""

import logging

from PIL import Image

__all__ = ["SkipUnreadable"]

logger = logging.getLogger(__name__)

# what PIL and Detectron2's read_image raise for truncated or corrupt files
BAD_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class SkipUnreadable:
    def __init__(self, mapper):
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

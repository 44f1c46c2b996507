"""Class-folder datasets for pretraining: layout checks, fast decoding, bad-image skipping,
and a sampler whose order resumes exactly.

Layout: ``ROOT/<split>/<class>/<image>`` (ImageNet after ``datasets/prepare_imagenet.py``,
any torchvision ImageFolder tree, CIFAR-10 as class folders). Problems a run cannot
recover from (missing folder, empty class, a validation class unknown to training) stop
it at start with one line naming the folder; an unreadable image found mid-run is skipped,
logged and counted instead, because one bad file must not kill a week-long run.
"""

import logging
import os
import random
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torch.utils.data.dataloader import default_collate
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2.functional import pil_to_tensor, to_dtype

from ..data.image import BAD_IMAGE_ERRORS, open_image, to_8_bit
from ..errors import DatasetError
from ..sampling import ResumableSampler, sample_seed, seeded  # noqa: F401 (shared with detection)

__all__ = [
    "load_splits",
    "load_image",
    "decode_tensor",
    "ClassFolder",
    "ResumableSampler",
    "collate_skip_bad",
    "sample_seed",
    "check_readable",
]

logger = logging.getLogger(__name__)


def _split_dir(root, split) -> Path:
    d = Path(root) / split
    if not d.is_dir():
        raise DatasetError(
            f"{d}: no such folder (expected the class-folder layout {root}/{split}/<class>/<image>)"
        )
    return d


def _check_no_link_loop(folder: Path):
    """Refuse a symbolic link to a folder that encloses it: torchvision's make_dataset
    follows links, so such a loop lists the images again under every level of the loop
    (a link to the split folder puts every class's images into this one) or, with a few
    such links, never ends."""
    chain = {}  # folder as walked -> real paths of it and of the walked folders around it
    for root, dirs, _ in os.walk(folder, followlinks=True):
        here = os.path.realpath(root)
        chain[root] = chain.get(os.path.dirname(root), frozenset()) | {here}
        for d in dirs:
            target = os.path.realpath(os.path.join(root, d))
            # a walked folder around it, or one around it on disk (the split folder, /)
            if target in chain[root] or here.startswith(target.rstrip(os.sep) + os.sep):
                raise DatasetError(
                    f"{os.path.join(root, d)}: a symbolic link back to {target}, a folder"
                    " around it; its images would be listed again and again: remove the link"
                )


def _scan(split_dir: Path, class_to_idx):
    for name in class_to_idx:
        _check_no_link_loop(split_dir / name)
    samples = make_dataset(
        str(split_dir), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True
    )
    found = {label for _, label in samples}
    for name, idx in class_to_idx.items():
        if idx not in found:
            raise DatasetError(
                f"{split_dir / name}: class folder has no images ({', '.join(IMG_EXTENSIONS)})"
            )
    return samples


def _class_folders(split_dir: Path):
    names = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not names:
        raise DatasetError(f"{split_dir}: no class folders (expected {split_dir}/<class>/<image>)")
    return names


def load_splits(cfg):
    """Check the dataset of ``cfg`` and list it: ``(classes, train_samples, val_samples)``.

    Samples are ``(path, label)`` with labels indexing the sorted training classes; the
    validation split may hold a subset of them, never a class training lacks.
    """
    d = cfg.PRETRAIN.DATA
    train_dir = _split_dir(d.ROOT, d.TRAIN_SPLIT)
    val_dir = _split_dir(d.ROOT, d.VAL_SPLIT)
    classes = _class_folders(train_dir)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    val_classes = _class_folders(val_dir)
    unknown = [c for c in val_classes if c not in class_to_idx]
    if unknown:
        raise DatasetError(
            f"{val_dir / unknown[0]}: validation class {unknown[0]!r} has no training "
            f"folder in {train_dir} ({len(unknown)} such class(es))"
        )
    train = _scan(train_dir, class_to_idx)
    val = _scan(val_dir, {c: class_to_idx[c] for c in val_classes})
    return classes, train, val


def load_image(path, min_side=None) -> Image.Image:
    """Decode to RGB; JPEGs decode at the largest 1/2, 1/4, 1/8 reduction (libjpeg's DCT
    scaling via PIL draft mode) whose shorter side still is at least ``min_side``. More
    than 8 bits per channel are scaled, a decompression bomb is a DatasetError
    (resdet.data.image)."""
    with open_image(path) as img:
        if min_side:
            img.draft("RGB", (min_side, min_side))
        return to_8_bit(img, path).convert("RGB")


def decode_tensor(path, reduce: int = 1) -> torch.Tensor:
    """Decode to a uint8 RGB (3, H, W) tensor, the input of the fast training transforms.

    ``reduce`` 1: torchvision.io (libjpeg-turbo/libpng straight into a tensor; the same
    pixels as PIL, faster); a 16-bit PNG, which it decodes to uint16, is scaled to 8 bits
    as :func:`load_image` scales it. 2, 4 or 8: a JPEG decodes at 1/reduce of its size in
    the DCT domain (PIL draft), several times cheaper than decoding in full and resizing.
    Formats torchvision.io lacks (BMP, TIFF, ...) and corrupt files go through PIL, whose
    error then names the problem. The header is read by PIL first either way: torchvision
    has no decompression-bomb limit.
    """
    with open_image(path) as img:
        if reduce == 1:
            try:
                return to_dtype(
                    decode_image(read_file(str(path)), mode=ImageReadMode.RGB),
                    torch.uint8,
                    scale=True,
                )
            except RuntimeError:
                pass
        if reduce > 1:
            img.draft("RGB", (max(img.width // reduce, 1), max(img.height // reduce, 1)))
        return pil_to_tensor(to_8_bit(img, path).convert("RGB"))


class ClassFolder(Dataset):
    """(path, label) samples -> (tensor, label), or None for an unreadable image.

    An item key may be ``(index, seed)`` (from :class:`ResumableSampler`): the transform
    then draws its randomness from ``seed`` without touching the global RNG.
    ``decode=False`` hands the transform the path instead of a PIL image, for transforms
    that decode themselves (``build_train_transform(cfg, from_path=True)``).
    """

    def __init__(self, samples, transform, decode_size=None, decode=True):
        self.samples = samples
        self.transform = transform
        self.decode_size = decode_size
        self.decode = decode

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        try:
            return self.load(index, seed), self.samples[index][1]
        except BAD_IMAGE_ERRORS as e:
            logger.warning(
                "skipping unreadable image %s: %s", self.samples[index][0], _first_line(e)
            )
            return None

    def load(self, index, seed=None):
        """The transformed image of sample ``index``; raises what decoding raises."""
        path = self.samples[index][0]
        img = load_image(path, self.decode_size) if self.decode else path
        if seed is None:
            return self.transform(img)
        with seeded(seed):
            return self.transform(img)


def _first_line(e) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def check_readable(
    dataset: ClassFolder, folder, tries: int = 1000, seed: int = 0, what: str = "training"
) -> int:
    """Stop at start, with a DatasetError, when none of ``tries`` images of ``dataset``
    (in random order) can be read: skipping unreadable images mid-run must not turn a
    set of unreadable files into an endless loop. Returns the index of a readable one."""
    order = list(range(len(dataset)))
    random.Random(seed).shuffle(order)
    first_error = None
    for index in order[:tries]:
        try:
            dataset.load(index, seed=0)  # seeded: the global RNG stays untouched
            return index
        except BAD_IMAGE_ERRORS as e:
            first_error = first_error or f"{dataset.samples[index][0]}: {_first_line(e)}"
    tried = min(tries, len(order))
    raise DatasetError(
        f"{folder}: none of the {tried} {what} images tried can be read "
        f"({first_error}); check the files of the dataset"
    )


def collate_skip_bad(batch):
    """Collate the readable samples: ``(images, labels, num_bad)``; images is a list when
    samples are lists (multi-scale testing), ``(None, None, n)`` when all were bad."""
    good = [b for b in batch if b is not None]
    num_bad = len(batch) - len(good)
    if not good:
        return None, None, num_bad
    labels = torch.tensor([b[1] for b in good])
    if isinstance(good[0][0], list):
        return [b[0] for b in good], labels, num_bad
    return default_collate([b[0] for b in good]), labels, num_bad

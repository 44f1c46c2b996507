"""The recipes' image transforms, all torchvision.transforms.v2 on PIL images or tensors.

Pixels stay on the 0..255 scale and are normalised with MODEL.PIXEL_MEAN / PIXEL_STD
(RGB), so the numbers recorded in the checkpoint are exactly what the network saw and
the detector can reproduce them. Hand-written are only what no library ships: the
AlexNet PCA lighting noise of the paper's recipe, and decoding no more JPEG pixels than
a random crop needs (:class:`DecodeRandomResizedCrop`).

The fast training path (``build_train_transform(cfg, from_path=True)``) decodes with
torchvision.io into uint8 tensors, augments them as uint8 and leaves normalisation to
``build_batch_normalize(cfg)`` on whole batches, on the training device.
"""

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .data import decode_tensor

__all__ = [
    "Lighting",
    "DecodeImage",
    "DecodeRandomResizedCrop",
    "build_train_transform",
    "build_test_transform",
    "build_batch_transform",
    "build_batch_normalize",
    "train_decode_size",
    "test_decode_size",
    "TRAIN_CROPS",
    "TEST_MODES",
]

JPEG_REDUCTIONS = (8, 4, 2)  # the DCT scalings libjpeg offers


def _reduction(header: Image.Image, need_h: int, need_w: int, box_h: int, box_w: int) -> int:
    """Largest JPEG reduction that keeps a ``box_h x box_w`` region at least ``need_h x need_w``."""
    if header.format != "JPEG":
        return 1
    return next((r for r in JPEG_REDUCTIONS if box_h >= need_h * r and box_w >= need_w * r), 1)


class DecodeImage:
    """Path -> uint8 RGB tensor image, reduced-size JPEG decoding while the shorter side
    stays at least ``min_side`` (None: full size)."""

    def __init__(self, min_side=None):
        self.min_side = min_side

    def __call__(self, path):
        reduce = 1
        if self.min_side:
            with Image.open(path) as header:
                short = min(header.size)
                reduce = _reduction(header, self.min_side, self.min_side, short, short)
        return tv_tensors.Image(decode_tensor(path, reduce))

    def __repr__(self):
        return f"DecodeImage(min_side={self.min_side})"


class DecodeRandomResizedCrop(v2.RandomResizedCrop):
    """Path -> RandomResizedCrop of the image, decoding no more pixels than the crop needs.

    The crop box is drawn from the header's size — the very draw v2.RandomResizedCrop
    makes on the decoded image, so a seed gives the same box either way — and only then
    does the JPEG decode, at the largest DCT reduction that keeps the box at least the
    output size on both sides. The resize that follows still only shrinks, so unlike a
    fixed "decode to the crop size" shortcut no crop gets upsampled from a coarse decode.
    """

    def forward(self, path):
        with Image.open(path) as header:
            width, height = header.size
            p = self.make_params([header])
            reduce = _reduction(header, self.size[0], self.size[1], p["height"], p["width"])
        img = decode_tensor(path, reduce)
        # the box in decoded pixels, edges rounded (off by at most half a reduced pixel)
        sy, sx = img.shape[-2] / height, img.shape[-1] / width
        top, left = round(p["top"] * sy), round(p["left"] * sx)
        h = max(1, min(round((p["top"] + p["height"]) * sy), img.shape[-2]) - top)
        w = max(1, min(round((p["left"] + p["width"]) * sx), img.shape[-1]) - left)
        return tv_tensors.Image(
            TF.resized_crop(
                img, top, left, h, w, self.size, self.interpolation, antialias=self.antialias
            )
        )


TRAIN_CROPS = ("scale", "resized_crop", "pad")
TEST_MODES = ("1crop", "10crop", "multiscale")


class Lighting:
    """AlexNet-style PCA colour noise (Krizhevsky et al. 2012, used by the paper, Sec. 3.4).

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, std) per image and
    component. Eigen-decomposition of ImageNet RGB covariance (0..1 scale, as in
    fb.resnet.torch), applied here to 0..255 pixels before normalisation.
    """

    EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
    EIGVEC = torch.tensor(
        [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]]
    )

    def __init__(self, std: float):
        self.std = std

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        rgb = (self.EIGVEC @ (alpha * self.EIGVAL)) * 255.0
        return img + rgb.view(3, 1, 1).to(img.dtype)

    def __repr__(self):
        return f"Lighting(std={self.std})"


def _normalize(cfg) -> v2.Normalize:
    if cfg.INPUT.FORMAT != "RGB":
        raise ValueError(
            f"INPUT.FORMAT={cfg.INPUT.FORMAT!r} is not supported for pretraining; allowed: RGB"
        )
    return v2.Normalize(list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD))


def _to_normalized_tensor(cfg, lighting: float = 0.0):
    ops = [v2.ToImage(), v2.ToDtype(torch.float32, scale=False)]
    if lighting > 0:
        ops.append(Lighting(lighting))
    return ops + [_normalize(cfg)]


def build_train_transform(cfg, from_path: bool = False) -> v2.Compose:
    """PIL image -> normalised float tensor of side INPUT.CROP_SIZE, per PRETRAIN.AUG.

    ``from_path=True``: the fast form, for ``ClassFolder(..., decode=False)``: file path ->
    uint8 tensor (float, not normalised, with PCA lighting); the same random draws, so
    the same crops, as the PIL form. Normalise its batches with :func:`build_batch_normalize`.
    """
    aug, crop = cfg.PRETRAIN.AUG, cfg.INPUT.CROP_SIZE
    decode = [DecodeImage(train_decode_size(cfg))] if from_path else []
    if aug.TRAIN_CROP == "scale":  # paper: shorter side in [lo, hi], random crop
        lo, hi = aug.SHORT_SIDE_RANGE
        ops = decode + [v2.RandomResize(lo, hi + 1), v2.RandomCrop(crop, pad_if_needed=True)]
    elif aug.TRAIN_CROP == "resized_crop":
        rrc = DecodeRandomResizedCrop if from_path else v2.RandomResizedCrop
        ops = [rrc(crop, scale=tuple(aug.RRC_SCALE), antialias=True)]
    elif aug.TRAIN_CROP == "pad":  # paper, CIFAR: 4-pixel pad, random crop
        ops = decode + [v2.RandomCrop(crop, padding=aug.PAD, pad_if_needed=True)]
    else:
        raise ValueError(
            f"PRETRAIN.AUG.TRAIN_CROP={aug.TRAIN_CROP!r} is not supported; allowed:"
            f" {', '.join(TRAIN_CROPS)}"
        )
    if aug.FLIP:
        ops.append(v2.RandomHorizontalFlip())
    if aug.TRIVIAL_AUGMENT:
        ops.append(v2.TrivialAugmentWide())
    if not from_path:
        return v2.Compose(ops + _to_normalized_tensor(cfg, aug.PCA_LIGHTING))
    _normalize(cfg)  # refuse a non-RGB format here too, not only when batches get normalised
    if aug.PCA_LIGHTING > 0:
        ops += [v2.ToDtype(torch.float32, scale=False), Lighting(aug.PCA_LIGHTING)]
    return v2.Compose(ops)


def build_batch_normalize(cfg) -> v2.Compose:
    """(N, 3, H, W) uint8 or float batch -> normalised float: the last step of the fast
    training path, one vectorised op per batch on the device instead of one per image.

    Normalises in place (a float32 batch is overwritten): a uint8 batch then needs one
    new buffer, not two, which halves the cost of this step on a CPU.
    """
    norm = _normalize(cfg)
    return v2.Compose(
        [v2.ToDtype(torch.float32, scale=False), v2.Normalize(norm.mean, norm.std, inplace=True)]
    )


def _stack(crops):
    return torch.stack(list(crops))


class _MultiScale:
    """One normalised tensor per shorter side in ``scales`` (whole image, no crop)."""

    def __init__(self, scales, to_tensor):
        self.resizes = [v2.Resize(s, antialias=True) for s in scales]
        self.to_tensor = v2.Compose(to_tensor)

    def __call__(self, img):
        return [self.to_tensor(r(img)) for r in self.resizes]


def build_test_transform(cfg, mode: str = "1crop"):
    """1crop -> (C,H,W); 10crop -> (10,C,H,W); multiscale -> list of (C,H_s,W_s)."""
    crop, size = cfg.INPUT.CROP_SIZE, cfg.INPUT.TEST_SIZE
    if mode == "1crop":
        return v2.Compose(
            [v2.Resize(size, antialias=True), v2.CenterCrop(crop)] + _to_normalized_tensor(cfg)
        )
    if mode == "10crop":
        return v2.Compose(
            [v2.Resize(size, antialias=True), v2.TenCrop(crop)]
            + _to_normalized_tensor(cfg)
            + [_stack]
        )
    if mode == "multiscale":
        return _MultiScale(cfg.PRETRAIN.TEST.SCALES, _to_normalized_tensor(cfg))
    raise ValueError(f"test mode {mode!r} is not supported; allowed: {', '.join(TEST_MODES)}")


def build_batch_transform(cfg, num_classes: int):
    """MixUp and/or CutMix on whole batches (one of them chosen per batch), or None."""
    aug = cfg.PRETRAIN.AUG
    ops = []
    if aug.MIXUP_ALPHA > 0:
        ops.append(v2.MixUp(alpha=aug.MIXUP_ALPHA, num_classes=num_classes))
    if aug.CUTMIX_ALPHA > 0:
        ops.append(v2.CutMix(alpha=aug.CUTMIX_ALPHA, num_classes=num_classes))
    if not ops:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


def train_decode_size(cfg):
    """Smallest shorter side a training JPEG must keep when decoded at reduced size.

    "scale" resizes the shorter side to at most SHORT_SIDE_RANGE[1], so decoding at that
    size loses nothing; "resized_crop" keeps CROP_SIZE (small crop regions are then
    upsampled from a coarser decode, the usual fast-loader trade-off); "pad" (CIFAR-size
    images) decodes in full.
    """
    aug = cfg.PRETRAIN.AUG
    if aug.TRAIN_CROP == "scale":
        return aug.SHORT_SIDE_RANGE[1]
    if aug.TRAIN_CROP == "resized_crop":
        return cfg.INPUT.CROP_SIZE
    return None


def test_decode_size(cfg, mode: str):
    return max(cfg.PRETRAIN.TEST.SCALES) if mode == "multiscale" else cfg.INPUT.TEST_SIZE

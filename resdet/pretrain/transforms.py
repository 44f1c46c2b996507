"""The recipes' image transforms, all torchvision.transforms.v2 on PIL images.

Pixels stay on the 0..255 scale and are normalised with MODEL.PIXEL_MEAN / PIXEL_STD
(RGB), so the numbers recorded in the checkpoint are exactly what the network saw and
the detector can reproduce them. The only hand-written piece is the AlexNet PCA
lighting noise of the paper's recipe, which no library ships.
"""
import torch
from torchvision.transforms import v2

__all__ = ["Lighting", "build_train_transform", "build_test_transform", "build_batch_transform",
           "train_decode_size", "test_decode_size", "TRAIN_CROPS", "TEST_MODES"]

TRAIN_CROPS = ("scale", "resized_crop", "pad")
TEST_MODES = ("1crop", "10crop", "multiscale")


class Lighting:
    """AlexNet-style PCA colour noise (Krizhevsky et al. 2012, used by the paper, Sec. 3.4).

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, alpha ~ N(0, std) per image and
    component. Eigen-decomposition of ImageNet RGB covariance (0..1 scale, as in
    fb.resnet.torch), applied here to 0..255 pixels before normalisation.
    """

    EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
    EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                           [-0.5808, -0.0045, -0.8140],
                           [-0.5836, -0.6948, 0.4203]])

    def __init__(self, std: float):
        self.std = std

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * self.std
        rgb = (self.EIGVEC @ (alpha * self.EIGVAL)) * 255.0
        return img + rgb.view(3, 1, 1).to(img.dtype)

    def __repr__(self):
        return f"Lighting(std={self.std})"


def _to_normalized_tensor(cfg, lighting: float = 0.0):
    if cfg.INPUT.FORMAT != "RGB":
        raise ValueError(f"INPUT.FORMAT={cfg.INPUT.FORMAT!r} is not supported for pretraining; allowed: RGB")
    ops = [v2.ToImage(), v2.ToDtype(torch.float32, scale=False)]
    if lighting > 0:
        ops.append(Lighting(lighting))
    ops.append(v2.Normalize(list(cfg.MODEL.PIXEL_MEAN), list(cfg.MODEL.PIXEL_STD)))
    return ops


def build_train_transform(cfg) -> v2.Compose:
    """PIL image -> normalised float tensor of side INPUT.CROP_SIZE, per PRETRAIN.AUG."""
    aug, crop = cfg.PRETRAIN.AUG, cfg.INPUT.CROP_SIZE
    if aug.TRAIN_CROP == "scale":  # paper: shorter side in [lo, hi], random crop
        lo, hi = aug.SHORT_SIDE_RANGE
        ops = [v2.RandomResize(lo, hi + 1), v2.RandomCrop(crop, pad_if_needed=True)]
    elif aug.TRAIN_CROP == "resized_crop":
        ops = [v2.RandomResizedCrop(crop, scale=tuple(aug.RRC_SCALE), antialias=True)]
    elif aug.TRAIN_CROP == "pad":  # paper, CIFAR: 4-pixel pad, random crop
        ops = [v2.RandomCrop(crop, padding=aug.PAD, pad_if_needed=True)]
    else:
        raise ValueError(f"PRETRAIN.AUG.TRAIN_CROP={aug.TRAIN_CROP!r} is not supported; allowed: {', '.join(TRAIN_CROPS)}")
    if aug.FLIP:
        ops.append(v2.RandomHorizontalFlip())
    if aug.TRIVIAL_AUGMENT:
        ops.append(v2.TrivialAugmentWide())
    return v2.Compose(ops + _to_normalized_tensor(cfg, aug.PCA_LIGHTING))


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
        return v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(crop)] + _to_normalized_tensor(cfg))
    if mode == "10crop":
        return v2.Compose([v2.Resize(size, antialias=True), v2.TenCrop(crop)]
                          + _to_normalized_tensor(cfg) + [_stack])
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

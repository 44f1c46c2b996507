"""The fast pretraining input path (torchvision.io decoding, crop box before decoding,
reduced-size JPEG decoding, uint8 augmentation, normalisation per batch) changes speed,
not what the network sees: it is checked here against the PIL path, image by image, on
real ImageNet JPEGs, with the tolerances stated in each test."""

import pytest
import torch
from conftest import REPO
from torchvision.transforms import v2
from torchvision.transforms.v2.functional import pil_to_tensor

from resdet.pretrain import get_pretrain_cfg
from resdet.pretrain.data import ClassFolder, collate_skip_bad, decode_tensor, load_image
from resdet.pretrain.transforms import (
    DecodeRandomResizedCrop,
    _to_normalized_tensor,
    build_batch_normalize,
    build_train_transform,
)


@pytest.fixture(scope="module")
def jpegs(shared_data):
    return sorted((shared_data / "imagenet-sample").glob("*.JPEG"))[:24]


def _cfg(crop, *opts):
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(str(REPO / "configs/imagenet/r50_modern.yaml"))
    cfg.merge_from_list(["INPUT.CROP_SIZE", crop, "PRETRAIN.AUG.TRIVIAL_AUGMENT", False, *opts])
    return cfg


def test_torchvision_io_decodes_the_same_pixels_as_pil(jpegs):
    for f in jpegs[:8]:
        assert torch.equal(decode_tensor(f), pil_to_tensor(load_image(f))), f.name


def test_reduced_decoding_has_the_reduced_size_and_content(jpegs):
    f = max(jpegs, key=lambda p: min(load_image(p).size))
    full = decode_tensor(f).float()
    half = decode_tensor(f, 2).float()
    h, w = full.shape[-2:]
    assert half.shape[-2:] == ((h + 1) // 2, (w + 1) // 2)
    # the DCT-domain half-size image vs a 2x2 box average of the full decode: < 3 grey levels
    # on average
    box = torch.nn.functional.avg_pool2d(full[None, :, : h // 2 * 2, : w // 2 * 2], 2)[0]
    assert (box - half[:, : h // 2, : w // 2]).abs().mean() < 3.0


@pytest.mark.parametrize("crop,tolerance", [(224, 1.0), (64, 4.0)])
def test_fast_train_transform_matches_the_pil_path(jpegs, crop, tolerance):
    """Same seed -> same crop box and flip. Mean absolute difference over the images, in
    grey levels: < 1 at 224 px (torch's vs PIL's antialiased resize only); < 4 at 64 px,
    where most boxes decode at 1/2..1/8 scale (DCT scaling instead of resize filtering,
    box edges within half a reduced pixel)."""
    cfg = _cfg(crop)
    slow, fast = build_train_transform(cfg), build_train_transform(cfg, from_path=True)
    normalize, std = build_batch_normalize(cfg), torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    diffs, reduced = [], 0
    for i, f in enumerate(jpegs):
        torch.manual_seed(i)
        a = slow(load_image(f))
        torch.manual_seed(i)
        b = fast(f)
        assert b.dtype == torch.uint8 and b.shape == a.shape
        diffs.append(((a - normalize(b[None])[0]) * std).abs().mean())
        torch.manual_seed(i)
        box = DecodeRandomResizedCrop(crop, scale=tuple(cfg.PRETRAIN.AUG.RRC_SCALE)).make_params(
            [load_image(f)]
        )
        reduced += min(box["height"], box["width"]) >= 2 * crop
    assert float(torch.stack(diffs).mean()) < tolerance
    if crop == 64:
        assert reduced >= len(jpegs) // 2  # the reduced-size path really was exercised


def test_batch_normalization_equals_per_image_normalization(jpegs):
    cfg = _cfg(32)
    images = [v2.functional.resize(decode_tensor(f), [32, 32], antialias=True) for f in jpegs[:6]]
    per_image = torch.stack([v2.Compose(_to_normalized_tensor(cfg))(x) for x in images])
    assert torch.equal(build_batch_normalize(cfg)(torch.stack(images)), per_image)


def test_fast_path_keeps_the_paper_recipe_crops(jpegs):
    """'scale' augmentation decodes reduced only while the shorter side stays >= the
    largest resize target, so its crops match the PIL path up to resize rounding."""
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(str(REPO / "configs/imagenet/r18.yaml"))
    cfg.merge_from_list(
        [
            "INPUT.CROP_SIZE",
            32,
            "PRETRAIN.AUG.SHORT_SIDE_RANGE",
            (36, 64),
            "PRETRAIN.AUG.PCA_LIGHTING",
            0.0,
        ]
    )
    slow, fast, normalize = (
        build_train_transform(cfg),
        build_train_transform(cfg, from_path=True),
        build_batch_normalize(cfg),
    )
    for i, f in enumerate(jpegs[:6]):
        torch.manual_seed(i)
        a = slow(load_image(f, 64))
        torch.manual_seed(i)
        b = normalize(fast(f)[None])[0]
        assert (a - b).abs().mean() < 1.5, f.name  # std 1: grey levels


def test_unreadable_files_are_skipped_on_the_fast_path(jpegs, tmp_path):
    truncated, text = tmp_path / "truncated.JPEG", tmp_path / "notes.JPEG"
    truncated.write_bytes(jpegs[0].read_bytes()[:5000])
    text.write_text("not an image")
    cfg = _cfg(
        32, "PRETRAIN.AUG.RRC_SCALE", (1.0, 1.0)
    )  # whole image: the truncated part is needed
    ds = ClassFolder(
        [(str(jpegs[1]), 0), (str(truncated), 1), (str(text), 2)],
        build_train_transform(cfg, from_path=True),
        decode=False,
    )
    images, labels, bad = collate_skip_bad([ds[(i, i)] for i in range(3)])
    assert images.shape == (1, 3, 32, 32) and labels.tolist() == [0] and bad == 2

"""Reading images: more than 8 bits per channel scaled (a 16-bit PNG used to read as white),
EXIF orientation as Detectron2 applies it, a decompression bomb one line naming the file;
the same in the dataset check, the training mapper and pretraining's loaders. Class
folders with a symbolic link back into themselves are refused, not listed over and over."""

import json
import logging
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetMapper
from detectron2.data.detection_utils import read_image as detectron2_read_image
from PIL import Image
from test_data import coco128

from resdet.data import DatasetError, load_coco_json, read_image
from resdet.data.mapper import SkipUnreadable
from resdet.pretrain import get_pretrain_cfg, load_splits
from resdet.pretrain.data import ClassFolder, decode_tensor, load_image

IMG9 = "000000000009.jpg"  # 640 x 480


def photo(shared_data):
    return coco128(shared_data)[1] / IMG9


@pytest.fixture
def gray16(shared_data, tmp_path):
    """A real photo as a 16-bit grayscale PNG (PIL mode I;16), and its 8-bit pixels: v * 257
    is v in the high byte and in the low one, so 8 bits of it are v exactly."""
    gray = np.asarray(Image.open(photo(shared_data)).convert("L"))
    path = tmp_path / "gray16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)
    assert Image.open(path).mode == "I;16"
    return path, np.repeat(gray[:, :, None], 3, axis=2)


def mapped(path, height, width):
    mapper = SkipUnreadable(DatasetMapper(is_train=True, augmentations=[], image_format="RGB"))
    record = {"file_name": str(path), "height": height, "width": width, "image_id": 1}
    out = mapper(dict(record, annotations=[]))
    return mapper, (None if out is None else out["image"].permute(1, 2, 0).numpy())


def test_16_bit_grayscale_reads_as_its_pixels_everywhere(gray16):
    path, rgb = gray16
    np.testing.assert_array_equal(read_image(path), rgb)
    np.testing.assert_array_equal(read_image(path, "BGR"), rgb[:, :, ::-1])
    np.testing.assert_array_equal(mapped(path, *rgb.shape[:2])[1], rgb)  # the training mapper
    np.testing.assert_array_equal(np.asarray(load_image(path)), rgb)  # pretraining, PIL
    tensor = decode_tensor(path)  # pretraining, torchvision.io (decodes 16-bit to uint16)
    assert tensor.dtype == torch.uint8
    np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), rgb)


def test_16_bit_color_png_reads_alike_on_every_path(shared_data, tmp_path):
    """PIL reads a 16-bit RGB PNG by its high byte; torchvision.io decodes it to uint16."""
    rng = np.random.default_rng(0)
    bgr16 = rng.integers(0, 65536, (48, 64, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.png"
    cv2.imwrite(str(path), bgr16)
    expected = (bgr16[:, :, ::-1] >> 8).astype(np.uint8)
    np.testing.assert_array_equal(read_image(path), expected)
    np.testing.assert_array_equal(decode_tensor(path).permute(1, 2, 0).numpy(), expected)
    np.testing.assert_array_equal(np.asarray(load_image(path)), expected)


def test_32_bit_images_scaled_or_refused(tmp_path):
    ints = np.array([[0, 256, 65535, 32768]], dtype=np.int32)
    Image.fromarray(ints).save(tmp_path / "i.tif")  # mode I
    assert read_image(tmp_path / "i.tif", "L")[..., 0].tolist() == [[0, 1, 255, 128]]
    Image.fromarray(ints * 4).save(tmp_path / "big.tif")
    with pytest.raises(DatasetError, match=r"big\.tif: 32-bit integer pixels from 0 to 262140"):
        read_image(tmp_path / "big.tif")
    floats = np.array([[0.0, 0.5, 1.0, 0.25]], dtype=np.float32)
    Image.fromarray(floats).save(tmp_path / "f.tif")  # mode F
    assert read_image(tmp_path / "f.tif", "L")[..., 0].tolist() == [[0, 128, 255, 64]]
    Image.fromarray(floats * 255).save(tmp_path / "f255.tif")
    with pytest.raises(DatasetError, match=r"f255\.tif: 32-bit float pixels outside \[0, 1\]"):
        load_image(tmp_path / "f255.tif")


def test_exif_orientation_as_detectron2(shared_data, tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.open(photo(shared_data)).save(path, exif=exif)
    ours = read_image(path, "BGR")
    assert ours.shape == (640, 480, 3)
    np.testing.assert_array_equal(ours, detectron2_read_image(str(path), "BGR"))


@pytest.fixture(params=["refused", "warned"])
def bomb_limit(request, monkeypatch):
    """PIL refuses an image above twice MAX_IMAGE_PIXELS and only warns above it: a limit
    that makes the 640 x 480 photo one or the other."""
    limit = {"refused": 100_000, "warned": 200_000}[request.param]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    return limit


def test_decompression_bomb_is_one_line_naming_the_file_everywhere(
    shared_data, tmp_path, bomb_limit, caplog
):
    json_file, images = coco128(shared_data)
    local = tmp_path / "images"
    local.mkdir()
    shutil.copy(images / IMG9, local / IMG9)
    path = local / IMG9
    one_line = (
        rf"{IMG9}: Image size \(307200 pixels\) exceeds limit of \d+ pixels.*MAX_IMAGE_PIXELS"
    )
    for read in (read_image, load_image, decode_tensor):
        with pytest.raises(DatasetError, match=one_line) as e:
            read(path)
        assert "\n" not in str(e.value)

    # the dataset check, before training
    d = json.loads(json_file.read_text())
    d["images"] = d["images"][:1]
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == d["images"][0]["id"]]
    (tmp_path / "a.json").write_text(json.dumps(d))
    with pytest.raises(DatasetError, match=one_line + r".*\(images\[0\], id 9, of .*a\.json\)"):
        load_coco_json(tmp_path / "a.json", local)

    # mid-run: skipped, counted and named, in detection and in pretraining
    with caplog.at_level(logging.WARNING):
        mapper, image = mapped(path, 480, 640)
        assert image is None and mapper.skipped == 1
        assert ClassFolder([(str(path), 0)], lambda img: img)[0] is None
    assert caplog.text.count(f"skipping unreadable image {path}") == 2


def test_8_bit_images_read_as_detectron2_reads_them(shared_data, tmp_path):
    """The reader changes nothing for ordinary images (RGB JPEG, grayscale, palette PNG)."""
    rgb = Image.open(photo(shared_data))
    rgb.convert("L").save(tmp_path / "l.png")
    rgb.convert("P").save(tmp_path / "p.png")
    for path in (photo(shared_data), tmp_path / "l.png", tmp_path / "p.png"):
        for fmt in ("RGB", "BGR", "L"):
            np.testing.assert_array_equal(
                read_image(path, fmt), detectron2_read_image(str(path), fmt)
            )


# ---------------------------------------------------------------- class folders


@pytest.fixture
def class_folders(shared_data, tmp_path):
    """hymenoptera's layout, two real images per class and split."""
    root = tmp_path / "data"
    for split in ("train", "val"):
        for c in ("ants", "bees"):
            (root / split / c).mkdir(parents=True)
            src = shared_data / "hymenoptera" / split / c
            for f in sorted(os.listdir(src))[:2]:
                shutil.copy(src / f, root / split / c / f)
    cfg = get_pretrain_cfg()
    cfg.PRETRAIN.DATA.ROOT, cfg.PRETRAIN.DATA.VAL_SPLIT = str(root), "val"
    return root, cfg


@pytest.mark.parametrize(
    "links,named",
    [
        ({"train/ants/loop": "."}, "train/ants/loop"),  # to the folder it is in
        ({"train/ants/up": ".."}, "train/ants/up"),  # to the split: bees listed as ants
        ({"train/ants/b": "../bees", "train/bees/a": "../ants"}, "train/ants/b/a"),  # a cycle
    ],
)
def test_symbolic_link_loop_in_a_class_folder_is_one_line(class_folders, links, named):
    root, cfg = class_folders
    for link, target in links.items():
        os.symlink(target, root / link)
    with pytest.raises(DatasetError, match=rf"{root / named}: a symbolic link back to") as e:
        load_splits(cfg)
    assert "\n" not in str(e.value)


def test_linked_class_folders_and_images_are_no_loop(class_folders, tmp_path):
    root, cfg = class_folders
    shutil.move(root / "train" / "bees", tmp_path / "bees_elsewhere")
    os.symlink(tmp_path / "bees_elsewhere", root / "train" / "bees")
    (root / "train" / "ants" / "more").mkdir()
    first = sorted((root / "train" / "ants").glob("*.jpg"))[0]
    os.symlink(first, root / "train" / "ants" / "more" / "same.jpg")
    classes, train, val = load_splits(cfg)
    assert classes == ["ants", "bees"] and len(train) == 5 and len(val) == 4

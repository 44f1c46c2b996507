"""A deterministic, offline detection dataset for the demo and for tests.

Real detection data cannot ship with the repository, yet ``make demo`` must run the whole
pipeline offline. This generator draws shapes (the class is the shape; colour, size and
rotation vary, later shapes partly occlude earlier ones) over textured backgrounds and
writes them in the layouts real data comes in, so the demo reads them through the same
loaders as COCO and VOC:

    root/JPEGImages/*.jpg, root/Annotations/*.xml, root/ImageSets/Main/{train,test}.txt
    root/annotations/instances_{train,test}.json            (images in root/JPEGImages)
    root/classification/{train,val}/<class>/*.jpg           (one centred object per image)

Same seed, same bytes.
"""

import json
import math
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..io import atomic_write

__all__ = ["CLASSES", "generate_dataset"]

CLASSES = ("circle", "square", "triangle", "cross", "ring")
# Shapes tilt by at most this (radians): enough variety to need learning, little enough
# that a few hundred images teach it (a square turned 45 degrees is a diamond).
MAX_ROTATION = 0.3


def _background(rng, size):
    """Muted low-frequency colour noise plus stripes around one base colour: texture the
    detector must learn to ignore, yet quieter than the saturated objects on it."""
    h, w = size
    base = rng.randint(70, 186, size=3)
    coarse = np.clip(
        base + rng.randint(-45, 46, size=(h // 16 + 2, w // 16 + 2, 3)), 0, 255
    ).astype(np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.int16)
    period = rng.randint(6, 20)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = (
        np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period) * 18
    ).astype(np.int16)
    arr = arr + stripes[..., None] + rng.randint(-12, 13, size=(h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _polygon(cls, cx, cy, r, rot):
    if cls == "square":
        angles = [rot + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    if cls == "triangle":
        angles = [rot - math.pi / 2 + k * 2 * math.pi / 3 for k in range(3)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    if cls == "cross":
        t = r * 0.38
        pts = [
            (-t, -r),
            (t, -r),
            (t, -t),
            (r, -t),
            (r, t),
            (t, t),
            (t, r),
            (-t, r),
            (-t, t),
            (-r, t),
            (-r, -t),
            (-t, -t),
        ]
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    raise KeyError(cls)


def _draw(draw, cls, cx, cy, r, rot, colour):
    """Draw one object; return its tight box (x0, y0, x1, y1) in pixels."""
    if cls in ("circle", "ring"):
        box = (cx - r, cy - r, cx + r, cy + r)
        if cls == "circle":
            draw.ellipse(box, fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=max(3, int(r * 0.3)))
        return box
    pts = _polygon(cls, cx, cy, r, rot)
    draw.polygon(pts, fill=colour)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), max(xs), max(ys))


def _colour(rng):
    # saturated colours, so objects differ from the muted background by more than texture
    c = rng.randint(0, 256, size=3)
    c[rng.randint(3)] = rng.randint(0, 50)
    c[rng.randint(3)] = rng.randint(200, 256)
    return tuple(int(v) for v in c)


def _scene(rng, size, max_objects, min_visible=0.3):
    """One image and its labels; objects hidden below ``min_visible`` by later ones are
    dropped from the labels (nobody could find them) but stay drawn."""
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    ids = Image.new("L", (size[1], size[0]), 0)  # which object owns each pixel
    ids_draw = ImageDraw.Draw(ids)
    h, w = size
    objects, areas = [], []
    for k in range(1, rng.randint(1, max_objects + 1) + 1):
        cls = CLASSES[rng.randint(len(CLASSES))]
        r = rng.uniform(0.1, 0.24) * min(h, w)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        rot = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
        box = _draw(draw, cls, cx, cy, r, rot, _colour(rng))
        own = Image.new("L", ids.size, 0)
        _draw(ImageDraw.Draw(own), cls, cx, cy, r, rot, 255)
        areas.append(int(np.count_nonzero(np.asarray(own))))
        _draw(ids_draw, cls, cx, cy, r, rot, k)
        x0, y0, x1, y1 = (
            max(0.0, box[0]),
            max(0.0, box[1]),
            min(w - 1.0, box[2]),
            min(h - 1.0, box[3]),
        )
        objects.append((cls, (x0, y0, x1, y1)))
    visible = np.bincount(np.asarray(ids).ravel(), minlength=len(objects) + 1)[1:]
    objects = [o for o, v, a in zip(objects, visible, areas) if v >= min_visible * max(a, 1)]
    return img.filter(ImageFilter.GaussianBlur(0.4)), objects


def _voc_xml(name, size, objects):
    ann = ET.Element("annotation")
    ET.SubElement(ann, "filename").text = name
    s = ET.SubElement(ann, "size")
    for tag, v in (("width", size[1]), ("height", size[0]), ("depth", 3)):
        ET.SubElement(s, tag).text = str(v)
    for cls, (x0, y0, x1, y1) in objects:
        o = ET.SubElement(ann, "object")
        ET.SubElement(o, "name").text = cls
        ET.SubElement(o, "difficult").text = "0"
        b = ET.SubElement(o, "bndbox")
        # VOC boxes are 1-based pixel indices
        for tag, v in (("xmin", x0), ("ymin", y0), ("xmax", x1), ("ymax", y1)):
            ET.SubElement(b, tag).text = str(int(round(v)) + 1)
    return ET.tostring(ann)


def _save_jpeg(img, path):
    with atomic_write(path) as f:
        img.save(f, format="JPEG", quality=92)


def generate_dataset(
    root,
    *,
    num_train=400,
    num_test=100,
    image_size=(192, 192),
    max_objects=4,
    num_cls_per_class=60,
    cls_size=64,
    seed=0,
) -> dict:
    """Write the detection (VOC + COCO JSON) and classification sets under ``root``.

    Returns a dict of the paths written. Deterministic for a given seed and arguments.
    """
    root = Path(root)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(CLASSES)]
    splits = {"train": num_train, "test": num_test}
    for split_idx, (split, n) in enumerate(splits.items()):
        images, annotations, names = [], [], []
        for i in range(n):
            rng = np.random.RandomState([seed, split_idx, i])
            img, objects = _scene(rng, image_size, max_objects)
            name = f"{split}_{i:05d}"
            _save_jpeg(img, root / "JPEGImages" / f"{name}.jpg")
            with atomic_write(root / "Annotations" / f"{name}.xml") as f:
                f.write(_voc_xml(f"{name}.jpg", image_size, objects))
            image_id = split_idx * 1_000_000 + i + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": f"{name}.jpg",
                    "height": image_size[0],
                    "width": image_size[1],
                }
            )
            for cls, (x0, y0, x1, y1) in objects:
                annotations.append(
                    {
                        "id": len(annotations) + 1 + split_idx * 1_000_000,
                        "image_id": image_id,
                        "category_id": CLASSES.index(cls) + 1,
                        "iscrowd": 0,
                        "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                        "area": round((x1 - x0) * (y1 - y0), 2),
                    }
                )
            names.append(name)
        with atomic_write(root / "ImageSets" / "Main" / f"{split}.txt", "w") as f:
            f.write("\n".join(names) + "\n")
        with atomic_write(root / "annotations" / f"instances_{split}.json", "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)

    # Classification: one object centred (jittered) per image, for pretraining the trunk.
    for split_idx, split in enumerate(("train", "val")):
        n = num_cls_per_class if split == "train" else max(1, num_cls_per_class // 4)
        for c, cls in enumerate(CLASSES):
            for i in range(n):
                rng = np.random.RandomState([seed, 10 + split_idx, c, i])
                img = _background(rng, (cls_size, cls_size))
                r = rng.uniform(0.22, 0.42) * cls_size
                cx, cy = (
                    cls_size / 2 + rng.uniform(-0.1, 0.1) * cls_size,
                    cls_size / 2 + rng.uniform(-0.1, 0.1) * cls_size,
                )
                _draw(
                    ImageDraw.Draw(img),
                    cls,
                    cx,
                    cy,
                    r,
                    rng.uniform(-MAX_ROTATION, MAX_ROTATION),
                    _colour(rng),
                )
                _save_jpeg(img, root / "classification" / split / cls / f"{i:04d}.jpg")
    return {
        "voc": root,
        "coco_train": root / "annotations" / "instances_train.json",
        "coco_test": root / "annotations" / "instances_test.json",
        "images": root / "JPEGImages",
        "classification": root / "classification",
    }

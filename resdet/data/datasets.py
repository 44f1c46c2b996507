"""COCO JSON files and PASCAL VOC folders as Detectron2 dataset dicts, checked up front.

Detectron2's own loaders trust their input: an annotation naming an unknown image is
silently dropped, an unknown class is a bare ``ValueError`` from ``list.index``, a missing
image surfaces as an exception inside a data-loader worker hours into training. These
loaders read everything once, before any training starts, and stop at the first real
error with one line naming the file and the entry. What can be repaired is repaired and
counted, never hidden: boxes reaching outside the image are clipped, boxes of zero or
negative size are dropped, and the counts are logged.

Records are Detectron2's standard dicts with boxes in ``XYXY_ABS``, continuous 0-based
coordinates. VOC boxes are 1-based and pixel-inclusive, so (as in Detectron2's VOC
loader) ``[xmin, ymin, xmax, ymax]`` becomes ``[xmin - 1, ymin - 1, xmax, ymax]`` and
a box covering a W x H image is ``[0, 0, W, H]``; the VOC evaluator undoes this.

VOC "difficult" objects stay in the records with ``"difficult": True`` and
``"iscrowd": 1``. Detectron2's ``DatasetMapper`` trains only on ``iscrowd == 0``, so they
are left out of training, while the evaluators see them and ignore detections on them
(neither true nor false positives), as the VOC devkit does.
"""

import codecs
import hashlib
import json
import logging
import math
import numbers
import os
import xml.etree.ElementTree as ET
from collections import Counter

from detectron2.structures import BoxMode

from ..errors import DatasetError, cwd_hint, one_line  # DatasetError re-exported
from .image import open_image

__all__ = [
    "DatasetError",
    "load_coco_json",
    "coco_metadata",
    "load_voc_folder",
    "voc_class_names",
    "check_class_names",
    "voc_image_ids",
]

logger = logging.getLogger(__name__)


def _clip_or_drop(annotations, width, height, counts, where):
    """Clip boxes to the image; drop (and count) those left with zero or negative size."""
    kept = []
    for ann, entry in zip(annotations, where):
        box = ann["bbox"]
        clipped = [
            min(max(box[0], 0.0), width),
            min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width),
            min(max(box[3], 0.0), height),
        ]
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            counts["dropped"] += 1
            counts.setdefault("first_dropped", entry)
            continue
        if clipped != list(box):
            counts["clipped"] += 1
            counts.setdefault("first_clipped", entry)
        ann["bbox"] = clipped
        kept.append(ann)
    return kept


def _log_counts(source, records, counts):
    boxes = sum(len(r["annotations"]) for r in records)
    if not boxes and counts["dropped"]:
        raise DatasetError(
            f"{source}: all {counts['dropped']} boxes have zero or negative size after "
            f"clipping to their image (first: {counts['first_dropped']}); check the box "
            "format (COCO: [x, y, width, height]; VOC: xmin < xmax, ymin < ymax)"
        )
    logger.info("%s: %d images, %d boxes", source, len(records), boxes)
    if counts["clipped"]:
        logger.warning(
            "%s: %d boxes reaching outside the image were clipped to it (first: %s)",
            source,
            counts["clipped"],
            counts["first_clipped"],
        )
    if counts["dropped"]:
        logger.warning(
            "%s: %d boxes of zero or negative size were dropped (first: %s)",
            source,
            counts["dropped"],
            counts["first_dropped"],
        )


# ---------------------------------------------------------------------------- COCO


def read_json(path, what="file"):
    """A JSON file's content; a missing file or malformed JSON is a one-line DatasetError.
    A UTF-8 byte-order mark (Windows editors write one) is allowed."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such {what}{cwd_hint(path)}") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: a folder, not a {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: malformed JSON: {one_line(e)}") from None


def _coco_lists(data, json_file):
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: not a COCO annotation file (top level is not an object)")
    out = []
    for key in ("images", "categories", "annotations"):
        value = data.get(key, [] if key == "annotations" else None)
        if not isinstance(value, list):
            raise DatasetError(f"{json_file}: missing or malformed '{key}' (a list is required)")
        out.append(value)
    return out


def _coco_id(value, json_file, entry, what):
    """``value`` as a COCO id: an integer. A string id is refused rather than matched or
    converted: the COCO format's ids are integers, faster-coco-eval turns them into ints
    (so "9" would silently become 9) and a results file holding 9 for an image "9" could
    not be told from one meant for another image."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise DatasetError(
        f"{json_file}: {entry}: {what} {value!r} is not an integer; COCO {what}s are"
        ' integers (write 9, not "9")'
    )


def _coco_meta(categories, json_file):
    """Checked categories as Detectron2 metadata: classes ordered by category id, and the
    category id -> contiguous id map."""
    cats = {}
    for i, c in enumerate(categories):
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str):
            raise DatasetError(
                f"{json_file}: categories[{i}]: needs an integer 'id' and a string 'name'"
            )
        _coco_id(c["id"], json_file, f"categories[{i}]", "id")
        if c["id"] in cats:
            raise DatasetError(f"{json_file}: categories[{i}]: duplicate category id {c['id']}")
        cats[c["id"]] = c["name"]
    if not cats:
        raise DatasetError(f"{json_file}: 'categories' is empty")
    ids = sorted(cats)
    return {
        "thing_classes": [cats[i] for i in ids],
        "thing_dataset_id_to_contiguous_id": {c: i for i, c in enumerate(ids)},
    }


def coco_metadata(json_file):
    """``thing_classes`` (ordered by category id, Detectron2's order) and
    ``thing_dataset_id_to_contiguous_id`` of a COCO JSON file."""
    _, categories, _ = _coco_lists(read_json(json_file), json_file)
    return _coco_meta(categories, json_file)


def check_image_file(path, where):
    """Fail now, naming the file, on an image no decoder can open (empty, truncated header,
    not an image, a decompression bomb), instead of inside a data-loader worker mid-run.
    Reads the header only."""
    from PIL import UnidentifiedImageError

    try:
        with open_image(path) as im:
            im.size  # noqa: B018 - the header parsed
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found ({where})") from None
    except DatasetError as e:
        raise DatasetError(f"{e} ({where})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            what = "empty file"
        elif isinstance(e, UnidentifiedImageError):
            what = "not a readable image (no decoder recognises it)"
        else:
            what = f"not a readable image ({type(e).__name__}: {one_line(e)})"
        raise DatasetError(
            f"{path}: {what} ({where}); remove it from the dataset or replace it"
        ) from None


def is_finite_number(x):
    """A finite int or float, numpy's included (predictions held in memory)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def load_coco_json(json_file, image_root=None):
    """Load a COCO instances file as Detectron2 dicts (boxes only; no masks or keypoints).

    Image and category ids must be integers. What would make a COCO score wrong is
    repaired and logged: annotations repeating an id are kept (evaluation numbers
    annotations itself, :func:`resdet.evaluation.records_to_coco`); an annotation without
    ``area`` gets its box's area (COCO's ``area``, the segment's area, is kept where given:
    it decides APs/APm/APl).

    Args:
        json_file: the COCO JSON.
        image_root: folder the images' ``file_name`` are relative to. Every image must exist
            there. ``None`` skips the check (evaluating predictions needs no images).

    Returns:
        (records, meta): meta holds ``thing_classes`` and ``thing_dataset_id_to_contiguous_id``
        (contiguous ids follow sorted category ids, as in Detectron2).
    """
    json_file = str(json_file)
    images, categories, annotations = _coco_lists(read_json(json_file), json_file)
    meta = _coco_meta(categories, json_file)
    id_map = meta["thing_dataset_id_to_contiguous_id"]

    records = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict):
            raise DatasetError(f"{json_file}: images[{i}]: not an object")
        for key in ("id", "file_name", "height", "width"):
            if key not in img:
                raise DatasetError(f"{json_file}: images[{i}]: missing '{key}'")
        if not all(is_finite_number(img[k]) and img[k] > 0 for k in ("height", "width")):
            raise DatasetError(
                f"{json_file}: images[{i}] (id {img['id']}): width/height must be positive numbers"
            )
        _coco_id(img["id"], json_file, f"images[{i}]", "id")
        if img["id"] in records:
            raise DatasetError(f"{json_file}: images[{i}]: duplicate image id {img['id']}")
        file_name = (
            os.path.join(image_root, img["file_name"])
            if image_root is not None
            else img["file_name"]
        )
        if image_root is not None:
            check_image_file(file_name, f"images[{i}], id {img['id']}, of {json_file}")
        records[img["id"]] = {
            "file_name": file_name,
            "height": img["height"],
            "width": img["width"],
            "image_id": img["id"],
            "annotations": [],
        }

    raw, where, seen_ids, counts = {}, {}, set(), Counter()
    for i, ann in enumerate(annotations):
        entry = (
            f"annotations[{i}] (id {ann.get('id')})"
            if isinstance(ann, dict)
            else f"annotations[{i}]"
        )
        if not isinstance(ann, dict):
            raise DatasetError(f"{json_file}: {entry}: not an object")
        if _coco_id(ann.get("image_id"), json_file, entry, "image_id") not in records:
            raise DatasetError(
                f"{json_file}: {entry}: image_id {ann.get('image_id')!r} is not in 'images'"
            )
        if _coco_id(ann.get("category_id"), json_file, entry, "category_id") not in id_map:
            raise DatasetError(
                f"{json_file}: {entry}: category_id {ann.get('category_id')!r} is not in"
                f" 'categories'"
            )
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(is_finite_number, bbox))):
            raise DatasetError(
                f"{json_file}: {entry}: 'bbox' must be 4 numbers [x, y, w, h], got {bbox!r}"
            )
        if ann.get("iscrowd", 0) not in (0, 1):
            raise DatasetError(f"{json_file}: {entry}: 'iscrowd' must be 0 or 1")
        x, y, w, h = bbox
        record = {
            "bbox": [x, y, x + w, y + h],
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": id_map[ann["category_id"]],
            "iscrowd": int(ann.get("iscrowd", 0)),
        }
        if "area" not in ann:
            counts["no_area"] += 1
            counts.setdefault("first_no_area", entry)
        elif is_finite_number(ann["area"]) and ann["area"] >= 0:
            record["area"] = ann["area"]
        else:
            raise DatasetError(
                f"{json_file}: {entry}: 'area' must be a number >= 0, got {ann['area']!r}"
            )
        ann_id = ann.get("id")
        if isinstance(ann_id, (int, str)):
            if ann_id in seen_ids:
                counts["duplicate_id"] += 1
                counts.setdefault("first_duplicate_id", entry)
            seen_ids.add(ann_id)
        raw.setdefault(ann["image_id"], []).append(record)
        where.setdefault(ann["image_id"], []).append(f"{json_file} {entry}")
    if counts["duplicate_id"]:
        logger.warning(
            "%s: %d annotations repeat the id of an earlier one (first: %s); all are kept,"
            " and evaluation renumbers them (COCOeval matches by id: shared ids would lose"
            " matches)",
            json_file,
            counts["duplicate_id"],
            counts["first_duplicate_id"],
        )
    if counts["no_area"]:
        logger.warning(
            "%s: %d annotations have no 'area' (first: %s); their box area is used for"
            " COCO's small/medium/large ranges (APs, APm, APl)",
            json_file,
            counts["no_area"],
            counts["first_no_area"],
        )

    for image_id, anns in raw.items():
        r = records[image_id]
        r["annotations"] = _clip_or_drop(anns, r["width"], r["height"], counts, where[image_id])
    records = list(records.values())
    _log_counts(json_file, records, counts)
    return records, meta


# ---------------------------------------------------------------------------- VOC


def read_text_lines(path):
    """The lines of a text file written on any system: UTF-8 with or without a byte-order
    mark, or UTF-16 with one (PowerShell's ``>``); CRLF and CR line ends. A BOM or a ``\\r``
    left in would become part of the first or of every id."""
    with open(path, "rb") as f:
        data = f.read()
    encoding = "utf-16" if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
    try:
        return data.decode(encoding).splitlines()
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path}: not UTF-8 or UTF-16 text ({e.reason} at byte {e.start}); save it as UTF-8"
        ) from None


def voc_image_ids(root, split=None):
    """Image ids of a VOC folder: those of ImageSets/Main/<split>.txt, or every annotated
    image (sorted) when ``split`` is None or empty."""
    ann_dir = os.path.join(root, "Annotations")
    if not os.path.isdir(ann_dir):
        raise DatasetError(
            f"{ann_dir}: no such folder (a VOC folder needs Annotations/ and JPEGImages/)"
        )
    if not split:
        return sorted(f[:-4] for f in os.listdir(ann_dir) if f.endswith(".xml"))
    split_file = os.path.join(root, "ImageSets", "Main", split + ".txt")
    if not os.path.isfile(split_file):
        raise DatasetError(f"{split_file}: no such split file")
    ids = []
    for n, line in enumerate(read_text_lines(split_file), 1):
        if not line.strip():
            continue
        image_id = line.split()[0]
        if not os.path.isfile(os.path.join(ann_dir, image_id + ".xml")):
            raise DatasetError(
                f"{split_file}: line {n}: image '{image_id}' has no Annotations/{image_id}.xml"
            )
        ids.append(image_id)
    return ids


def _parse_voc_xml(xml_file):
    """(width, height, [(name, [xmin, ymin, xmax, ymax] as in the file, difficult)])."""
    try:
        tree = ET.parse(xml_file)
    except ET.ParseError as e:
        raise DatasetError(f"{xml_file}: malformed XML: {one_line(e)}") from None
    try:
        width = int(float(tree.findtext("size/width")))
        height = int(float(tree.findtext("size/height")))
    except (TypeError, ValueError):
        raise DatasetError(
            f"{xml_file}: no valid <size> (<width>, <height>) in the annotation"
        ) from None
    if width <= 0 or height <= 0:
        raise DatasetError(f"{xml_file}: <size> must be positive, got {width}x{height}")
    objects = []
    for k, obj in enumerate(tree.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DatasetError(f"{xml_file}: object {k}: missing <name>")
        try:
            box = [float(obj.findtext(f"bndbox/{c}")) for c in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError):
            raise DatasetError(
                f"{xml_file}: object {k} ('{name}'): <bndbox> needs numeric xmin, ymin, xmax, ymax"
            ) from None
        if not all(map(math.isfinite, box)):
            raise DatasetError(f"{xml_file}: object {k} ('{name}'): non-finite box {box}")
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
        objects.append((name, box, difficult))
    return width, height, objects


def voc_class_names(root):
    """The sorted set of object names over every annotation file of a VOC folder (all
    splits, so train and test of one folder always share their classes)."""
    names = set()
    for image_id in voc_image_ids(root):
        names.update(
            o[0] for o in _parse_voc_xml(os.path.join(root, "Annotations", image_id + ".xml"))[2]
        )
    if not names:
        raise DatasetError(
            f"{os.path.join(root, 'Annotations')}: no annotated objects, so no class names"
        )
    return sorted(names)


def check_class_names(names, source):
    """A user's class list: names stripped (a trailing space is no class of its own), none
    empty or repeated."""
    names = [str(n).strip() for n in names]
    if not all(names) or len(set(names)) != len(names):
        raise DatasetError(f"{source}: class names must be non-empty and distinct, got {names}")
    return names


def holdout_split(ids, fraction, part):
    """Deterministic split of ``ids``: the ``round(fraction * n)`` (at least 1) ids with the
    smallest SHA-1 are the held-out "test" part, the rest is "train". Hashing (not file
    order) keeps an image on its side when images are added or renamed around it."""
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(
            f"the holdout fraction (HOLDOUT_FRACTION) must be in [0, 1), got {fraction}"
        )
    if fraction == 0.0:
        return list(ids)
    n_test = max(1, round(fraction * len(ids)))
    if n_test >= len(ids):
        raise DatasetError(
            f"holdout fraction {fraction} of {len(ids)} images leaves no training images"
        )
    ranked = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    test = set(ranked[:n_test])
    return [i for i in ids if (i in test) == (part == "test")]


def load_voc_folder(
    root, split=None, class_names=None, *, holdout=0.0, part="train", check_images=True
):
    """Load a VOC-layout folder (``Annotations/``, ``JPEGImages/``, optional ``ImageSets/Main/``).

    Args:
        split: an ImageSets/Main name; None/"" = every annotated image.
        class_names: fixed class list (objects of other classes are an error); None = the
            classes found in the folder (:func:`voc_class_names`).
        holdout, part: keep the "train" or the "test" side of :func:`holdout_split`.
        check_images: require ``JPEGImages/<id>.jpg`` for every image (not needed to evaluate).

    Returns:
        (records, meta): meta holds ``thing_classes``.
    """
    root = str(root)
    ids = holdout_split(voc_image_ids(root, split), holdout, part)
    class_names = check_class_names(class_names, root) if class_names else voc_class_names(root)
    index = {c: i for i, c in enumerate(class_names)}
    counts, records = Counter(), []
    for image_id in ids:
        xml_file = os.path.join(root, "Annotations", image_id + ".xml")
        jpg = os.path.join(root, "JPEGImages", image_id + ".jpg")
        if check_images:
            check_image_file(jpg, f"annotated by {xml_file}")
        width, height, objects = _parse_voc_xml(xml_file)
        anns, where = [], []
        for k, (name, box, difficult) in enumerate(objects):
            if name not in index:
                raise DatasetError(
                    f"{xml_file}: object {k}: class '{name}' is not one of the known classes "
                    f"{class_names}; fix the name or add it to RESDET.DATA.CLASSES"
                )
            anns.append(
                {
                    "bbox": [box[0] - 1.0, box[1] - 1.0, box[2], box[3]],
                    "bbox_mode": BoxMode.XYXY_ABS,
                    "category_id": index[name],
                    "difficult": difficult,
                    "iscrowd": int(difficult),
                }
            )
            where.append(f"{xml_file} object {k}")
        records.append(
            {
                "file_name": jpg,
                "image_id": image_id,
                "height": height,
                "width": width,
                "annotations": _clip_or_drop(anns, width, height, counts, where),
            }
        )
    _log_counts(
        f"{root} ({split or 'all annotated'}{f', {part} part' if holdout else ''})", records, counts
    )
    return records, {"thing_classes": class_names}

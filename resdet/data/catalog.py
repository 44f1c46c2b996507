"""Dataset registration: the standard COCO/VOC names and user datasets with no code.

Detectron2 registers coco_2017_* and voc_20xx_* when ``detectron2.data`` is imported, but
with unchecked loaders. resdet re-registers the names it documents with its checked
loaders (:mod:`resdet.data.datasets`) under Detectron2's root (``$DETECTRON2_DATASETS``,
else ``./datasets`` in the working directory), keeping Detectron2's metadata (COCO class
names, ids and colours; the 20 VOC classes), and adds ``voc_2007_2012_trainval``.
"""

import os
from pathlib import Path

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as VOC_CLASSES

from ..errors import cwd_hint
from .datasets import (
    DatasetError,
    check_class_names,
    coco_metadata,
    load_coco_json,
    load_voc_folder,
    voc_class_names,
)

__all__ = [
    "datasets_root",
    "register_coco_json",
    "register_voc_folder",
    "register_user_datasets",
    "register_standard_datasets",
    "STANDARD_COCO",
    "STANDARD_VOC",
]

# name -> (image folder, annotation file), relative to the datasets root (Detectron2's layout)
STANDARD_COCO = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}
# name -> [(VOC folder, ImageSets/Main split), ...]; several parts are concatenated
STANDARD_VOC = {
    "voc_2007_trainval": [("VOC2007", "trainval")],
    "voc_2007_test": [("VOC2007", "test")],
    "voc_2012_trainval": [("VOC2012", "trainval")],
    "voc_2007_2012_trainval": [("VOC2007", "trainval"), ("VOC2012", "trainval")],
}


def datasets_root() -> Path:
    """``$DETECTRON2_DATASETS`` if set, else ``datasets`` relative to the working directory,
    as Detectron2 resolves it (``detectron2/data/datasets/builtin.py``)."""
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets")).expanduser()


def _register(name, loader, **metadata):
    """(Re-)register ``name``: the loader's records, the given metadata."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    if name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, loader)
    MetadataCatalog.get(name).set(**metadata)


def register_coco_json(name, json_file, image_root, *, metadata=None):
    """Register a COCO instances JSON with its image folder. Classes and category ids come
    from its categories (read now, so a model can be sized before the data is loaded)
    unless ``metadata`` already gives them."""
    json_file, image_root = str(json_file), str(image_root)
    meta = dict(metadata) if metadata else coco_metadata(json_file)

    def load():
        records, found = load_coco_json(json_file, image_root)
        for key in ("thing_classes", "thing_dataset_id_to_contiguous_id"):
            if found[key] != meta[key]:
                raise DatasetError(
                    f"{json_file}: its categories differ from the {key} registered for '{name}'"
                )
        return records

    _register(name, load, json_file=json_file, image_root=image_root, evaluator_type="coco", **meta)


def register_voc_folder(
    name, root, split=None, *, class_names=None, holdout=0.0, part="train", year=None
):
    """Register a VOC-layout folder, or several concatenated when ``root``/``split`` are
    lists of equal length. Class names: ``class_names`` or the sorted object names found
    in the (first) folder. ``holdout``/``part``: see :func:`resdet.data.datasets.holdout_split`."""
    roots = [str(r) for r in (root if isinstance(root, (list, tuple)) else [root])]
    splits = list(split) if isinstance(split, (list, tuple)) else [split] * len(roots)
    classes = check_class_names(class_names, roots[0]) if class_names else voc_class_names(roots[0])

    def load():
        return [
            r
            for d, s in zip(roots, splits)
            for r in load_voc_folder(d, s, classes, holdout=holdout, part=part)[0]
        ]

    _register(
        name,
        load,
        thing_classes=classes,
        dirname=roots[0],
        split=splits[0] or "",
        evaluator_type="pascal_voc",
        **({"year": year} if year else {}),
    )


def register_standard_datasets(root=None):
    """Register COCO 2017 train/val and VOC 2007/2012 under ``root`` (default
    :func:`datasets_root`). Nothing is read until a dataset is used."""
    root = Path(root) if root else datasets_root()
    for name, (images, ann) in STANDARD_COCO.items():
        # Detectron2's builtin metadata (classes, ids, colours), with resdet's paths
        meta = {
            k: v
            for k, v in MetadataCatalog.get(name).as_dict().items()
            if k not in ("name", "json_file", "image_root", "evaluator_type")
        }
        register_coco_json(name, root / ann, root / images, metadata=meta)
        _say_where_it_is_looked_for(name, [root / ann], root)
    for name, parts in STANDARD_VOC.items():
        register_voc_folder(
            name,
            [root / d for d, _ in parts],
            [s for _, s in parts],
            class_names=VOC_CLASSES,
            year=int(parts[0][0][3:]),
        )
        _say_where_it_is_looked_for(name, [root / d / "Annotations" for d, _ in parts], root)


def _say_where_it_is_looked_for(name, needed, root):
    """A standard dataset that is not there: say where it was looked for and how to point
    resdet at it, instead of "datasets/coco/...json: no such file" alone."""
    loader = DatasetCatalog[name]

    def load():
        missing = next((p for p in needed if not Path(p).exists()), None)
        if missing is not None:
            raise DatasetError(
                f"{missing}: no such file or folder: {name} is read under "
                f"{Path(root).resolve()}; set $DETECTRON2_DATASETS to the folder that holds "
                f"Detectron2's dataset layout (coco/, VOC2007/)"
            )
        return loader()

    DatasetCatalog.remove(name)
    DatasetCatalog.register(name, load)


def register_user_datasets(cfg):
    """Register RESDET.DATA.TRAIN/TEST as "resdet_train"/"resdet_test" (each only when set).

    A path ending in .json is a COCO file (its images in TRAIN_IMAGES/TEST_IMAGES); a
    folder is VOC-style (TRAIN_SPLIT/TEST_SPLIT name an ImageSets/Main split, "" = every
    annotated image). With HOLDOUT_FRACTION > 0 a VOC folder is split deterministically:
    "resdet_train" gets the rest, "resdet_test" the held-out part (of TEST, or of TRAIN
    when TEST is empty). Returns the registered names.
    """
    d = cfg.RESDET.DATA
    holdout = float(d.HOLDOUT_FRACTION)
    test = d.TEST or (d.TRAIN if holdout > 0 else "")
    names = []
    for name, path, images, split, part in (
        ("resdet_train", d.TRAIN, d.TRAIN_IMAGES, d.TRAIN_SPLIT, "train"),
        ("resdet_test", test, d.TEST_IMAGES, d.TEST_SPLIT, "test"),
    ):
        if not path:
            continue
        key = f"RESDET.DATA.{part.upper()}"
        if not os.path.exists(path):
            raise DatasetError(f"{key} {path}: no such file or folder{cwd_hint(path)}")
        if str(path).endswith(".json"):
            if not images:
                raise DatasetError(
                    f"{path}: {key}_IMAGES is empty; give the folder of this COCO file's images"
                )
            if not os.path.isdir(images):
                what = "is a file, not" if os.path.exists(images) else "no such folder; give"
                raise DatasetError(
                    f"{key}_IMAGES {images}: {what} the folder of {os.path.basename(path)}'s "
                    f"images{cwd_hint(images) if what.startswith('no') else ''}"
                )
            if holdout > 0:
                raise DatasetError(
                    f"{path}: RESDET.DATA.HOLDOUT_FRACTION applies to VOC folders, not COCO files"
                )
            if (
                d.CLASSES
                and check_class_names(d.CLASSES, "RESDET.DATA.CLASSES")
                != coco_metadata(path)["thing_classes"]
            ):
                raise DatasetError(
                    f"{path}: its categories {coco_metadata(path)['thing_classes']} differ from "
                    f"RESDET.DATA.CLASSES {list(d.CLASSES)}"
                )
            register_coco_json(name, path, images)
        elif os.path.isdir(path):
            register_voc_folder(
                name,
                path,
                split or None,
                class_names=list(d.CLASSES) or None,
                holdout=holdout,
                part=part,
            )
        else:
            raise DatasetError(f"{path}: {key} is neither a COCO .json file nor a VOC folder")
        names.append(name)
    return names

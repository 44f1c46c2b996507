"""Detection datasets: checked loaders on real data (coco128, bccd), repairs counted,
every bad input one line naming file and entry, registration by name and from config."""

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, DatasetMapper, MetadataCatalog

import resdet
from resdet.data import (
    DatasetError,
    datasets_root,
    holdout_split,
    load_coco_json,
    load_voc_folder,
    register_standard_datasets,
    register_user_datasets,
    register_voc_folder,
)


def coco128(shared_data):
    root = shared_data / "coco128"
    return root / "annotations" / "instances_train2017.json", root / "train2017"


def write_voc(root, images, splits=None, jpeg_from=None):
    """A VOC folder: ``images`` = {id: (width, height, [(name, box, difficult)])}, box =
    (xmin, ymin, xmax, ymax); size None writes an XML without <size>. JPEGs are links to
    ``jpeg_from`` when given."""
    root = Path(root)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    for image_id, (w, h, objects) in images.items():
        size = (
            ""
            if w is None
            else f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
        )
        objs = "".join(
            f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
            f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for n, b, d in objects
        )
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation>{size}{objs}</annotation>"
        )
        if jpeg_from is not None:
            os.symlink(jpeg_from, root / "JPEGImages" / f"{image_id}.jpg")
    for name, ids in (splits or {}).items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(i + "\n" for i in ids))
    return root


def small_coco(shared_data, tmp_path, n=3, edit=None):
    """The first ``n`` images of coco128 with their annotations, optionally edited."""
    json_file, images = coco128(shared_data)
    d = json.loads(json_file.read_text())
    d["images"] = d["images"][:n]
    keep = {i["id"] for i in d["images"]}
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] in keep]
    if edit:
        edit(d)
    out = tmp_path / "small.json"
    out.write_text(json.dumps(d))
    return out, images, d


def test_coco128_records(shared_data):
    json_file, images = coco128(shared_data)
    raw = json.loads(json_file.read_text())
    records, meta = load_coco_json(json_file, images)
    assert len(records) == 128 and sum(len(r["annotations"]) for r in records) == 939
    assert sum(a["iscrowd"] for r in records for a in r["annotations"]) == 10
    # contiguous ids follow sorted category ids; names come from the file
    cats = sorted(raw["categories"], key=lambda c: c["id"])
    assert meta["thing_classes"] == [c["name"] for c in cats]
    assert meta["thing_dataset_id_to_contiguous_id"][90] == 79
    first = raw["annotations"][0]
    rec = next(r for r in records if r["image_id"] == first["image_id"])
    x, y, w, h = first["bbox"]
    assert [x, y, x + w, y + h] in [a["bbox"] for a in rec["annotations"]]
    assert all(os.path.isfile(r["file_name"]) for r in records)


def test_bccd_records_follow_detectron2_voc_convention(shared_data, caplog):
    with caplog.at_level(logging.INFO, logger="resdet.data"):
        records, meta = load_voc_folder(shared_data / "bccd", "trainval")
    assert len(records) == 292
    assert meta["thing_classes"] == ["Platelets", "RBC", "WBC"]  # sorted names from the data
    r0 = next(r for r in records if r["image_id"] == "BloodImage_00000")
    # the XML's first object: WBC 260 177 491 376 (1-based, pixel-inclusive)
    assert r0["annotations"][0]["bbox"] == [259.0, 176.0, 491.0, 376.0]
    assert r0["annotations"][0]["category_id"] == 2 and (r0["width"], r0["height"]) == (640, 480)
    # bccd has no box outside its image in VOC's 1-based inclusive coordinates, and no box
    # of negative size: nothing is clipped or dropped
    all_records, _ = load_voc_folder(shared_data / "bccd")
    assert sum(len(r["annotations"]) for r in all_records) == 4888
    assert "clipped" not in caplog.text and "dropped" not in caplog.text
    boxes = np.array([a["bbox"] for r in all_records for a in r["annotations"]])
    assert boxes[:, :2].min() >= 0 and boxes[:, 2].max() <= 640 and boxes[:, 3].max() <= 480


def test_boxes_outside_are_clipped_and_degenerate_dropped_and_counted(
    shared_data, tmp_path, caplog
):
    jpg = shared_data / "bccd" / "JPEGImages" / "BloodImage_00000.jpg"
    root = write_voc(
        tmp_path / "voc",
        {
            "a": (
                640,
                480,
                [
                    ("RBC", (600, 400, 660, 490), 0),  # runs outside: clipped
                    ("RBC", (-5, 10, 50, 60), 0),  # runs outside: clipped
                    ("RBC", (30, 30, 28, 40), 0),  # negative width: dropped
                    ("WBC", (10, 10, 10, 10), 0),
                ],
            ),  # one pixel (VOC is inclusive): kept
        },
        jpeg_from=jpg,
    )
    with caplog.at_level(logging.WARNING, logger="resdet.data"):
        (rec,), _ = load_voc_folder(root)
    assert [a["bbox"] for a in rec["annotations"]] == [
        [599, 399, 640, 480],
        [0, 9, 50, 60],
        [9, 9, 10, 10],
    ]
    assert "2 boxes reaching outside the image were clipped" in caplog.text
    assert (
        "1 boxes of zero or negative size were dropped" in caplog.text
        and "a.xml object 2" in caplog.text
    )

    def edit(d):
        d["annotations"][0]["bbox"][2] = 0.0  # zero width
        img = next(i for i in d["images"] if i["id"] == d["annotations"][1]["image_id"])
        d["annotations"][1]["bbox"] = [img["width"] - 5, 0, 20, 10]  # beyond the right edge

    json_file, images, d = small_coco(shared_data, tmp_path, edit=edit)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="resdet.data"):
        records, _ = load_coco_json(json_file, images)
    assert sum(len(r["annotations"]) for r in records) == len(d["annotations"]) - 1
    assert (
        "1 boxes reaching outside" in caplog.text
        and "1 boxes of zero or negative size" in caplog.text
    )
    assert all(a["bbox"][2] <= r["width"] for r in records for a in r["annotations"])


def test_difficult_objects_kept_for_evaluation_left_out_of_training(shared_data, tmp_path):
    jpg = shared_data / "bccd" / "JPEGImages" / "BloodImage_00000.jpg"
    root = write_voc(
        tmp_path / "voc",
        {"a": (640, 480, [("RBC", (78, 336, 184, 435), 0), ("WBC", (260, 177, 491, 376), 1)])},
        jpeg_from=jpg,
    )
    (rec,), _ = load_voc_folder(root)
    assert [(a["difficult"], a["iscrowd"]) for a in rec["annotations"]] == [(False, 0), (True, 1)]
    mapper = DatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    inst = mapper(dict(rec))["instances"]
    assert inst.gt_classes.tolist() == [0]  # the difficult WBC is not trained on
    assert inst.gt_boxes.tensor.tolist() == [[77.0, 335.0, 184.0, 435.0]]


def test_holdout_is_deterministic_disjoint_and_order_free(shared_data):
    bccd = shared_data / "bccd"
    train, _ = load_voc_folder(bccd, holdout=0.2, part="train", check_images=False)
    test, _ = load_voc_folder(bccd, holdout=0.2, part="test", check_images=False)
    tr, te = {r["image_id"] for r in train}, {r["image_id"] for r in test}
    assert len(te) == round(0.2 * 364) and not tr & te and len(tr | te) == 364
    ids = sorted(tr | te)
    assert set(holdout_split(ids[::-1], 0.2, "test")) == te
    with pytest.raises(DatasetError, match="leaves no training images"):
        holdout_split(["a", "b"], 0.9, "train")


def test_register_user_datasets_from_config(shared_data):
    cfg = resdet.get_resdet_cfg()
    assert register_user_datasets(cfg) == []
    cfg.RESDET.DATA.TRAIN = str(shared_data / "bccd")
    cfg.RESDET.DATA.HOLDOUT_FRACTION = 0.25
    assert register_user_datasets(cfg) == ["resdet_train", "resdet_test"]
    assert MetadataCatalog.get("resdet_test").thing_classes == ["Platelets", "RBC", "WBC"]
    assert (
        len(DatasetCatalog.get("resdet_train")) == 273
        and len(DatasetCatalog.get("resdet_test")) == 91
    )

    json_file, images = coco128(shared_data)
    cfg.RESDET.DATA.HOLDOUT_FRACTION = 0.0
    cfg.RESDET.DATA.TRAIN, cfg.RESDET.DATA.TRAIN_IMAGES = str(json_file), str(images)
    cfg.RESDET.DATA.TEST, cfg.RESDET.DATA.TEST_SPLIT = str(shared_data / "bccd"), "test"
    register_user_datasets(cfg)  # re-registering replaces the earlier datasets
    assert len(MetadataCatalog.get("resdet_train").thing_classes) == 80
    assert MetadataCatalog.get("resdet_train").thing_dataset_id_to_contiguous_id[90] == 79
    assert (
        len(DatasetCatalog.get("resdet_train")) == 128
        and len(DatasetCatalog.get("resdet_test")) == 72
    )
    cfg.RESDET.DATA.TRAIN_IMAGES = ""
    with pytest.raises(DatasetError, match="TRAIN_IMAGES is empty"):
        register_user_datasets(cfg)


@pytest.fixture
def standard_root(tmp_path, monkeypatch, shared_data):
    json_file, images = coco128(shared_data)
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    os.symlink(json_file, tmp_path / "coco" / "annotations" / "instances_val2017.json")
    os.symlink(images, tmp_path / "coco" / "val2017")
    jpg = shared_data / "bccd" / "JPEGImages" / "BloodImage_00000.jpg"
    write_voc(
        tmp_path / "VOC2007",
        {
            "000001": (640, 480, [("dog", (1, 1, 100, 100), 0)]),
            "000002": (640, 480, [("cat", (5, 5, 50, 50), 1)]),
        },
        {"trainval": ["000001"], "test": ["000002"]},
        jpeg_from=jpg,
    )
    write_voc(
        tmp_path / "VOC2012",
        {"2008_000001": (640, 480, [("person", (1, 1, 9, 9), 0)])},
        {"trainval": ["2008_000001"]},
        jpeg_from=jpg,
    )
    default = datasets_root()
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    yield tmp_path
    register_standard_datasets(default)  # back to the usual root for other tests


def test_standard_names_resolve_under_detectron2_datasets(standard_root):
    register_standard_datasets()
    assert MetadataCatalog.get("coco_2017_val").json_file == str(
        standard_root / "coco" / "annotations" / "instances_val2017.json"
    )
    assert len(DatasetCatalog.get("coco_2017_val")) == 128
    assert (
        MetadataCatalog.get("coco_2017_val").thing_classes[0] == "person"
    )  # Detectron2's metadata kept
    assert [r["image_id"] for r in DatasetCatalog.get("voc_2007_test")] == ["000002"]
    assert [r["image_id"] for r in DatasetCatalog.get("voc_2007_2012_trainval")] == [
        "000001",
        "2008_000001",
    ]
    assert len(MetadataCatalog.get("voc_2007_2012_trainval").thing_classes) == 20


def test_default_root_is_datasets_in_the_working_directory(monkeypatch, tmp_path):
    """Detectron2's rule, so an installed resdet finds the same folder as Detectron2."""
    monkeypatch.delenv("DETECTRON2_DATASETS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert os.path.abspath(datasets_root()) == str(tmp_path / "datasets")


def _bad_coco(shared_data, tmp_path, case):
    def edit(d):
        if case == "unknown image":
            d["annotations"][0]["image_id"] = 999999
        elif case == "unknown category":
            d["annotations"][1]["category_id"] = 999

    json_file, images, d = small_coco(shared_data, tmp_path, edit=edit)
    if case == "malformed":
        json_file.write_text(json_file.read_text()[:500])
    if case == "missing image":
        images = tmp_path / "empty"
        images.mkdir()
    return json_file, images, d


@pytest.mark.parametrize(
    "case,expected",
    [
        ("malformed", r"small\.json: malformed JSON: .*line 1 column \d+"),
        (
            "unknown image",
            r"small\.json: annotations\[0\] \(id \d+\): image_id 999999 is not in 'images'",
        ),
        (
            "unknown category",
            r"small\.json: annotations\[1\] \(id \d+\): category_id 999 is not in 'categories'",
        ),
        (
            "missing image",
            r"empty/000000000009\.jpg: image file not found \(images\[0\], id 9, of"
            r" .*small\.json\)",
        ),
    ],
)
def test_bad_coco_input_one_line_naming_file_and_entry(shared_data, tmp_path, case, expected):
    json_file, images, _ = _bad_coco(shared_data, tmp_path, case)
    with pytest.raises(DatasetError, match=expected) as e:
        load_coco_json(json_file, images)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "case,expected",
    [
        ("no size", r"a\.xml: no valid <size>"),
        ("malformed xml", r"a\.xml: malformed XML"),
        ("missing image", r"JPEGImages/a\.jpg: image file not found \(annotated by .*a\.xml\)"),
        (
            "unknown class",
            r"a\.xml: object 0: class 'dog' is not one of the known classes \['RBC'\]",
        ),
        (
            "split without annotation",
            r"test\.txt: line 2: image 'ghost' has no Annotations/ghost\.xml",
        ),
        ("bad box", r"a\.xml: object 0 \('RBC'\): <bndbox> needs numeric"),
    ],
)
def test_bad_voc_input_one_line_naming_file_and_entry(shared_data, tmp_path, case, expected):
    jpg = shared_data / "bccd" / "JPEGImages" / "BloodImage_00000.jpg"
    name = "dog" if case == "unknown class" else "RBC"
    box = ("1", "2", "x", "4") if case == "bad box" else (1, 2, 30, 40)
    root = write_voc(
        tmp_path / "voc",
        {"a": (None if case == "no size" else 64, 48, [(name, box, 0)])},
        {"test": ["a", "ghost"]} if case == "split without annotation" else None,
        jpeg_from=None if case == "missing image" else jpg,
    )
    if case == "malformed xml":
        (root / "Annotations" / "a.xml").write_text("<annotation><size>")
    with pytest.raises(DatasetError, match=expected) as e:
        load_voc_folder(
            root,
            "test" if case == "split without annotation" else None,
            class_names=["RBC"] if case == "unknown class" else None,
        )
    assert "\n" not in str(e.value)


def test_register_voc_folder_classes_from_whole_folder(shared_data, tmp_path):
    """Train and test of one folder share the class list even when a class is only in one."""
    jpg = shared_data / "bccd" / "JPEGImages" / "BloodImage_00000.jpg"
    root = write_voc(
        tmp_path / "voc",
        {"a": (64, 48, [("zebra", (1, 1, 9, 9), 0)]), "b": (64, 48, [("ant", (1, 1, 9, 9), 0)])},
        {"train": ["a"], "test": ["b"]},
        jpeg_from=jpg,
    )
    register_voc_folder("tmp_voc_test", root, "test")
    assert MetadataCatalog.get("tmp_voc_test").thing_classes == ["ant", "zebra"]
    assert DatasetCatalog.get("tmp_voc_test")[0]["annotations"][0]["category_id"] == 0
    shutil.rmtree(root / "JPEGImages")
    with pytest.raises(DatasetError, match="image file not found"):
        DatasetCatalog.get("tmp_voc_test")


@pytest.mark.parametrize(
    "content,expected", [(b"", "empty file"), (b"this is no image" * 10, "not a readable image")]
)
def test_unreadable_images_fail_at_load_naming_the_file(shared_data, tmp_path, content, expected):
    """Checked when the dataset loads, before training starts (not in a worker at iteration 0)."""
    json_file, images = coco128(shared_data)
    d = json.loads(json_file.read_text())
    d["images"] = d["images"][:3]
    local = tmp_path / "images"
    local.mkdir()
    for im in d["images"]:
        shutil.copy(images / im["file_name"], local / im["file_name"])
    bad = local / d["images"][1]["file_name"]
    bad.write_bytes(content)
    (tmp_path / "a.json").write_text(json.dumps(d))
    with pytest.raises(DatasetError, match=rf"{bad.name}: {expected}.* \(images\[1\]"):
        load_coco_json(tmp_path / "a.json", local)


def test_all_boxes_invalid_is_one_line(shared_data, tmp_path):
    json_file, images = coco128(shared_data)
    d = json.loads(json_file.read_text())
    d["images"] = d["images"][:2]
    keep = {im["id"] for im in d["images"]}
    d["annotations"] = [
        dict(a, bbox=[a["bbox"][0], a["bbox"][1], -a["bbox"][2], a["bbox"][3]])
        for a in d["annotations"]
        if a["image_id"] in keep
    ]
    (tmp_path / "a.json").write_text(json.dumps(d))
    with pytest.raises(DatasetError, match=r"a\.json: all \d+ boxes have zero or negative size"):
        load_coco_json(tmp_path / "a.json", images)


def test_coco_repeated_annotation_ids_and_missing_areas_are_repaired_and_logged(
    shared_data, tmp_path, caplog
):
    def edit(d):
        for a in d["annotations"][1:3]:
            a["id"] = d["annotations"][0]["id"]
        del d["annotations"][3]["area"]

    json_file, images, d = small_coco(shared_data, tmp_path, edit=edit)
    with caplog.at_level(logging.WARNING, logger="resdet.data"):
        records, _ = load_coco_json(json_file, images)
    assert "2 annotations repeat the id of an earlier one (first: annotations[1] " in caplog.text
    assert "1 annotations have no 'area' (first: annotations[3] " in caplog.text
    anns = [a for r in records for a in r["annotations"]]
    assert len(anns) == len(d["annotations"])  # nothing dropped
    # COCO's own areas (segment areas, not box areas) are kept; the one missing stays missing
    assert sorted(a["area"] for a in anns if "area" in a) == sorted(
        a["area"] for a in d["annotations"] if "area" in a
    )
    assert sum("area" not in a for a in anns) == 1


@pytest.mark.parametrize(
    "case,expected",
    [
        ("image id", r"small\.json: images\[0\]: id '9' is not an integer; COCO ids are integers"),
        ("category id", r"small\.json: categories\[0\]: id '1' is not an integer; COCO ids are"),
        (
            "annotation image_id",
            r"small\.json: annotations\[0\] \(id \d+\): image_id '\d+' is not an integer; COCO"
            r" image_ids are integers",
        ),
    ],
)
def test_coco_ids_that_are_strings_are_refused_naming_the_entry(
    shared_data, tmp_path, case, expected
):
    """faster-coco-eval turns ids into ints, so "9" would silently stand for 9 (and a
    results file with 9 for an image "9" could not be told from a wrong one)."""

    def edit(d):
        if case == "image id":
            d["images"][0]["id"] = str(d["images"][0]["id"])
            for a in d["annotations"]:
                a["image_id"] = str(a["image_id"]) if a["image_id"] == 9 else a["image_id"]
        elif case == "category id":
            d["categories"][0]["id"] = "1"
            for a in d["annotations"]:
                a["category_id"] = "1" if a["category_id"] == 1 else a["category_id"]
        else:
            d["annotations"][0]["image_id"] = str(d["annotations"][0]["image_id"])

    json_file, images, _ = small_coco(shared_data, tmp_path, edit=edit)
    with pytest.raises(DatasetError, match=expected) as e:
        load_coco_json(json_file, images)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_split_files_written_on_windows_are_read(shared_data, tmp_path, encoding):
    """ImageSets/Main/*.txt with a byte-order mark and CRLF line ends (Notepad), or in
    UTF-16 (PowerShell's `>`): the same ids as the plain file."""
    bccd = shared_data / "bccd"
    ids = (bccd / "ImageSets" / "Main" / "test.txt").read_text().split()[:4]
    root = tmp_path / "voc"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    for i in ids:
        shutil.copy(bccd / "Annotations" / f"{i}.xml", root / "Annotations")
        shutil.copy(bccd / "JPEGImages" / f"{i}.jpg", root / "JPEGImages")
    (root / "ImageSets" / "Main" / "test.txt").write_bytes(
        "".join(i + "\r\n" for i in ids).encode(encoding)
    )
    records, _ = load_voc_folder(root, "test")
    assert [r["image_id"] for r in records] == ids
    plain, _ = load_voc_folder(bccd, "test", check_images=False)
    expected = {r["image_id"]: r["annotations"] for r in plain if r["image_id"] in ids}
    assert {r["image_id"]: r["annotations"] for r in records} == expected


def test_split_file_that_is_not_text_is_one_line(shared_data, tmp_path):
    bccd = shared_data / "bccd"
    root = tmp_path / "voc"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    jpg = bccd / "JPEGImages" / "BloodImage_00000.jpg"
    (root / "ImageSets" / "Main" / "train.txt").write_bytes(jpg.read_bytes()[:2000])
    with pytest.raises(DatasetError, match=r"train\.txt: not UTF-8 or UTF-16 text") as e:
        load_voc_folder(root, "train", check_images=False)
    assert "\n" not in str(e.value)

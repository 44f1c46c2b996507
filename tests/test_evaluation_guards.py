"""Evaluation never gives a number that cannot be right: no predictions is AP 0 (not NaN),
boxes of no size are refused, class ids cannot shift silently, class names are exact."""

import json
import math

import pytest
from test_data import coco128, write_voc

from resdet.config import get_resdet_cfg
from resdet.data import DatasetError, load_voc_folder, register_user_datasets
from resdet.evaluation import GroundTruth, categories, categories_file, evaluate_files


def test_no_predictions_is_ap_zero_where_there_is_ground_truth(shared_data, tmp_path):
    json_file, _ = coco128(shared_data)
    (tmp_path / "pred.json").write_text("[]")
    r = evaluate_files(json_file, tmp_path / "pred.json")["bbox"]
    assert r["AP"] == 0.0 and r["AP50"] == 0.0 and r["APs"] == 0.0 and r["AP-person"] == 0.0
    names = {c["name"] for c in json.loads(json_file.read_text())["categories"]}
    present = {
        c["name"]
        for c in json.loads(json_file.read_text())["categories"]
        if any(
            a["category_id"] == c["id"] and not a["iscrowd"]
            for a in json.loads(json_file.read_text())["annotations"]
        )
    }
    absent = sorted(names - present)
    assert absent and all(math.isnan(r[f"AP-{n}"]) for n in absent)  # nothing to find: not a 0


@pytest.fixture
def voc13(tmp_path):
    """13 ground-truth boxes of one class over 3 images."""
    boxes = [(10 + 20 * k, 10, 25 + 20 * k, 40) for k in range(5)]
    return write_voc(
        tmp_path / "voc",
        {
            "a": (200, 100, [("rbc", b, False) for b in boxes]),
            "b": (200, 100, [("rbc", b, False) for b in boxes[:4]]),
            "c": (200, 100, [("rbc ", b, False) for b in boxes[:4]]),
        },
    )


def test_voc_no_predictions_is_ap_zero(voc13, tmp_path):
    (tmp_path / "pred.json").write_text("[]")
    for metric in ("voc07", "voc"):
        assert evaluate_files(voc13, tmp_path / "pred.json", metric)["bbox"]["AP50"] == 0.0


def test_trailing_space_is_not_a_class(voc13):
    records, meta = load_voc_folder(voc13, check_images=False)
    assert meta["thing_classes"] == ["rbc"] and sum(len(r["annotations"]) for r in records) == 13


@pytest.mark.parametrize("bbox", [[10, 10, -5, 20], [10, 10, 5, 0]])
def test_predicted_boxes_of_no_size_are_refused(shared_data, tmp_path, bbox):
    json_file, _ = coco128(shared_data)
    image_id = json.loads(json_file.read_text())["images"][0]["id"]
    (tmp_path / "pred.json").write_text(
        json.dumps([{"image_id": image_id, "category_id": 1, "bbox": bbox, "score": 0.5}])
    )
    with pytest.raises(DatasetError, match=r"entry 0: box .* has width or height <= 0"):
        evaluate_files(json_file, tmp_path / "pred.json")


def test_devkit_box_with_xmax_below_xmin_is_refused(voc13, tmp_path):
    det = tmp_path / "det"
    det.mkdir()
    (det / "comp4_det_test_rbc.txt").write_text("a 0.9 30 10 20 40\n")
    with pytest.raises(DatasetError, match="line 1: box .* xmax < xmin"):
        evaluate_files(voc13, det, "voc")


def _gt_as_json(root, out):
    gt = GroundTruth.from_path(root)
    results = [
        {
            "image_id": r["image_id"],
            "category_id": gt.file_category_ids[a["category_id"]],
            "bbox": [
                a["bbox"][0],
                a["bbox"][1],
                a["bbox"][2] - a["bbox"][0],
                a["bbox"][3] - a["bbox"][1],
            ],
            "score": 1.0,
        }
        for r in gt.records
        for a in r["annotations"]
    ]
    out.mkdir()
    (out / "predictions.json").write_text(json.dumps(results))
    categories_file(out / "predictions.json").write_text(json.dumps(categories(gt)))
    return out / "predictions.json"


def test_a_misspelt_class_cannot_shift_category_ids(tmp_path):
    objs = lambda name: [(name, (10, 10, 60, 60), False)]  # noqa: E731
    root = write_voc(tmp_path / "voc", {"a": (100, 100, objs("rbc")), "b": (100, 100, objs("wbc"))})
    pred = _gt_as_json(root, tmp_path / "run")
    assert evaluate_files(root, pred)["bbox"]["AP50"] == pytest.approx(100.0)
    # the same data with one name misspelt: sorted names [rbc, wbcc] still map 1, 2, but a
    # typo that sorts first ("Rbc") shifts every id
    (root / "Annotations" / "a.xml").write_text(
        (root / "Annotations" / "a.xml").read_text().replace("rbc", "Rbc")
    )
    with pytest.raises(
        DatasetError,
        match=r"predictions\.json: its category ids \(.*predictions\.categories\.json\) mean other"
        r" classes .*'rbc' vs 'Rbc'",
    ):
        evaluate_files(root, pred)


def test_class_names_of_one_predictions_file_do_not_apply_to_another(tmp_path):
    """X.categories.json belongs to X.json alone; a categories.json for the whole folder
    (what tools/evaluate.py --output wrote) is not read."""
    objs = lambda name: [(name, (10, 10, 60, 60), False)]  # noqa: E731
    root = write_voc(tmp_path / "voc", {"a": (100, 100, objs("rbc")), "b": (100, 100, objs("wbc"))})
    pred = _gt_as_json(root, tmp_path / "run")
    other = pred.with_name("other.json")
    other.write_text(pred.read_text())
    (pred.parent / "categories.json").write_text(json.dumps([{"id": 1, "name": "cat"}]))
    categories_file(pred).write_text(
        json.dumps([{"id": 1, "name": "cat"}, {"id": 2, "name": "wbc"}])
    )
    assert evaluate_files(root, other)["bbox"]["AP50"] == pytest.approx(100.0)
    with pytest.raises(DatasetError, match=r"predictions\.json: its category ids .*'cat' vs 'rbc'"):
        evaluate_files(root, pred)


def test_explicit_class_list_rejects_other_names(tmp_path):
    objs = lambda name: [(name, (10, 10, 60, 60), False)]  # noqa: E731
    from PIL import Image

    Image.new("RGB", (100, 100)).save(tmp_path / "x.jpg")
    root = write_voc(
        tmp_path / "voc",
        {"a": (100, 100, objs("rbc")), "b": (100, 100, objs("rbcc"))},
        jpeg_from=tmp_path / "x.jpg",
    )
    cfg = get_resdet_cfg()
    cfg.RESDET.DATA.TRAIN, cfg.RESDET.DATA.CLASSES = str(root), ["rbc ", "wbc"]
    register_user_datasets(cfg)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    assert MetadataCatalog.get("resdet_train").thing_classes == ["rbc", "wbc"]
    with pytest.raises(
        DatasetError,
        match=r"b\.xml: object 0: class 'rbcc' is not one of the known classes "
        r"\['rbc', 'wbc'\]",
    ):
        DatasetCatalog.get("resdet_train")

"""Detection evaluation: COCO AP equals pycocotools, VOC AP follows the devkit (11-point and
area, difficult ignored), ground truth as predictions scores 100, bad prediction files
fail in one line, and the trainer's evaluator and tools/evaluate.py agree."""

import contextlib
import copy
import io
import json
import logging
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, load_tool
from detectron2.data import DatasetCatalog
from detectron2.evaluation.pascal_voc_evaluation import voc_eval as detectron2_voc_eval
from detectron2.structures import Boxes, Instances
from test_data import coco128, write_voc

import resdet
from resdet.data import DatasetError, register_coco_json, register_voc_folder
from resdet.evaluation import (
    GroundTruth,
    build_evaluator,
    categories,
    evaluate_files,
    voc_eval,
)


def coco_gt_as_results(json_file):
    d = json.loads(Path(json_file).read_text())
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in d["annotations"]
        if not a["iscrowd"]
    ]


def noisy_coco_results(json_file, seed=0):
    """Ground truth with known errors: 20% dropped, boxes jittered, random scores, duplicates
    and two false positives per image."""
    rng = np.random.default_rng(seed)
    d = json.loads(Path(json_file).read_text())
    cats = [c["id"] for c in d["categories"]]
    out = []
    for a in d["annotations"]:
        if a["iscrowd"] or rng.random() < 0.2:
            continue
        x, y, w, h = a["bbox"]
        box = [
            x + rng.normal(0, 0.1 * w),
            y + rng.normal(0, 0.1 * h),
            w * math.exp(rng.normal(0, 0.1)),
            h * math.exp(rng.normal(0, 0.1)),
        ]
        out.append(
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": box,
                "score": rng.random(),
            }
        )
        if rng.random() < 0.1:
            out.append(dict(out[-1], score=out[-1]["score"] * 0.5))
    for img in d["images"]:
        for _ in range(2):
            x, y = rng.random() * img["width"] * 0.8, rng.random() * img["height"] * 0.8
            out.append(
                {
                    "image_id": img["id"],
                    "category_id": int(rng.choice(cats)),
                    "bbox": [x, y, 10 + rng.random() * 100, 10 + rng.random() * 100],
                    "score": rng.random(),
                }
            )
    return out


def pycocotools_metrics(json_file, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(json_file))
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_class = []
    for k in range(len(gt.getCatIds())):
        p = ev.eval["precision"][:, :, k, 0, -1]
        per_class.append(p[p > -1].mean() if (p > -1).any() else float("nan"))
    return ev.stats[:6], per_class


def test_coco_ground_truth_as_predictions_scores_100(shared_data, tmp_path):
    json_file, _ = coco128(shared_data)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(coco_gt_as_results(json_file)))
    r = evaluate_files(json_file, pred, "coco")["bbox"]
    assert all(r[k] == pytest.approx(100.0) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"))
    per_class = [v for k, v in r.items() if k.startswith("AP-")]
    assert len(per_class) == 80
    assert all(v == pytest.approx(100.0) or math.isnan(v) for v in per_class)
    assert sum(not math.isnan(v) for v in per_class) == 71  # classes present in coco128


def test_coco_faster_coco_eval_equals_pycocotools(shared_data, tmp_path):
    json_file, _ = coco128(shared_data)
    results = noisy_coco_results(json_file)
    pred = tmp_path / "pred.json"
    pred.write_text(json.dumps(results))
    r = evaluate_files(json_file, pred, "coco")["bbox"]
    stats, per_class = pycocotools_metrics(json_file, results)
    ours = [r[k] / 100 for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")]
    assert 0.2 < ours[0] < 0.9  # the errors cost AP, and the metric sees them
    np.testing.assert_allclose(ours, stats, atol=1e-4)
    np.testing.assert_allclose(
        [v / 100 for k, v in r.items() if k.startswith("AP-")], per_class, atol=1e-4
    )


def test_voc_ground_truth_as_devkit_results_scores_100(shared_data, tmp_path):
    """bccd's test split (the default for a VOC folder with ImageSets/Main/test.txt)."""
    bccd = shared_data / "bccd"
    test_ids = (bccd / "ImageSets" / "Main" / "test.txt").read_text().split()
    lines = {}
    for image_id in test_ids:
        for obj in ET.parse(bccd / "Annotations" / f"{image_id}.xml").findall("object"):
            b = [obj.findtext(f"bndbox/{c}") for c in ("xmin", "ymin", "xmax", "ymax")]
            lines.setdefault(obj.findtext("name"), []).append(f"{image_id} 1.0 {' '.join(b)}\n")
    for name, ls in lines.items():
        (tmp_path / f"comp4_det_test_{name}.txt").write_text("".join(ls))
    for metric in ("voc07", "voc"):
        r = evaluate_files(bccd, tmp_path, metric)["bbox"]
        assert (
            r["AP50"] == pytest.approx(100)
            and r["AP"] == pytest.approx(100)
            and r["AP75"] == pytest.approx(100)
        )
        assert [r[f"AP50-{c}"] for c in ("Platelets", "RBC", "WBC")] == pytest.approx([100] * 3)


@pytest.fixture
def hand_voc(tmp_path):
    """Three dogs and one difficult dog on two images; five detections: TP, FP, one on the
    difficult dog, TP, a duplicate of the first (FP)."""
    root = write_voc(
        tmp_path / "voc",
        {
            "a": (
                640,
                480,
                [
                    ("dog", (1, 1, 10, 10), 0),
                    ("dog", (21, 1, 30, 10), 0),
                    ("dog", (41, 1, 50, 10), 1),
                ],
            ),
            "b": (640, 480, [("dog", (1, 1, 10, 10), 0)]),
        },
        {"test": ["a", "b"]},
    )
    det = tmp_path / "det"
    det.mkdir()
    (det / "comp4_det_test_dog.txt").write_text(
        "a 0.9 1 1 10 10\nb 0.8 61 61 70 70\na 0.7 41 1 50 10\nb 0.6 1 1 10 10\na 0.5 1 1 10 10\n"
    )
    return root, det


def test_voc_11_point_and_area_ap_on_a_hand_made_case(hand_voc):
    """By hand: npos = 3 (the difficult dog does not count); ranks TP, FP, ignored, TP, FP give
    recall 1/3 1/3 1/3 2/3 2/3 and precision 1 1/2 1/2 2/3 1/2. 11-point: precision 1 at
    t = 0..0.3, 2/3 at t = 0.4..0.6, 0 above: (4 + 3 * 2/3) / 11 = 6/11. Area: 1/3 * 1 +
    1/3 * 2/3 + 1/3 * 0 = 5/9."""
    root, det = hand_voc
    gt = {
        "a": (
            np.array([[1, 1, 10, 10], [21, 1, 30, 10], [41, 1, 50, 10]], float),
            np.array([0, 0, 1], bool),
        ),
        "b": (np.array([[1, 1, 10, 10]], float), np.array([0], bool)),
    }
    dets = [
        (ln.split()[0], float(ln.split()[1]), [float(v) for v in ln.split()[2:]])
        for ln in (det / "comp4_det_test_dog.txt").read_text().splitlines()
    ]
    ((rec, prec, ap07),) = voc_eval(gt, dets, use_07_metric=True)
    np.testing.assert_allclose(rec, [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(prec, [1, 1 / 2, 1 / 2, 2 / 3, 1 / 2])
    assert ap07 == pytest.approx(6 / 11) and voc_eval(gt, dets)[0][2] == pytest.approx(5 / 9)

    # the whole path (VOC folder -> records -> devkit coordinates) gives the same, in percent
    r07 = evaluate_files(root, det, "voc07")["bbox"]
    r10 = evaluate_files(root, det, "voc")["bbox"]
    assert r07["AP50"] == pytest.approx(600 / 11) and r10["AP50"] == pytest.approx(500 / 9)
    assert r07["AP50"] != pytest.approx(r10["AP50"])
    # and so does Detectron2's port of the devkit (on a case free of its boundary differences)
    for use07, expected in ((True, 6 / 11), (False, 5 / 9)):
        _, _, ref = detectron2_voc_eval(
            str(det / "comp4_det_test_{}.txt"),
            str(root / "Annotations" / "{}.xml"),
            str(root / "ImageSets" / "Main" / "test.txt"),
            "dog",
            0.5,
            use07,
        )
        assert ref == pytest.approx(expected)


def test_voc_follows_devkit_on_iou_exactly_half_and_score_ties():
    gt = {"a": (np.array([[1, 1, 10, 10]], float), np.array([False]))}
    # 10x5 pixels inside a 10x10 box: IoU = 50 / 100 exactly; VOCevaldet.m matches at ov >= 0.5
    assert voc_eval(gt, [("a", 0.9, [1, 1, 10, 5])])[0][2] == 1.0
    # equal scores keep their input order (MATLAB's sort is stable). 36 detections, one TP at
    # index 10 (score 0.5) behind 14 at 0.9 and 4 earlier at 0.5: rank 19, AP = 1/19. On this
    # pattern numpy's default (unstable) argsort moves the TP to rank 22.
    pattern = "llhhhhhhlllllllllllhllhhllhlllhhlhlh"
    dets = [
        ("a", 0.9 if c == "h" else 0.5, [1, 1, 10, 10] if i == 10 else [100, 100, 120, 120])
        for i, c in enumerate(pattern)
    ]
    assert voc_eval(gt, dets)[0][2] == pytest.approx(1 / 19)
    # 11-point thresholds are exact tenths: 7 of 10 objects found at precision 1 reach
    # t = 0, 0.1, ..., 0.7, so AP = 8/11 (np.arange's 0.7000000000000001 would give 7/11)
    gt10 = {
        "a": (
            np.array([[1 + 20 * i, 1, 10 + 20 * i, 10] for i in range(10)], float),
            np.zeros(10, bool),
        )
    }
    found7 = [("a", 1.0 - i / 100, [1 + 20 * i, 1, 10 + 20 * i, 10]) for i in range(7)]
    assert voc_eval(gt10, found7, use_07_metric=True)[0][2] == pytest.approx(8 / 11)


def _instances(records, predictions):
    """Model-style outputs from predictions in resdet's internal form."""
    outputs = []
    for r in records:
        ps = [p for p in predictions if p["image_id"] == r["image_id"]]
        inst = Instances((r["height"], r["width"]))
        inst.pred_boxes = Boxes(
            torch.tensor([p["bbox"] for p in ps], dtype=torch.float64).reshape(-1, 4)
        )
        inst.scores = torch.tensor([p["score"] for p in ps], dtype=torch.float64)
        inst.pred_classes = torch.tensor([p["category_id"] for p in ps], dtype=torch.int64)
        outputs.append({"instances": inst})
    return outputs


@pytest.mark.parametrize("kind", ["coco", "voc"])
def test_trainer_evaluator_writes_metrics_that_evaluate_files_reproduces(
    shared_data, tmp_path, kind
):
    cfg = resdet.get_resdet_cfg()
    if kind == "coco":
        json_file, images = coco128(shared_data)
        register_coco_json("eval_test_coco128", json_file, images)
        name, gt_path, split = "eval_test_coco128", json_file, None
    else:
        register_voc_folder("eval_test_bccd", shared_data / "bccd", "test")
        name, gt_path, split = "eval_test_bccd", shared_data / "bccd", "test"
        cfg.RESDET.EVAL.METRIC = "voc"
    records = DatasetCatalog.get(name)
    rng = np.random.default_rng(1)
    # jittered ground truth; corners re-ordered, as a model never predicts a box of negative size
    predictions = [
        {
            "image_id": r["image_id"],
            "category_id": a["category_id"],
            "score": float(rng.random()),
            "bbox": np.sort((np.array(a["bbox"]) + rng.normal(0, 3, 4)).reshape(2, 2).T)
            .T.ravel()
            .tolist(),
        }
        for r in records
        for a in r["annotations"]
        if not a.get("iscrowd") and rng.random() < 0.8
    ]
    evaluator = build_evaluator(cfg, name, str(tmp_path / "inference"))
    evaluator.reset()
    for i in range(0, len(records), 8):  # batches, as inference_on_dataset feeds them
        evaluator.process(records[i : i + 8], _instances(records[i : i + 8], predictions))
    results = evaluator.evaluate()
    assert 30 < results["bbox"]["AP50"] < 100
    written = json.loads((tmp_path / "inference" / "metrics.json").read_text())
    assert written["bbox"]["AP50"] == pytest.approx(results["bbox"]["AP50"])
    # the class names of predictions.json travel with it, not in a file for the folder
    names = json.loads((tmp_path / "inference" / "predictions.categories.json").read_text())
    assert names == categories(GroundTruth.from_dataset(name))
    assert not (tmp_path / "inference" / "categories.json").exists()
    again = evaluate_files(
        gt_path,
        tmp_path / "inference" / "predictions.json",
        "voc" if kind == "voc" else "coco",
        split=split,
    )
    for k, v in results["bbox"].items():
        assert again["bbox"][k] == pytest.approx(v, abs=1e-9, nan_ok=True), k


@pytest.mark.parametrize(
    "content,expected",
    [
        ("[{", r"pred\.json: malformed JSON"),
        ('{"image_id": 9}', r"pred\.json: a COCO results file is a list"),
        (
            '[{"image_id": 123456, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]',
            r"pred\.json: entry 0: image_id 123456 is not in the ground truth",
        ),
        (
            '[{"image_id": 9, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},'
            ' {"image_id": 9, "category_id": 12, "bbox": [1, 2, 3, 4], "score": 0.5}]',
            r"pred\.json: entry 1: category_id 12 is not a ground-truth category",
        ),
        (
            '[{"image_id": 9, "category_id": 1, "bbox": [1, 2, 3], "score": 0.5}]',
            r"pred\.json: entry 0: needs 'bbox'",
        ),
    ],
)
def test_bad_coco_predictions_one_line(shared_data, tmp_path, content, expected):
    json_file, _ = coco128(shared_data)
    (tmp_path / "pred.json").write_text(content)
    with pytest.raises(DatasetError, match=expected) as e:
        evaluate_files(json_file, tmp_path / "pred.json")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name,content,expected",
    [
        (
            "comp4_det_test_dog.txt",
            "a 0.9 1 1 10\n",
            r"comp4_det_test_dog\.txt: line 1: expected 'image_id score",
        ),
        (
            "comp4_det_test_dog.txt",
            "a 0.9 1 1 10 10\nzz 0.5 1 1 10 10\n",
            r"dog\.txt: line 2: image 'zz' is not in",
        ),
        (
            "comp4_det_test_cat.txt",
            "a 0.9 1 1 10 10\n",
            r"comp4_det_test_cat\.txt: class 'cat' is not one of",
        ),
        ("dets.txt", "a 0.9 1 1 10 10\n", r"dets\.txt: not a devkit result file name"),
    ],
)
def test_bad_devkit_results_one_line(hand_voc, name, content, expected):
    root, det = hand_voc
    (det / "comp4_det_test_dog.txt").unlink()
    (det / name).write_text(content)
    with pytest.raises(DatasetError, match=expected) as e:
        evaluate_files(root, det, "voc")
    assert "\n" not in str(e.value)


def test_evaluate_tool(shared_data, tmp_path):
    json_file, _ = coco128(shared_data)
    pred, out = tmp_path / "pred.json", tmp_path / "metrics.json"
    pred.write_text(json.dumps(noisy_coco_results(json_file)))
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "evaluate.py"),
            "--gt",
            str(json_file),
            "--pred",
            str(pred),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr
    stats, _ = pycocotools_metrics(json_file, noisy_coco_results(json_file))
    assert json.loads(out.read_text())["bbox"]["AP"] == pytest.approx(stats[0] * 100, abs=1e-2)
    assert "| category" in run.stdout and "AP50" in run.stdout

    out.unlink()
    pred.write_text('[{"image_id": 123456, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]')
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools" / "evaluate.py"),
            "--gt",
            str(json_file),
            "--pred",
            str(pred),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert run.returncode != 0 and not out.exists()
    assert (
        run.stderr.strip().splitlines()[-1]
        == f"error: {pred}: entry 0: image_id 123456 is not in the ground truth"
    )


# ---------------------------------------------------------------- the one data contract

COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def edited_coco128(shared_data, tmp_path, edit, name="gt.json"):
    json_file, _ = coco128(shared_data)
    d = json.loads(json_file.read_text())
    edit(d)
    out = tmp_path / name
    out.write_text(json.dumps(d))
    return out


def write_json(path, data):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data))
    return Path(path)


def test_coco128_scores_exactly_what_the_raw_file_gives(shared_data, tmp_path):
    """Scored from the checked records, coco128 still gives what COCOeval gives on the
    file itself: its image and category ids, its segment areas (not box areas: they put
    objects in other size ranges here), its crowd regions."""
    from faster_coco_eval import COCO, COCOeval_faster

    json_file, _ = coco128(shared_data)
    raw = json.loads(json_file.read_text())
    bucket = lambda area: (area >= 32**2) + (area >= 96**2)  # noqa: E731
    assert any(bucket(a["area"]) != bucket(a["bbox"][2] * a["bbox"][3]) for a in raw["annotations"])
    results = noisy_coco_results(json_file)
    r = evaluate_files(json_file, write_json(tmp_path / "pred.json", results))["bbox"]
    gt = COCO(str(json_file))
    ev = COCOeval_faster(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
    ev.run()
    assert [r[k] for k in COCO_STATS] == [float(s * 100) for s in ev.stats[:6]]


def test_repeated_annotation_ids_do_not_cost_ap(shared_data, tmp_path):
    """COCOeval matches ground truth by annotation id: read from the file, perfect
    predictions scored 67.8 AP here."""

    def edit(d):
        for a in d["annotations"][1::2]:
            a["id"] = d["annotations"][0]["id"]

    gt = edited_coco128(shared_data, tmp_path, edit)
    pred = write_json(tmp_path / "pred.json", coco_gt_as_results(coco128(shared_data)[0]))
    r = evaluate_files(gt, pred)["bbox"]
    assert [r[k] for k in COCO_STATS] == pytest.approx([100.0] * 6)


def test_missing_areas_size_objects_by_their_boxes(shared_data, tmp_path):
    """Without 'area' every object fell in the small range (APm, APl NaN); with box areas
    the result is what pycocotools gives on the file whose area is the box area."""

    def no_area(d):
        for a in d["annotations"]:
            del a["area"]

    def box_area(d):
        for a in d["annotations"]:
            a["area"] = a["bbox"][2] * a["bbox"][3]

    json_file, _ = coco128(shared_data)
    results = noisy_coco_results(json_file)
    pred = write_json(tmp_path / "pred.json", results)
    r = evaluate_files(edited_coco128(shared_data, tmp_path, no_area), pred)["bbox"]
    stats, _ = pycocotools_metrics(
        edited_coco128(shared_data, tmp_path, box_area, "b.json"), results
    )
    assert not any(math.isnan(r[k]) for k in COCO_STATS)
    np.testing.assert_allclose([r[k] / 100 for k in COCO_STATS], stats, atol=1e-4)


def test_metrics_output_leaves_nothing_that_refuses_other_predictions(shared_data, tmp_path):
    """tools/evaluate.py --output results/voc.json wrote results/categories.json, which was
    then read for every predictions file in results/: a valid COCO evaluation there was
    refused. Metrics name their classes in their per-class keys; nothing else is written."""
    evaluate = load_tool("evaluate")
    bccd, json_file = shared_data / "bccd", coco128(shared_data)[0]
    results = tmp_path / "results"
    truth = GroundTruth.from_path(bccd)
    voc_pred = write_json(
        results / "voc_pred.json",
        [
            {
                "image_id": r["image_id"],
                "category_id": a["category_id"] + 1,
                "bbox": [a["bbox"][0], a["bbox"][1], *np.subtract(a["bbox"][2:], a["bbox"][:2])],
                "score": 1.0,
            }
            for r in truth.records
            for a in r["annotations"]
        ],
    )
    argv = ["--gt", str(bccd), "--pred", str(voc_pred), "--output", str(results / "voc.json")]
    assert evaluate.main(argv) == 0
    coco_pred = write_json(results / "coco_pred.json", coco_gt_as_results(json_file))
    argv = ["--gt", str(json_file), "--pred", str(coco_pred), "--output", str(results / "c.json")]
    assert evaluate.main(argv) == 0
    assert json.loads((results / "c.json").read_text())["bbox"]["AP"] == pytest.approx(100)
    voc = json.loads((results / "voc.json").read_text())["bbox"]
    assert [k for k in voc if k.startswith("AP50-")] == [f"AP50-{c}" for c in truth.class_names]
    assert sorted(p.name for p in results.iterdir()) == [
        "c.json",
        "coco_pred.json",
        "voc.json",
        "voc_pred.json",
    ]


def _as_coco_dict(json_file):
    """coco128's ground truth as scored detections in the COCO dict form a predict tool
    writes: its own image and category numbering, file and class names inside."""
    raw = json.loads(Path(json_file).read_text())
    images = [
        {"id": k + 1, "file_name": im["file_name"], "width": im["width"], "height": im["height"]}
        for k, im in enumerate(reversed(raw["images"]))
    ]
    image_id = {im["id"]: k + 1 for k, im in enumerate(reversed(raw["images"]))}
    cats = sorted(raw["categories"], key=lambda c: c["name"])  # ids by name order, not COCO's
    category_id = {c["id"]: k + 1 for k, c in enumerate(cats)}
    return {
        "images": images,
        "categories": [{"id": k + 1, "name": c["name"]} for k, c in enumerate(cats)],
        "annotations": [
            {
                "id": n + 1,
                "image_id": image_id[a["image_id"]],
                "category_id": category_id[a["category_id"]],
                "bbox": a["bbox"],
                "score": 1.0,
            }
            for n, a in enumerate(r for r in raw["annotations"] if not r["iscrowd"])
        ],
    }


def test_coco_dict_predictions_carry_their_class_and_file_names(shared_data, tmp_path):
    json_file, _ = coco128(shared_data)
    pred = _as_coco_dict(json_file)
    r = evaluate_files(json_file, write_json(tmp_path / "pred.json", pred))["bbox"]
    assert [r[k] for k in COCO_STATS] == pytest.approx([100.0] * 6)
    in_memory = resdet.evaluate_predictions(str(json_file), pred)["bbox"]
    assert in_memory == pytest.approx(r, nan_ok=True)


@pytest.mark.parametrize(
    "edit,expected",
    [
        (
            lambda p: p["categories"][0].update(name="persn"),
            r"pred\.json: categories\[0\]: class 'persn' is not a ground-truth class",
        ),
        (
            lambda p: p["images"][0].update(file_name="holiday.jpg"),
            r"pred\.json: images\[0\]: file_name 'holiday\.jpg' is not an image of the ground",
        ),
        (
            lambda p: [a.pop("score") for a in p["annotations"]],
            r"pred\.json: annotations\[0\] has no 'score': this is ground truth",
        ),
        (
            lambda p: p["annotations"][2].update(image_id=999),
            r"pred\.json: annotations\[2\]: image_id 999 is not in its 'images'",
        ),
    ],
)
def test_bad_coco_dict_predictions_one_line(shared_data, tmp_path, edit, expected):
    json_file, _ = coco128(shared_data)
    pred = _as_coco_dict(json_file)
    edit(pred)
    with pytest.raises(DatasetError, match=expected) as e:
        evaluate_files(json_file, write_json(tmp_path / "pred.json", pred))
    assert "\n" not in str(e.value)


def test_boxes_given_as_corners_are_refused_not_scored_low(shared_data, tmp_path):
    json_file, _ = coco128(shared_data)
    corners = [
        dict(
            p,
            bbox=[
                p["bbox"][0],
                p["bbox"][1],
                p["bbox"][0] + p["bbox"][2],
                p["bbox"][1] + p["bbox"][3],
            ],
        )
        for p in coco_gt_as_results(json_file)
    ]
    with pytest.raises(
        DatasetError,
        match=r"xyxy\.json: the boxes look like \[x0, y0, x1, y1\], not COCO's \[x, y, width,"
        r" height\]: read as \[x, y, w, h\], \d+ of 929 reach far outside their image \(first:"
        r" entry \d+, .*\); convert each box to \[x0, y0, x1 - x0, y1 - y0\]",
    ) as e:
        evaluate_files(json_file, write_json(tmp_path / "xyxy.json", corners))
    assert "\n" not in str(e.value)
    # VOC ground truth with JSON predictions too
    bccd = shared_data / "bccd"
    truth = GroundTruth.from_path(bccd)
    voc_corners = [
        {
            "image_id": r["image_id"],
            "category_id": a["category_id"] + 1,
            "bbox": a["bbox"],
            "score": 1,
        }
        for r in truth.records
        for a in r["annotations"]
    ]
    with pytest.raises(DatasetError, match=r"voc\.json: the boxes look like \[x0, y0, x1, y1\]"):
        evaluate_files(bccd, write_json(tmp_path / "voc.json", voc_corners))


def test_predictions_in_memory_score_as_the_same_file(shared_data, tmp_path):
    json_file, _ = coco128(shared_data)
    results = noisy_coco_results(json_file)
    from_file = resdet.evaluate_predictions(
        str(json_file), write_json(tmp_path / "p.json", results)
    )
    # as held in memory: numbers may be numpy's, boxes tuples
    in_memory = resdet.evaluate_predictions(
        str(json_file),
        [
            dict(
                p,
                image_id=np.int64(p["image_id"]),
                bbox=tuple(np.float64(v) for v in p["bbox"]),
                score=np.float32(p["score"]),
            )
            for p in results
        ],
    )
    assert 20 < in_memory["bbox"]["AP"] < 90
    assert in_memory["bbox"] == pytest.approx(from_file["bbox"], nan_ok=True)
    with pytest.raises(
        DatasetError, match=r"^the predictions \(in memory\): entry 0: image_id"
    ) as e:
        resdet.evaluate_predictions(str(json_file), [dict(results[0], image_id=-1)])
    with pytest.raises(DatasetError, match=r"^the predictions \(in memory\): a COCO results") as e:
        resdet.evaluate_predictions(str(json_file), 42)
    assert "\n" not in str(e.value)


def test_registered_coco_data_without_areas_is_said(shared_data, caplog):
    """Detectron2's own loader drops COCO's 'area': scored from such records, the size
    ranges come from box areas, and the log says so."""
    from detectron2.data.datasets import register_coco_instances

    json_file, images = coco128(shared_data)
    register_coco_instances("eval_test_d2_coco128", {}, str(json_file), str(images))
    register_coco_json("eval_test_resdet_coco128", json_file, images)
    with caplog.at_level(logging.WARNING, logger="resdet.evaluation"):
        GroundTruth.from_dataset("eval_test_resdet_coco128")
        assert "have no COCO 'area'" not in caplog.text
        GroundTruth.from_dataset("eval_test_d2_coco128")
    assert "'eval_test_d2_coco128': 939 ground-truth objects have no COCO 'area'" in caplog.text


def test_boxes_normalized_to_0_1_are_refused_not_scored_0(shared_data, tmp_path):
    """YOLO's [0, 1] boxes read as pixels all fit in each image's top-left pixel: AP 0
    with no error before. A file or the list itself."""
    json_file, _ = coco128(shared_data)
    sizes = {
        im["id"]: (im["width"], im["height"]) for im in json.loads(json_file.read_text())["images"]
    }
    normalized = [
        dict(p, bbox=[b / sizes[p["image_id"]][k % 2] for k, b in enumerate(p["bbox"])])
        for p in coco_gt_as_results(json_file)
    ]
    with pytest.raises(DatasetError, match=r"norm.json: the boxes look normalized to \[0, 1\]"):
        evaluate_files(json_file, write_json(tmp_path / "norm.json", normalized))
    with pytest.raises(DatasetError, match=r"in memory\): the boxes look normalized"):
        evaluate_files(json_file, normalized)


def test_a_split_only_a_voc_folder_has_is_refused(shared_data, tmp_path):
    """--split on COCO ground truth evaluated every image without a word."""
    json_file, _ = coco128(shared_data)
    pred = write_json(tmp_path / "pred.json", coco_gt_as_results(json_file))
    with pytest.raises(resdet.errors.ConfigError, match="split 'val': applies to a VOC folder"):
        evaluate_files(json_file, pred, split="val")


def test_metrics_are_never_written_over_an_input(shared_data, tmp_path):
    """--output naming the predictions file (or the ground truth) overwrote it."""
    json_file, _ = coco128(shared_data)
    results = coco_gt_as_results(json_file)
    pred = write_json(tmp_path / "pred.json", results)
    for output in (pred, tmp_path / "." / "pred.json", pred.with_name("pred.categories.json")):
        if output.name.endswith("categories.json"):
            output.write_text(json.dumps(categories(GroundTruth.from_path(json_file))))
        before = output.read_text()
        with pytest.raises(resdet.errors.OutputError, match="is also an input"):
            evaluate_files(json_file, pred, output=output)
        assert output.read_text() == before
    assert json.loads(pred.read_text()) == results

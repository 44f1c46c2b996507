"""The one-command pipeline (make demo's engine): every report file, skipping finished
stages, redoing deleted or corrupted ones, and on a user's one-class VOC folder without
splits, the same AP50 in summary.json as its detect stage measured on the held-out
split. Shortened runs: tiny data, few iterations; tools/pipeline.py's main in-process."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from conftest import load_tool
from PIL import Image

SHORT = [
    "DATA.GENERATE.NUM_TRAIN",
    "16",
    "DATA.GENERATE.NUM_TEST",
    "4",
    "DATA.GENERATE.IMAGE_SIZE",
    "128",
    "DATA.GENERATE.CLS_PER_CLASS",
    "6",
    "DATA.CROP_SIZE",
    "32",
    "REPORT.NUM_IMAGES",
    "2",
    "PRETRAIN.OPTS",
    "['SOLVER.MAX_ITER','4','SOLVER.IMS_PER_BATCH','8','TEST.EVAL_PERIOD','2',"
    "'SOLVER.STEPS','(3,)','SOLVER.WARMUP_ITERS','1','INPUT.CROP_SIZE','32','INPUT.TEST_SIZE','32']",
    "DETECT.OPTS",
    "['SOLVER.MAX_ITER','4','SOLVER.WARMUP_ITERS','1','SOLVER.STEPS','(3,)',"
    "'SOLVER.IMS_PER_BATCH','2','INPUT.MIN_SIZE_TRAIN','(128,)','INPUT.MIN_SIZE_TEST','128',"
    "'RESDET.EVAL.NUM_VIS','2']",
]


def run(out, *extra, opts=SHORT):
    assert load_tool("pipeline").main(["--output", str(out)] + list(extra) + list(opts)) == 0
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run(out)


def test_short_demo_writes_every_report_file(demo):
    out, summary = demo
    assert set(summary["stages"].values()) == {"ran"}
    assert summary["elapsed_seconds"] > 0 and "AP50" in summary
    for png in ("pretrain/curves.png", "detect/curves.png", "report/predictions.png"):
        assert Image.open(out / png).size[0] > 50, png
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    for text in (md, page):
        assert "detector AP50" in text and "elapsed seconds" in text and "torch" in text
        assert "report/predictions.png" in text and "detect/curves.png" in text
    assert "MAX_ITER: 4" in md  # the detection config actually used is in the report
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["stages"]) == [
        "data",
        "pretrain",
        "convert",
        "detect",
        "evaluate",
        "report",
    ]
    conv = manifest["stages"]["convert"]
    assert all(v < 1e-4 for v in conv["metrics"]["max_abs_diff_per_stage"].values())
    assert all(len(h) == 64 for h in conv["outputs"].values())
    assert "torch" in conv["versions"]
    ev = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert set(ev) == {"coco", "voc07"}


def test_rerun_skips_finished_stages_and_redoes_damaged_ones(demo):
    out, _ = demo
    summary = run(out)
    assert summary["stages"] == {
        "data": "skipped",
        "pretrain": "skipped",
        "convert": "skipped",
        "detect": "skipped",
        "evaluate": "skipped",
        "report": "ran",
    }
    (out / "evaluate" / "metrics.json").unlink()  # deleted output
    summary = run(out)
    assert summary["stages"]["detect"] == "skipped" and summary["stages"]["evaluate"] == "ran"
    assert (out / "evaluate" / "metrics.json").is_file()
    weights = out / "convert" / "backbone_fpn.pth"
    weights.write_bytes(weights.read_bytes()[:-100] + b"corrupted" * 12)  # same size, wrong bytes
    summary = run(out)
    assert summary["stages"]["pretrain"] == "skipped"
    assert [summary["stages"][s] for s in ("convert", "detect", "evaluate")] == ["ran"] * 3


def test_rerun_with_changed_settings_reruns_those_stages_and_records_them(demo):
    """A stage's fingerprint covers the pipeline settings it depends on: changing the
    detector's options reruns detect (and evaluate after it), and manifest.json records
    the settings each stage ran with."""
    out, _ = demo
    opts = list(SHORT)
    i = opts.index("DETECT.OPTS") + 1
    opts[i] = opts[i].replace("'RESDET.EVAL.NUM_VIS','2'", "'RESDET.EVAL.NUM_VIS','1'")
    summary = run(out, opts=opts)
    assert [summary["stages"][s] for s in ("data", "pretrain", "convert")] == ["skipped"] * 3
    assert summary["stages"]["detect"] == summary["stages"]["evaluate"] == "ran"
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert "'RESDET.EVAL.NUM_VIS', '1'" in str(stages["detect"]["settings"]["DETECT"])
    assert len(list((out / "detect" / "predictions").glob("*.jpg"))) == 1
    assert run(out, opts=opts)["stages"]["detect"] == "skipped"  # the same settings again


def test_missing_user_data_is_a_one_line_error(tmp_path, capsys):
    assert (
        load_tool("pipeline").main(
            ["--output", str(tmp_path / "o"), "--data", str(tmp_path / "nope")]
        )
        == 2
    )
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == f"error: {tmp_path / 'nope'}: DATA.ROOT does not exist "
        "(a COCO .json file or a VOC folder)"
    )


def test_bad_seed_is_a_one_line_error(tmp_path, capsys):
    assert load_tool("pipeline").main(["--output", str(tmp_path / "o"), "SEED", "abc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(
        "SEED must be a whole number (like its default 0), got 'abc'"
    ), err


def test_background_boxes_overlap_no_box_and_stay_inside():
    from resdet.pipeline import background_boxes

    rng = np.random.RandomState(0)
    boxes = [(10, 10, 60, 50), (100, 80, 180, 150)]
    found = background_boxes(boxes, 200, 160, 40, 5, rng)
    assert len(found) == 5
    for x0, y0, x1, y1 in found:
        assert 0 <= x0 and 0 <= y0 and x1 <= 200 and y1 <= 160 and x1 - x0 == pytest.approx(40)
        assert not any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in boxes)
    # an image covered by its box has no background
    assert background_boxes([(0, 0, 200, 160)], 200, 160, 40, 3, rng) == []


ONE_CLASS = [
    "DATA.HOLDOUT_FRACTION",
    "0.2",
    "DATA.CROP_SIZE",
    "32",
    "REPORT.NUM_IMAGES",
    "2",
    "PRETRAIN.OPTS",
    "['SOLVER.MAX_ITER','2','SOLVER.IMS_PER_BATCH','8','TEST.EVAL_PERIOD','2',"
    "'SOLVER.STEPS','(1,)','SOLVER.WARMUP_ITERS','1','INPUT.CROP_SIZE','32',"
    "'INPUT.TEST_SIZE','32']",
    "DETECT.OPTS",
    "['SOLVER.MAX_ITER','6','SOLVER.WARMUP_ITERS','1','SOLVER.STEPS','(5,)',"
    "'SOLVER.IMS_PER_BATCH','2','INPUT.MIN_SIZE_TRAIN','(128,)','INPUT.MAX_SIZE_TRAIN','192',"
    "'INPUT.MIN_SIZE_TEST','128','INPUT.MAX_SIZE_TEST','192',"
    "'MODEL.ROI_HEADS.SCORE_THRESH_TEST','0.0','MODEL.ROI_HEADS.NMS_THRESH_TEST','1.0',"
    "'MODEL.RPN.POST_NMS_TOPK_TEST','1000','TEST.DETECTIONS_PER_IMAGE','1000',"
    "'RESDET.EVAL.NUM_VIS','1','RESDET.EVAL.METRIC','voc07']",
    # every box kept and scored by VOC07 (all detections, not COCO's top 100): a barely
    # trained detector still scores above zero
]


@pytest.fixture(scope="module")
def one_class_voc(shared_data, tmp_path_factory):
    """30 bccd images with only their white blood cells annotated: one class, no ImageSets."""
    root = tmp_path_factory.mktemp("wbc")
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    src = shared_data / "bccd"
    for xml in sorted((src / "Annotations").glob("*.xml"))[:30]:
        tree = ET.parse(xml)
        for obj in tree.findall("object"):
            if obj.findtext("name").strip() != "WBC":
                tree.getroot().remove(obj)
        tree.write(root / "Annotations" / xml.name)
        (root / "JPEGImages" / f"{xml.stem}.jpg").symlink_to(src / "JPEGImages" / f"{xml.stem}.jpg")
    return root


def test_one_class_voc_folder_summary_is_the_detect_stages_ap50(one_class_voc, tmp_path):
    import resdet

    out = tmp_path / "run"
    summary = run(out, "--data", str(one_class_voc), opts=ONE_CLASS)
    detect = json.loads((out / "detect" / "metrics.json").read_text())["bbox"]
    assert detect["AP50"] > 0  # equal zeros would prove nothing
    # the detect stage measured VOC07 AP50 on the held-out split; so does the summary
    assert summary["AP50_voc07"] == pytest.approx(detect["AP50"], abs=1e-9)
    # scored against every image of the folder (the old evaluate stage), the number differs
    preds = out / "detect" / "inference" / "resdet_test" / "predictions.json"
    everything = resdet.evaluate_predictions(str(one_class_voc), preds, "voc07")
    assert everything["bbox"]["AP50"] < 0.5 * detect["AP50"]
    # pretraining had a second class, crops that overlap no cell: its top-1 means something
    crops = out / "data" / "classification"
    assert sorted(p.name for p in (crops / "train").iterdir()) == ["WBC", "__background__"]
    assert len(list((crops / "train" / "__background__").iterdir())) >= 10
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert stages["pretrain"]["metrics"]["classes"] == 2
    # what train_detector returned is what it wrote
    assert stages["detect"]["metrics"]["bbox"] == pytest.approx(detect)

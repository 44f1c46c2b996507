"""The one-command pipeline (make demo's engine): every report file, skipping finished
stages, redoing deleted or corrupted ones. A shortened demo: tiny data, few iterations."""
import json
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO

SHORT = ["DATA.GENERATE.NUM_TRAIN", "16", "DATA.GENERATE.NUM_TEST", "4", "DATA.GENERATE.IMAGE_SIZE", "128",
         "DATA.GENERATE.CLS_PER_CLASS", "6", "DATA.CROP_SIZE", "32", "REPORT.NUM_IMAGES", "2",
         "PRETRAIN.OPTS", "['SOLVER.MAX_ITER','4','SOLVER.IMS_PER_BATCH','8','TEST.EVAL_PERIOD','2',"
                          "'SOLVER.STEPS','(3,)','SOLVER.WARMUP_ITERS','1','INPUT.CROP_SIZE','32','INPUT.TEST_SIZE','32']",
         "DETECT.OPTS", "['SOLVER.MAX_ITER','4','SOLVER.WARMUP_ITERS','1','SOLVER.STEPS','(3,)',"
                        "'SOLVER.IMS_PER_BATCH','2','INPUT.MIN_SIZE_TRAIN','(128,)','INPUT.MIN_SIZE_TEST','128',"
                        "'RESDET.EVAL.NUM_VIS','2']"]


def run(out, *extra):
    r = subprocess.run([sys.executable, "tools/pipeline.py", "--output", str(out)] + SHORT + list(extra),
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
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
    assert list(manifest["stages"]) == ["data", "pretrain", "convert", "detect", "evaluate", "report"]
    conv = manifest["stages"]["convert"]
    assert all(v < 1e-4 for v in conv["metrics"]["max_abs_diff_per_stage"].values())
    assert all(len(h) == 64 for h in conv["outputs"].values())
    assert "torch" in conv["versions"]
    ev = json.loads((out / "evaluate" / "metrics.json").read_text())
    assert set(ev) == {"coco", "voc07"}


def test_rerun_skips_finished_stages_and_redoes_damaged_ones(demo):
    out, _ = demo
    summary = run(out)
    assert summary["stages"] == {"data": "skipped", "pretrain": "skipped", "convert": "skipped",
                                 "detect": "skipped", "evaluate": "skipped", "report": "ran"}
    (out / "evaluate" / "metrics.json").unlink()  # deleted output
    summary = run(out)
    assert summary["stages"]["detect"] == "skipped" and summary["stages"]["evaluate"] == "ran"
    assert (out / "evaluate" / "metrics.json").is_file()
    weights = out / "convert" / "backbone_fpn.pth"
    weights.write_bytes(weights.read_bytes()[:-100] + b"corrupted" * 12)  # same size, wrong bytes
    summary = run(out)
    assert summary["stages"]["pretrain"] == "skipped"
    assert [summary["stages"][s] for s in ("convert", "detect", "evaluate")] == ["ran"] * 3


def test_missing_user_data_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "tools/pipeline.py", "--output", str(tmp_path / "o"),
                        "--data", str(tmp_path / "nope")], cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'nope'}: DATA.ROOT does not exist (a COCO .json file or a VOC folder)"

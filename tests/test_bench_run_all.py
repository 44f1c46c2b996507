"""bench/run_all.py: the results rows and the table that says, per goal, met or missed."""

import json
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
from common import result  # noqa: E402
from run_all import markdown  # noqa: E402


def test_table_names_missed_goals_with_their_ratio():
    rows = [
        {"name": "a", "ratio": 2.5, "goal": 2.0, "met": True, "other": "x"},
        {"name": "b", "ratio": 1.234, "goal": 1.5, "met": False, "other": "y", "images": 200},
        {"name": "c", "ratio": 1.1, "goal": None, "met": None, "other": "z"},
    ]
    lines = {
        line.split("|")[1].strip(): line
        for line in markdown(rows).splitlines()
        if line.startswith("| ") and "---" not in line
    }
    assert "| met |" in lines["a"] and ">= 2.0x" in lines["a"]
    assert "MISSED (1.23x)" in lines["b"] and "images=200" in lines["b"]
    assert "| reference |" in lines["c"]


def test_row_ratio_and_verdict_follow_the_stored_times():
    """Unrounded times gave 1.469 beside stored times whose ratio is 1.468 (a CI failure)."""
    row = result("x", 0.109396, 0.160654, 1.4685, "y")
    assert (row["resdet_s"], row["other_s"]) == (0.1094, 0.16065)
    assert row["ratio"] == round(0.16065 / 0.1094, 3) == 1.468
    assert row["met"] is False


def test_quick_run_writes_results_and_table(tmp_path, shared_data):
    """The tool end to end on the two cheapest benchmarks (COCO evaluation, loading)."""
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench/run_all.py"),
            "--quick",
            "--output",
            str(out),
            "--only",
            "bench_coco_eval.py",
            "bench_loading.py",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"coco_eval_coco128", "loading_rrc224_flip", "decode_full_resolution"}
    coco = rows["coco_eval_coco128"]
    assert (
        coco["identical_AP"]
        and coco["AP_resdet"] == coco["AP_pycocotools"]
        and coco["AP_resdet"] > 0
    )
    for r in rows.values():
        assert r["ratio"] == round(r["other_s"] / r["resdet_s"], 3)
        assert r["met"] is (None if r["goal"] is None else r["ratio"] >= r["goal"])
    table = out.with_suffix(".md").read_text()
    assert all(f"| {name} |" in table for name in rows)

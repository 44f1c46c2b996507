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


def test_peak_is_the_best_rate_of_each_arithmetic():
    """The peak is each arithmetic's fastest kernel (best time, not median), so that no
    path is measured against a peak that a kernel of its own kind beat."""
    from common import peaks

    kernels = {"a": (None, 10.0, "fp32"), "b": (None, 20.0, "fp32"), "c": (None, 40.0, "int8")}
    peak, rates = peaks(kernels, {"a": [0.1, 0.2], "b": [0.4, 0.25], "c": [0.2, 0.1]})
    assert peak == {"fp32": 100.0, "int8": 400.0}
    assert rates == {"a_gflops": 100.0, "b_gflops": 80.0, "c_gflops": 400.0}


def test_every_benchmark_loads_against_the_current_api():
    """The benchmarks import resdet at the top: a name the library no longer has (the
    dense export's OrtDense, export_dense) fails here, not in the next `make bench`."""
    import importlib

    from run_all import BENCHMARKS

    for script in [s for s, _, _ in BENCHMARKS] + ["precision_ap.py"]:
        module = importlib.import_module(script.removesuffix(".py"))
        assert callable(module.main), script

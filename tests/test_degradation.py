"""Degradation study (resdet.analysis.degradation) on a small cifar10-mini subset
(symlinked into tmp_path): every output, the equal-iteration rule, resumption, bad input."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from PIL import Image
from test_pretrain import _this_checkout

from resdet.analysis.degradation import check_claims, plan_iterations
from resdet.io import safe_torch_load

TOOL = [sys.executable, str(REPO / "tools" / "degradation_study.py")]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=_this_checkout())
NETS = {"plain-8", "resnet-8", "plain-14", "resnet-14"}


@pytest.fixture(scope="module")
def cifar_subset(shared_data, tmp_path_factory):
    """All 10 classes, 12 train and 4 test images each: a study of a few seconds."""
    root = tmp_path_factory.mktemp("cifar")
    for split, n in (("train", 12), ("test", 4)):
        for cls in sorted(p.name for p in (shared_data / "cifar10-mini" / split).iterdir()):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((shared_data / "cifar10-mini" / split / cls).iterdir())[:n]:
                (root / split / cls / f.name).symlink_to(f)
    return root


def _run(data, out, *extra):
    return subprocess.run(
        TOOL
        + [
            "--depths",
            "8",
            "14",
            "--data",
            str(data),
            "--output",
            str(out),
            "--budget-minutes",
            "0.1",
            *extra,
            "SOLVER.IMS_PER_BATCH",
            "16",
        ],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _eval_iterations(net_dir):
    rows = [json.loads(line) for line in (net_dir / "train_log.json").read_text().splitlines()]
    return [r["iteration"] + 1 for r in rows if "val/top1_err" in r]


@pytest.fixture(scope="module")
def study(cifar_subset, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "out"
    r = _run(cifar_subset, out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout


def test_writes_every_output(study):
    out, stdout = study
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == NETS
    for errors in summary.values():
        assert set(errors) == {"train_error", "test_error"}
        assert all(0 <= v <= 1 for v in errors.values())
    # test_error is the final evaluation of the shipped weights
    eval_json = json.loads((out / "resnet-14" / "metrics.json").read_text())
    assert summary["resnet-14"]["test_error"] == pytest.approx(1 - eval_json["top1"])
    for png in ("curves.png", "responses.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.size[0] > 500
    responses = json.loads((out / "responses.json").read_text())
    # one response per 3x3 layer: the stem and two per block, depth - 1 in all
    assert {k: len(v["stds"]) for k, v in responses.items()} == {
        "plain-8": 7,
        "resnet-8": 7,
        "plain-14": 13,
        "resnet-14": 13,
    }
    verdict = json.loads((out / "verdict.json").read_text())
    assert set(verdict["responses_smaller"]) == {"8", "14"}
    for line in verdict["lines"]:
        assert line in stdout
    assert stdout.count("degradation (plain-14 train error") == 1


def test_every_net_trains_the_same_iterations(study):
    out, _ = study
    plan = json.loads((out / "plan.json").read_text())
    n = plan["iterations"]
    assert n >= 4 and plan["steps"] == [n // 2, 3 * n // 4] and plan["warmup_iters"] == n // 3
    lrs = {
        name: [
            r["lr"]
            for r in map(json.loads, (out / name / "train_log.json").read_text().splitlines())
            if "lr" in r
        ]
        for name in NETS
    }
    assert all(v == lrs["plain-8"] for v in lrs.values()) and lrs["plain-8"], (
        lrs
    )  # one LR schedule for all
    schedules = {name: _eval_iterations(out / name) for name in NETS}
    assert all(s == schedules["plain-8"] for s in schedules.values()), schedules
    assert schedules["plain-8"][-1] == n
    for name in NETS:  # the shipped weights say so too
        assert safe_torch_load(out / name / "model_final.pth")["meta"]["metrics"]["iterations"] == n


def test_finished_nets_are_not_retrained(study, cifar_subset):
    out, _ = study
    kept = {
        name: (out / name / "model_final.pth").stat().st_mtime_ns for name in NETS - {"resnet-14"}
    }
    for f in (out / "resnet-14").iterdir():  # as if the study had died before this net
        f.unlink()
    r = _run(cifar_subset, out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {name: (out / name / "model_final.pth").stat().st_mtime_ns for name in kept} == kept
    assert "reusing" in r.stdout and r.stdout.count("not retrained") == 3
    n = json.loads((out / "plan.json").read_text())["iterations"]
    assert _eval_iterations(out / "resnet-14")[-1] == n  # the same plan, not a new calibration

    changed = _run(cifar_subset, out, "--seed", "5")
    assert changed.returncode == 2
    assert changed.stderr.strip() == (
        f"error: {out / 'plan.json'}: planned with seed=0, not 5; "
        f"rerun with the same arguments or use a new --output"
    )


@pytest.mark.parametrize("case", ["missing_data", "odd_depth", "study_key"])
def test_bad_input_is_one_line(case, tmp_path, cifar_subset):
    out = tmp_path / "out"
    data, extra, expected = cifar_subset, [], None
    if case == "missing_data":
        data = tmp_path / "nope"
        expected = f"error: {data / 'train'}: no such folder"
    elif case == "odd_depth":
        extra = ["--depths", "8", "21"]
        expected = "error: --depths 21: CIFAR nets have 6n+2 layers"
    else:
        extra = ["SOLVER.MAX_ITER", "10"]
        expected = "error: override SOLVER.MAX_ITER: set by the study itself"
    r = _run(data, out, *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), r.stderr
    assert not out.exists()


def test_plan_fits_the_budget_with_scaled_steps():
    cal = {
        "plain-20": {"sec_per_iter": 0.5, "eval_sec": 2.0},
        "resnet-56": {"sec_per_iter": 1.5, "eval_sec": 6.0},
    }
    plan = plan_iterations(cal, 1000.0, (32000, 48000), 64000, eval_points=5)
    # 7 test-set passes per net (5 during training, the final one, layer responses): 56 s
    assert plan["iterations"] == (1000 - 56) // 2 == 472
    assert plan["steps"] == [236, 354] and plan["eval_period"] == 95
    assert plan["warmup_iters"] == 472 // 3 < plan["steps"][0]
    big = plan_iterations(cal, 1e5, (32000, 48000), 64000)
    assert big["warmup_iters"] == 400 < big["iterations"] // 3  # the paper's length, at most
    assert plan["estimated_s"] <= 1000
    assert plan_iterations(cal, 1.0, (32000, 48000), 64000)["iterations"] == 4  # the minimum


def test_claims_follow_the_numbers():
    summary = {
        "plain-20": {"train_error": 0.2},
        "plain-56": {"train_error": 0.3},
        "resnet-20": {"train_error": 0.2},
        "resnet-56": {"train_error": 0.25},
    }
    responses = {
        "plain-20": {"mean_std": 1.0},
        "resnet-20": {"mean_std": 0.5},
        "plain-56": {"mean_std": 0.8},
        "resnet-56": {"mean_std": 0.9},
    }
    v = check_claims(summary, responses, [20, 56])
    assert v["degradation"] and v["resnet_beats_plain"]
    assert v["responses_smaller"] == {"20": True, "56": False}
    summary["plain-56"]["train_error"] = 0.1
    v = check_claims(summary, responses, [20, 56])
    assert not v["degradation"] and not v["resnet_beats_plain"]
    assert v["lines"][0] == "degradation (plain-56 train error 0.1000 > plain-20 0.2000): NO"


@pytest.mark.parametrize(
    "name, depth, residual, projections",
    [
        ("plain18", 18, False, 0),
        ("plain34", 34, False, 0),
        ("r34_shortcut_a", 34, True, 0),
        ("r34_shortcut_b", 34, True, 3),
        ("r34_shortcut_c", 34, True, 16),
    ],
)
def test_imagenet_configs_build_the_papers_nets(name, depth, residual, projections):
    """Tables 2 and 3: plain nets and option A add no parameters, B projects where the
    width grows (3 stages), C on every one of ResNet-34's 16 blocks."""
    from resdet.pretrain import build_classifier, get_pretrain_cfg

    cfg = get_pretrain_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "imagenet" / f"{name}.yaml"))
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESDET.RESIDUAL, cfg.PRETRAIN.RECIPE) == (
        depth,
        residual,
        "paper",
    )
    model = build_classifier(cfg, 1000)
    convs = {
        k.rsplit(".", 1)[0]
        for k in model.state_dict()
        if ".shortcut." in k and k.endswith("weight") and "norm" not in k
    }
    assert len(convs) == projections

"""The `resdet` command (resdet.tools.main; `python -m resdet`): every command is reached
by its name with its own usage line, errors are argparse's; and a short detection run
shows its progress on the console (Detectron2's CommonMetricPrinter) before it ends."""

import re

import pytest
from conftest import REPO
from test_train_det import _converted

import resdet.tools
import resdet.tools.train_det
from resdet.detection.train import log_period
from resdet.tools import COMMANDS, main


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_answers_help_under_its_own_name(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: resdet {command} ")


def test_the_command_list_and_its_errors(capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    listed = capsys.readouterr().out
    assert e.value.code == 0
    assert [c for c in COMMANDS if re.search(rf"^  {c} ", listed, re.M)] == list(COMMANDS)
    for argv, message in [
        ([], "give a COMMAND"),
        (["trian"], "invalid choice: 'trian'"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    # `resdet eval` is `resdet train --eval-only`: the evaluation, not a training run
    calls = []
    monkeypatch.setattr(
        resdet.tools.train_det, "evaluate_detector", lambda *a, **k: calls.append(a)
    )
    monkeypatch.setattr(resdet.tools.train_det, "train_detector", lambda *a, **k: 1 / 0)
    assert main(["eval", "--config", "coco_r50.yaml", "MODEL.WEIGHTS", "w.pth"]) == 0
    assert calls == [("coco_r50.yaml",)]


def test_python_m_resdet_runs_the_command(tmp_path):
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "resdet",
            "evaluate",
            "--gt",
            str(tmp_path / "none.json"),
            "--pred",
            "p.json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {tmp_path / 'none.json'}: no such file"]


def test_log_period_gives_a_short_run_about_twenty_lines():
    assert [log_period(n) for n in (1, 4, 20, 100, 400, 90000)] == [1, 1, 1, 5, 20, 20]
    assert log_period(90000, 50) == 50 and log_period(100, 1) == 1  # a config's own period


def test_a_short_detection_run_prints_its_progress_before_it_ends(shared_data, tmp_path):
    """Four iterations: CommonMetricPrinter's lines (iteration, ETA, losses) for the first
    ones, not only the last (Detectron2's period of 20 printed nothing before the end)."""
    from resdet.detection.run import train_detector

    coco = shared_data / "coco128"
    out = tmp_path / "run"
    train_detector(
        "coco_r50_fpn.yaml",
        weights=_converted(tmp_path),
        train=(coco / "annotations/instances_train2017.json", coco / "train2017"),
        output_dir=out,
        overrides=[
            "MODEL.FPN.OUT_CHANNELS", "64", "MODEL.ROI_BOX_HEAD.FC_DIM", "128",
            "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "224",
            "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "SOLVER.IMS_PER_BATCH", "2",
            "SOLVER.BASE_LR", "0.005", "SOLVER.STEPS", "()", "SOLVER.MAX_ITER", "4",
            "DATALOADER.NUM_WORKERS", "0", "SEED", "0",
        ],
    )  # fmt: skip
    log = (out / "log.txt").read_text()  # what the console showed (Detectron2's logger)
    lines = [line for line in log.splitlines() if "total_loss:" in line]
    iters = [int(re.search(r"iter: (\d+)", line).group(1)) for line in lines]
    assert iters == [0, 1, 2, 3], lines
    assert all("eta:" in line for line in lines[1:3]), lines  # before the last iteration

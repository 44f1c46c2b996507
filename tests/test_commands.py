"""The `resdet` command (resdet.tools.main; `python -m resdet`): every command is reached
by its name with its own usage line, errors are argparse's."""

import re

import pytest
from conftest import REPO

import resdet.tools
import resdet.tools.train_det
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

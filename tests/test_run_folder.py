"""The run-folder contract (resdet.run_folder): one owner, one kind, no silent overwrite,
and --resume checked against the checkpoint before anything is written."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from resdet.config import get_pretrain_cfg, get_resdet_cfg
from resdet.engine import load
from resdet.errors import ConfigError, OutputError
from resdet.run_folder import LOCK_FILE, RECORD_FILE, RunFolder


def _lock(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "since": 0}
    (folder / LOCK_FILE).write_text(json.dumps(owner))


def test_a_second_run_into_a_folder_in_use_is_one_line(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _lock(tmp_path / "out", sleeper.pid)
        with pytest.raises(OutputError, match=rf"in use by another run \(pid {sleeper.pid} on"):
            with RunFolder(tmp_path / "out", "detection"):
                pass
        _lock(tmp_path / "other", 1, host="elsewhere")
        with pytest.raises(OutputError, match="host elsewhere.*delete .resdet-run.lock"):
            with RunFolder(tmp_path / "other", "detection"):
                pass
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not (tmp_path / "out" / RECORD_FILE).exists()  # nothing written by the refused run


def test_a_stale_lock_is_taken_over_and_released(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _lock(tmp_path, dead.pid)
    with RunFolder(tmp_path, "detection") as run:
        owner = json.loads((tmp_path / LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid()
        assert any(f"(pid {dead.pid}) is gone" in n for n in run.notes)
        run.started()
    assert not (tmp_path / LOCK_FILE).exists()
    assert json.loads((tmp_path / RECORD_FILE).read_text())["status"] == "finished"


def test_a_run_refuses_another_kinds_folder(tmp_path):
    with RunFolder(tmp_path, "pretrain") as run:
        run.started()
    for task in ("train", "eval"):
        with pytest.raises(ConfigError, match="holds a pretrain run; a detection run needs"):
            with RunFolder(tmp_path, "detection", task=task, resume=True):
                pass
    # and by default they do not share a folder
    assert get_resdet_cfg().OUTPUT_DIR != get_pretrain_cfg().OUTPUT_DIR


def test_a_fresh_run_refuses_a_finished_folder_unless_told(tmp_path):
    with RunFolder(tmp_path, "detection") as run:
        (tmp_path / "train_log.json").write_text('{"iteration": 0}\n')
        (tmp_path / "model_final.pth").write_bytes(b"weights")
        run.started()
    with pytest.raises(ConfigError, match=r"holds a finished run; continue it with --resume"):
        with RunFolder(tmp_path, "detection"):
            pass
    with RunFolder(tmp_path, "detection", task="eval") as run:  # evaluating into it is fine
        run.started()
    with RunFolder(tmp_path, "detection", resume=True) as run:
        run.started()
    assert (tmp_path / "train_log.json").is_file()
    with RunFolder(tmp_path, "detection", overwrite=True) as run:
        # the old run's outputs are gone: nothing is appended to its log
        assert not (tmp_path / "train_log.json").exists()
        assert not (tmp_path / "model_final.pth").exists()
        assert any("--overwrite: removed" in n for n in run.notes)
        run.started()


def test_a_run_folder_from_before_run_json_is_not_overwritten(tmp_path):
    (tmp_path / "last_checkpoint").write_text("model_final.pth")
    with pytest.raises(ConfigError, match="holds the outputs of an earlier run"):
        with RunFolder(tmp_path, "detection"):
            pass


def test_a_failed_run_before_its_first_step_leaves_only_its_log(tmp_path):
    (tmp_path / "mine.txt").write_text("the user's")
    with pytest.raises(RuntimeError):
        with RunFolder(tmp_path, "detection"):
            (tmp_path / "log.txt").write_text("why it failed")
            (tmp_path / "config.yaml").write_text("a run that never ran")
            (tmp_path / "events").mkdir()
            raise RuntimeError("bad first batch")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.txt", "mine.txt"]


def test_resume_with_another_config_stops_before_writing_anything(tmp_path):
    """--resume checks the config against the checkpoint's before config.yaml is written."""
    out = tmp_path / "run"
    setup = load("coco_r50_fpn.yaml", overrides={"MODEL.RESNETS.DEPTH": 18}, output_dir=out)
    with setup.run() as run:
        meta = setup.checkpoint_meta()
        torch.save({"model": {}, "meta": meta}, out / "model_final.pth")
        (out / "last_checkpoint").write_text("model_final.pth")
        run.started()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = load("coco_r50_fpn.yaml", overrides={"MODEL.RESNETS.DEPTH": 34}, output_dir=out)
    with pytest.raises(ConfigError, match=r"--resume: MODEL.RESNETS.DEPTH is 34 here but 18"):
        with other.run(resume=True):
            pass
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # config.yaml, run.json and the log untouched
    with setup.run(resume=True) as run:  # the same config resumes
        run.started()

"""Atomic writes and safe loading: the rules every checkpoint in resdet follows."""

import pickle

import numpy as np
import pytest
import torch
from conftest import CodeOnLoad

from resdet.io import CheckpointError, atomic_save, atomic_write, safe_pickle_load, safe_torch_load


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "ckpt.pth"
    atomic_save({"a": torch.ones(2)}, target)
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"partial")
            raise RuntimeError("killed mid-write")
    assert torch.equal(safe_torch_load(target)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.pkl"
    bad.write_bytes(pickle.dumps({"model": CodeOnLoad(str(marker))}))
    with pytest.raises(CheckpointError, match="forbidden"):
        safe_pickle_load(bad)
    assert not marker.exists()
    bad_pth = tmp_path / "model.pth"
    torch.save({"model": CodeOnLoad(str(marker))}, bad_pth)
    with pytest.raises(CheckpointError, match="refused"):
        safe_torch_load(bad_pth)
    assert not marker.exists()


def test_safe_pickle_loads_numpy_weights(tmp_path):
    p = tmp_path / "w.pkl"
    p.write_bytes(
        pickle.dumps(
            {"model": {"conv1_w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "__author__": "x"}
        )
    )
    d = safe_pickle_load(p)
    assert d["model"]["conv1_w"].sum() == 15


def test_missing_and_truncated_files_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth: no such"):
        safe_torch_load(tmp_path / "nope.pth")
    p = tmp_path / "t.pth"
    torch.save({"w": torch.randn(100, 100)}, p)
    p.write_bytes(p.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="t.pth: not a readable"):
        safe_torch_load(p)


def test_atomic_files_get_normal_permissions(tmp_path):
    import os

    target = tmp_path / "w.pth"
    atomic_save({"a": 1}, target)
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_unwritable_outputs_are_one_line_output_errors(tmp_path, monkeypatch):
    import errno
    import os

    from resdet.errors import OutputError

    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(
        OutputError, match=r"file/x\.pth: cannot be written: .*file is a file where a folder"
    ):
        atomic_save({"a": torch.zeros(2)}, tmp_path / "file" / "x.pth")
    with pytest.raises(OutputError, match=r"folder: is a folder"):
        atomic_save({"a": torch.zeros(2)}, tmp_path / "folder")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(
        OutputError, match=r"out\.pth: cannot be written: no space left on the device"
    ):
        atomic_save({"a": torch.zeros(2)}, tmp_path / "out.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]  # no .tmp, no out.pth


def test_atomic_dir_replaces_whole_with_plain_permissions_and_clears_stale_attempts(tmp_path):
    """An export folder: readable by a serving account (mkdtemp makes 0700), the leftovers
    of a killed earlier attempt removed, another's folder never replaced."""
    import os
    import stat

    from resdet.errors import OutputError
    from resdet.io import atomic_dir

    out = tmp_path / "export"
    stale = tmp_path / ".export.abc123.tmp"
    (stale / "big").mkdir(parents=True)
    (tmp_path / ".other.abc.tmp").mkdir()  # another folder's attempt stays
    umask = os.umask(0o022)
    try:
        with atomic_dir(out) as tmp:
            (tmp / "model.onnx").write_text("graph")
            assert not out.exists()  # nothing half-made at the target
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert (out / "model.onnx").read_text() == "graph"
    assert not stale.exists() and (tmp_path / ".other.abc.tmp").exists()
    with pytest.raises(OutputError, match="holds other files"):
        with atomic_dir(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_dir(out, replaceable=lambda f: True) as tmp:
            (tmp / "model.onnx").write_text("half")
            raise RuntimeError("killed")
    assert (out / "model.onnx").read_text() == "graph"  # the old one stays whole
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.abc.tmp", "export"]

"""Faults of both trainers: exact resume after SIGKILL (also during a save), damaged
checkpoints, divergence, unreadable data and runs that fail before their first step.

The detection runs are R18-FPN Faster R-CNN on coco128 at 96-128 px, batch 2, 6
iterations with a checkpoint every 2; the pretraining runs are the CIFAR ResNet-8 of
test_pretrain.py.
"""

import json
import os
import signal
import subprocess
import sys
from argparse import Namespace

import pytest
import torch
from conftest import REPO, load_tool
from test_pretrain import TIMING, _metrics, _subset, _tiny_cfg
from torch import nn

from resdet.checkpoint import ResdetCheckpointer, non_finite
from resdet.errors import CheckpointError, DatasetError, TrainingError
from resdet.pretrain import PretrainTrainer

FPN_CONFIG = str(REPO / "configs" / "coco_r50_fpn.yaml")
ITERS = 6


def _det_opts(shared_data, out, workers=0, *extra):
    coco = shared_data / "coco128"
    return [
        "MODEL.WEIGHTS",
        "",
        "MODEL.RESNETS.DEPTH",
        "18",
        "MODEL.RESNETS.RES2_OUT_CHANNELS",
        "64",
        "MODEL.FPN.OUT_CHANNELS",
        "32",
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        "64",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "64",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
        "64",
        "RESDET.DATA.TRAIN",
        str(coco / "annotations/instances_train2017.json"),
        "RESDET.DATA.TRAIN_IMAGES",
        str(coco / "train2017"),
        "DATASETS.TRAIN",
        "('resdet_train',)",
        "DATASETS.TEST",
        "()",
        # two sizes and flips: the augmentation draws random numbers every sample
        "INPUT.MIN_SIZE_TRAIN",
        "(96, 128)",
        "INPUT.MAX_SIZE_TRAIN",
        "192",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.BASE_LR",
        "0.01",
        "SOLVER.WARMUP_ITERS",
        "2",
        "SOLVER.STEPS",
        "(4,)",
        "SOLVER.MAX_ITER",
        str(ITERS),
        "SOLVER.CHECKPOINT_PERIOD",
        "2",
        "TEST.EVAL_PERIOD",
        "0",
        "DATALOADER.NUM_WORKERS",
        str(workers),
        "SEED",
        "0",
        "RESDET.EVAL.NUM_VIS",
        "0",
        "OUTPUT_DIR",
        str(out),
        *extra,
    ]


class _DetRun:
    """A detection run of ``opts`` in its run folder, as tools/train_det.py makes one."""

    def __init__(self, opts, resume=False):
        from resdet.engine import load

        self.setup = load(FPN_CONFIG, overrides=opts, kind="detection", datasets=True)
        self.resume, self.start_iter, self.fail_first_step = resume, None, False

    def train(self):
        from resdet.detection import DetectionTrainer

        with self.setup.run(resume=self.resume) as run:
            trainer = DetectionTrainer(self.setup, run)
            trainer.resume_or_load(resume=self.resume)
            self.start_iter = trainer.start_iter
            if self.fail_first_step:

                def fail():
                    raise RuntimeError("bad first batch")

                trainer.trainer.run_step = fail
            return trainer.train()


def _det_trainer(opts, resume=False):
    return _DetRun(opts, resume)


# Run in a subprocess, which SIGKILLs itself at the start of iteration KILL_ITER or in the
# middle of writing checkpoint KILL_SAVE (after part of the file is written).
_KILLED = """
import os, signal, sys, json
import resdet.checkpoint as ck
from resdet.io import atomic_write
from resdet.engine.train import _Trainer
sys.path.insert(0, {tests!r})
from test_resume import _det_trainer
kill_iter, kill_save, opts, resume = json.loads(sys.argv[1])
real_save = ck.atomic_save

def dying_save(obj, path):
    if os.path.basename(path) == kill_save:
        with atomic_write(path) as f:
            f.write(b"half a checkpoint")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    real_save(obj, path)

ck.atomic_save = dying_save
step = _Trainer.run_step

def dying_step(self):
    if self.iter == kill_iter:
        os.kill(os.getpid(), signal.SIGKILL)
    step(self)

_Trainer.run_step = dying_step
_det_trainer(opts, resume).train()
"""


def _killed(opts, *, kill_iter=-1, kill_save="", resume=False):
    code = _KILLED.format(tests=str(REPO / "tests"))
    path = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=path)
    argv = json.dumps([kill_iter, kill_save, opts, resume])
    proc = subprocess.run(
        [sys.executable, "-c", code, argv],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def det(shared_data, tmp_path_factory):
    """An uninterrupted run, and one killed during a save (one loader worker), resumed,
    killed again at an iteration (no worker), resumed to the end."""
    work = tmp_path_factory.mktemp("resume")
    full = _det_trainer(_det_opts(shared_data, work / "full"))
    full.train()
    out = work / "killed"
    # iterations 0-3, killed while writing model_0000003.pth: model_0000001.pth is the last
    _killed(_det_opts(shared_data, out, 1), kill_save="model_0000003.pth")
    after_save_kill = {p.name: p.stat().st_size for p in out.iterdir()}
    last_after_save_kill = (out / "last_checkpoint").read_text()
    # resumed at iteration 2, killed at the start of iteration 5 (model_0000003.pth saved)
    _killed(_det_opts(shared_data, out, 0), kill_iter=5, resume=True)
    last_after_iter_kill = (out / "last_checkpoint").read_text()
    resumed = _det_trainer(_det_opts(shared_data, out, 0), resume=True)
    resumed.train()
    start = resumed.start_iter
    return Namespace(
        work=work,
        full=work / "full",
        out=out,
        start=start,
        after_save_kill=after_save_kill,
        last_after_save_kill=last_after_save_kill,
        last_after_iter_kill=last_after_iter_kill,
        log=(out / "log.txt").read_text(),
    )


def test_detection_killed_twice_and_resumed_is_bit_identical(det):
    assert det.last_after_iter_kill == "model_0000003.pth" and det.start == 4
    want = torch.load(det.full / "model_final.pth", weights_only=True)
    got = torch.load(det.out / "model_final.pth", weights_only=True)
    assert want["iteration"] == got["iteration"] == ITERS - 1
    assert want["model"].keys() == got["model"].keys() and len(want["model"]) > 100
    differ = [k for k in want["model"] if not torch.equal(want["model"][k], got["model"][k])]
    assert differ == []
    # the weights did train: the first checkpoint is not the end
    first = torch.load(det.full / "model_0000001.pth", weights_only=True)["model"]
    assert sum(not torch.equal(first[k], v) for k, v in want["model"].items()) > 30
    # the data position was part of the checkpoint (the random numbers come from the step)
    assert got["data"]["batches"] == ITERS
    assert got["meta"]["format"] == "resdet-detector" and got["meta"]["config"]


def _ddp_run(opts, resume):
    _DetRun(opts, resume).train()


def test_two_process_detection_resumes_bit_identical(shared_data, tmp_path, monkeypatch):
    """Two processes (gloo on the CPU): a run stopped at iteration 2 and resumed to 4 ends
    with the weights of an uninterrupted 4-iteration run, and both replicas agree."""
    from resdet.engine import launch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # gloo on the CPU even on a GPU machine

    def opts(out, iters):
        extra = ["SOLVER.MAX_ITER", str(iters), "SOLVER.IMS_PER_BATCH", "4", "SOLVER.STEPS", "(3,)"]
        return _det_opts(shared_data, out, 0, *extra)

    launch(_ddp_run, (opts(tmp_path / "full", 4), False), num_gpus=2)
    launch(_ddp_run, (opts(tmp_path / "parts", 2), False), num_gpus=2)
    launch(_ddp_run, (opts(tmp_path / "parts", 4), True), num_gpus=2)
    want = torch.load(tmp_path / "full" / "model_final.pth", weights_only=True)
    got = torch.load(tmp_path / "parts" / "model_final.pth", weights_only=True)
    assert want["iteration"] == got["iteration"] == 3 and got["data"]["batches"] == 4
    differ = [k for k in want["model"] if not torch.equal(want["model"][k], got["model"][k])]
    assert differ == []
    first = torch.load(tmp_path / "full" / "model_0000001.pth", weights_only=True)["model"]
    assert sum(not torch.equal(first[k], v) for k, v in want["model"].items()) > 30
    log = (tmp_path / "parts" / "log.txt.rank1").read_text()
    assert "Rank of current process: 1. World size: 2" in log


def test_kill_during_save_keeps_the_previous_checkpoint_and_start_removes_the_orphan(det):
    assert det.last_after_save_kill == "model_0000001.pth"
    orphans = [
        n for n in det.after_save_kill if n.startswith(".model_0000003.pth.") and n.endswith(".tmp")
    ]
    assert len(orphans) == 1 and "model_0000003.pth" not in det.after_save_kill
    assert "removed 1 temporary file(s) left in" in det.log
    assert not list(det.out.glob(".*.tmp"))


def test_batches_group_as_detectron2_does_and_start_mid_stream():
    from itertools import islice

    from detectron2.data.common import AspectRatioGroupedDataset

    from resdet.sampling import BatchSampler, ResumableSampler

    gen = torch.Generator().manual_seed(0)
    sizes = torch.randint(50, 200, (37, 2), generator=gen).tolist()
    groups = [int(w > h) for w, h in sizes]
    ours = list(islice(BatchSampler(ResumableSampler(37, seed=3), 4, groups), 40))  # > 4 epochs
    stream = (
        {"width": sizes[k[0]][0], "height": sizes[k[0]][1], "key": k}
        for k in ResumableSampler(37, seed=3)
    )
    theirs = [[d["key"] for d in b] for b in islice(AspectRatioGroupedDataset(stream, 4), 40)]
    assert ours == theirs
    for grouping in (groups, None):
        full = list(islice(BatchSampler(ResumableSampler(37, seed=3), 4, grouping), 40))
        later = BatchSampler(ResumableSampler(37, seed=3), 4, grouping)
        later.start = 23
        assert list(islice(later, 17)) == full[23:]


def _linear_checkpoints(tmp_path):
    model = nn.Linear(3, 2)
    ck = ResdetCheckpointer(model, str(tmp_path))
    for it in (1, 3):
        with torch.no_grad():
            model.weight.fill_(it)
        ck.save(f"model_{it:07d}", iteration=it)
        os.utime(tmp_path / f"model_{it:07d}.pth", (it, it))  # distinct ages
    return model, ck


def test_resume_falls_back_past_a_truncated_newest_checkpoint(tmp_path, caplog):
    _linear_checkpoints(tmp_path)
    newest = tmp_path / "model_0000003.pth"
    newest.write_bytes(newest.read_bytes()[:100])
    model = nn.Linear(3, 2)
    extra = ResdetCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["iteration"] == 1 and torch.equal(model.weight, torch.ones(2, 3))
    assert "resuming from" in caplog.text and "model_0000003.pth, which is unusable" in caplog.text
    # none left that loads: one line naming the newest and what to do
    (tmp_path / "model_0000001.pth").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        ResdetCheckpointer(nn.Linear(3, 2), str(tmp_path)).resume_or_load("", resume=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(newest)) and msg.endswith("run without --resume")


def test_non_finite_weights_are_never_saved(tmp_path):
    model, ck = _linear_checkpoints(tmp_path)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(
        TrainingError, match=r"not saving model_0000005.pth: 1 non-finite tensor\(s\) \(weight\)"
    ):
        ck.save("model_0000005", iteration=5)
    assert not (tmp_path / "model_0000005.pth").exists() and not list(tmp_path.glob(".*.tmp"))
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"


def test_detection_divergence_stops_with_one_line_and_finite_checkpoints(shared_data, tmp_path):
    out = tmp_path / "diverged"
    opts = _det_opts(
        shared_data,
        out,
        0,
        "SOLVER.BASE_LR",
        "1e6",
        "SOLVER.CHECKPOINT_PERIOD",
        "1",
        "SOLVER.WARMUP_ITERS",
        "0",
    )
    trainer = _det_trainer(opts)
    with pytest.raises(TrainingError) as e:
        trainer.train()
    msg = str(e.value)
    assert "\n" not in msg and "lower SOLVER.BASE_LR" in msg
    saved = sorted(out.glob("model_*.pth"))
    for path in saved:
        assert non_finite(torch.load(path, weights_only=True)["model"]) == [], path
    if saved:  # last_checkpoint names finite weights, and the message says to resume from them
        last = (out / "last_checkpoint").read_text()
        assert (out / last).is_file() and f"resume from {out / last}" in msg
    # whichever comes first: Detectron2's check of the RPN's boxes, the loss, the saved weights
    assert msg.startswith(
        ("the model's outputs became non-finite at iteration", "loss became", "not saving")
    )
    assert "(now 1e+06)" in msg or msg.startswith("not saving")


def test_detection_failing_before_its_first_iteration_leaves_only_its_log(shared_data, tmp_path):
    out = tmp_path / "failed"
    trainer = _det_trainer(_det_opts(shared_data, out))
    trainer.fail_first_step = True
    with pytest.raises(RuntimeError, match="bad first batch"):
        trainer.train()
    assert sorted(p.name for p in out.iterdir()) == ["log.txt"]


# ---- pretraining ------------------------------------------------------------------------
@pytest.fixture
def cifar_root(shared_data, tmp_path):
    classes = ["airplane", "automobile", "bird"]
    _subset(shared_data / "cifar10-mini/train", tmp_path / "data/train", classes, 8)
    _subset(shared_data / "cifar10-mini/test", tmp_path / "data/test", classes, 4)
    return tmp_path / "data"


def _pt_ddp_run(cfg, resume):
    from resdet.pretrain import train

    train(cfg, resume=resume)


def test_two_process_pretraining_resumes_bit_identical(cifar_root, tmp_path, monkeypatch):
    """Two processes (gloo on the CPU), EMA, MixUp/CutMix and validation on: a run
    stopped at iteration 2 and resumed to 4 ends with the weights, EMA, optimizer state
    and training log of an uninterrupted 4-iteration run."""
    from resdet.engine import launch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # gloo on the CPU even on a GPU machine

    def cfg(out, iters):
        return _tiny_cfg(cifar_root, tmp_path / out, "SOLVER.MAX_ITER", iters, "SOLVER.STEPS", (3,))

    launch(_pt_ddp_run, (cfg("full", 4), False), num_gpus=2)
    launch(_pt_ddp_run, (cfg("parts", 2), False), num_gpus=2)
    launch(_pt_ddp_run, (cfg("parts", 4), True), num_gpus=2)
    want, got = (
        torch.load(tmp_path / run / "model_0000003.pth", weights_only=True)
        for run in ("full", "parts")
    )
    assert want["trainer"]["iteration"] == got["trainer"]["iteration"] == 3
    assert got["data"]["batches"] == 4
    for key in ("model", "ema"):
        assert want[key].keys() == got[key].keys()
        differ = [k for k in want[key] if not torch.equal(want[key][k], got[key][k])]
        assert differ == [], key
    momentum = [
        (a["momentum_buffer"], b["momentum_buffer"])
        for a, b in zip(
            want["trainer"]["optimizer"]["state"].values(),
            got["trainer"]["optimizer"]["state"].values(),
        )
    ]
    assert momentum and all(torch.equal(a, b) for a, b in momentum)
    final = [
        torch.load(tmp_path / r / "model_final.pth", weights_only=True) for r in ("full", "parts")
    ]
    assert all(torch.equal(final[0]["model"][k], v) for k, v in final[1]["model"].items())
    # the training lines of the log, timings aside (the stopped run's final evaluation
    # at iteration 2 has a line of its own)
    full, parts = (
        [
            {k: v for k, v in r.items() if k not in TIMING}
            for r in _metrics(tmp_path / run)
            if "lr" in r
        ]
        for run in ("full", "parts")
    )
    assert [r["iteration"] for r in parts] == [0, 1, 2, 3] and full == parts
    first = torch.load(tmp_path / "full" / "model_0000001.pth", weights_only=True)["model"]
    assert sum(not torch.equal(first[k], v) for k, v in want["model"].items()) > 10
    log = (tmp_path / "parts" / "log.txt.rank1").read_text()
    assert "Rank of current process: 1. World size: 2" in log


def test_pretraining_nan_loss_stops_with_one_line_naming_the_last_checkpoint(cifar_root, tmp_path):
    out = tmp_path / "nan"
    cfg = _tiny_cfg(cifar_root, out, "SOLVER.MAX_ITER", 6, "TEST.EVAL_PERIOD", 0)
    trainer = PretrainTrainer(cfg)
    normalize = trainer.normalize

    def poisoned(images):  # the 4th batch holds a NaN pixel
        x = normalize(images)
        return x * float("nan") if trainer.iter == 3 else x

    trainer.normalize = poisoned
    with pytest.raises(TrainingError) as e:
        trainer.train()
    assert str(e.value) == (
        f"loss became nan at iteration 3; lower SOLVER.BASE_LR (now 0.1) and "
        f"resume from {out / 'model_0000001.pth'} (--resume)"
    )
    assert (out / "last_checkpoint").read_text() == "model_0000001.pth"
    assert sorted(p.name for p in out.glob("model_*.pth")) == ["model_0000001.pth"]


def test_pretraining_divergence_never_saves_non_finite_weights(cifar_root, tmp_path):
    out = tmp_path / "diverged"
    cfg = _tiny_cfg(
        cifar_root,
        out,
        "SOLVER.BASE_LR",
        1e6,
        "SOLVER.CHECKPOINT_PERIOD",
        1,
        "SOLVER.MAX_ITER",
        6,
        "TEST.EVAL_PERIOD",
        0,
    )
    with pytest.raises(TrainingError) as e:
        PretrainTrainer(cfg).train()
    saved = sorted(out.glob("model_*.pth"))
    assert saved and not (out / "model_final.pth").exists()
    for path in saved:
        ckpt = torch.load(path, weights_only=True)
        assert non_finite(ckpt["model"]) == [] and non_finite(ckpt["ema"]) == [], path
    last = out / (out / "last_checkpoint").read_text()
    assert last == saved[-1] and f"resume from {last}" in str(e.value) and "\n" not in str(e.value)
    # resuming from it restores finite weights and its iteration; a killed save's leftover goes
    (out / ".model_0000009.pth.x1y2.tmp").write_bytes(b"half")
    resumed = PretrainTrainer(cfg, resume=True)
    assert not list(out.glob(".*.tmp"))
    assert resumed.iter == torch.load(last, weights_only=True)["trainer"]["iteration"]
    assert non_finite(resumed.model.state_dict()) == []


def test_resuming_a_checkpoint_of_the_earlier_pretraining_loop_is_one_line(cifar_root, tmp_path):
    """Its trainer state was the loop's own ({iteration, bad_images, classes}), its
    optimizer beside it: Detectron2's trainer cannot continue it."""
    out = tmp_path / "old"
    cfg = _tiny_cfg(cifar_root, out)
    model = PretrainTrainer(cfg).model
    state = {"iteration": 2, "bad_images": 0, "classes": ["airplane", "automobile", "bird"]}
    ResdetCheckpointer(model, str(out)).save("model_0000002", trainer=state)
    with pytest.raises(CheckpointError) as e:
        PretrainTrainer(cfg, resume=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{out / 'model_0000002.pth'}: no 'optimizer'")


def test_pretraining_on_unreadable_images_fails_at_once_leaving_only_the_log(tmp_path, capsys):
    main = load_tool("pretrain_imagenet").main
    for split in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(3):
                (tmp_path / "data" / split / c / f"{i}.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    code = main(
        [
            "--config",
            str(REPO / "configs/cifar/resnet20.yaml"),
            "--data",
            str(tmp_path / "data"),
            "--output",
            str(out),
            "MODEL.DEVICE",
            "cpu",
            "DATALOADER.NUM_WORKERS",
            "0",
        ]
    )
    assert code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    train = tmp_path / "data" / "train"
    assert last.startswith(f"error: {train}: none of the 6 training images tried can be read")
    assert sorted(p.name for p in out.iterdir()) == ["log.txt"]


def test_pretraining_stops_when_images_become_unreadable_mid_run(cifar_root, tmp_path):
    """The start check passes; then every file goes bad: an epoch of empty batches stops it."""
    trainer = PretrainTrainer(_tiny_cfg(cifar_root, tmp_path / "out", "TEST.EVAL_PERIOD", 0))
    gone = str(tmp_path / "gone.jpg")
    trainer.train_set.samples = [(gone, label) for _, label in trainer.train_set.samples]
    with pytest.raises(DatasetError, match="batches in a row without a readable image"):
        trainer.train()
    assert not (tmp_path / "out" / "train_log.json").exists()
    assert not (tmp_path / "out" / "metrics.json").exists()

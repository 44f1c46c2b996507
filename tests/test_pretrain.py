"""Pretraining (resdet.pretrain) on real data from ../shared/data: hymenoptera for the
ResNet-18 run, small cifar10-mini subsets (symlinked into tmp_path) for the rest."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from PIL import Image

from resdet.errors import DatasetError
from resdet.io import atomic_save
from resdet.pretrain import (
    PretrainTrainer,
    build_classifier,
    build_test_loader,
    evaluate,
    evaluate_checkpoint,
    get_pretrain_cfg,
    load_splits,
)
from resdet.pretrain.data import ClassFolder

CIFAR_MEAN = [125.31, 122.95, 113.87]


def _subset(src: Path, dst: Path, classes, per_class):
    """dst/<class>/ with symlinks to the first per_class images of src/<class>/."""
    for c in classes:
        (dst / c).mkdir(parents=True)
        for f in sorted((src / c).iterdir())[:per_class]:
            (dst / c / f.name).symlink_to(f)
    return dst


@pytest.fixture
def cifar_root(shared_data, tmp_path):
    src = shared_data / "cifar10-mini"
    classes = ["airplane", "automobile", "bird"]
    _subset(src / "train", tmp_path / "data" / "train", classes, 8)
    _subset(src / "test", tmp_path / "data" / "test", classes, 4)
    return tmp_path / "data"


def _tiny_cfg(root, out, *opts):
    """CIFAR ResNet-8 at 32x32 with every stateful piece on (EMA, MixUp/CutMix, label smoothing)."""
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(str(REPO / "configs/cifar/resnet20.yaml"))
    cfg.merge_from_list(
        [
            "PRETRAIN.DATA.ROOT",
            str(root),
            "OUTPUT_DIR",
            str(out),
            "MODEL.DEVICE",
            "cpu",
            "MODEL.RESNETS.DEPTH",
            8,
            "SOLVER.IMS_PER_BATCH",
            8,
            "SOLVER.MAX_ITER",
            4,
            "SOLVER.STEPS",
            (2,),
            "SOLVER.CHECKPOINT_PERIOD",
            2,
            "TEST.EVAL_PERIOD",
            2,
            "PRETRAIN.LOG_PERIOD",
            1,
            "DATALOADER.NUM_WORKERS",
            0,
            "SEED",
            3,
            "PRETRAIN.EMA.ENABLED",
            True,
            "PRETRAIN.EMA.DECAY",
            0.5,
            "PRETRAIN.AUG.MIXUP_ALPHA",
            0.2,
            "PRETRAIN.AUG.CUTMIX_ALPHA",
            1.0,
            "PRETRAIN.LABEL_SMOOTHING",
            0.1,
            *opts,
        ]
    )
    return cfg


def _this_checkout() -> str:
    """PYTHONPATH for a tool run in a subprocess: this checkout's resdet, whichever one is
    installed (python tools/X.py puts tools/ first on sys.path, not the repository)."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)


# what differs between two runs of the same steps: how long they took
TIMING = {"images_per_s", "time", "data_time", "rank_data_time", "eta_seconds"}


def _metrics(out, timing=True):
    """The training log of a run folder (train_log.json, one JSON object per line)."""
    rows = [json.loads(line) for line in (Path(out) / "train_log.json").read_text().splitlines()]
    return rows if timing else [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_tool_trains_resnet18_on_hymenoptera(shared_data, tmp_path):
    """The command line end to end: loss falls, val top-1 beats chance, contract-1 output."""
    out = tmp_path / "r18"
    cmd = [
        sys.executable,
        str(REPO / "tools/pretrain_imagenet.py"),
        "--config",
        str(REPO / "configs/imagenet/r18.yaml"),
        "--data",
        str(shared_data / "hymenoptera"),
        "--output",
        str(out),
        "SOLVER.MAX_ITER",
        "100",
        "SOLVER.IMS_PER_BATCH",
        "32",
        "SOLVER.BASE_LR",
        "0.01",
        "SOLVER.LR_SCHEDULER_NAME",
        "WarmupCosineLR",
        "SOLVER.WARMUP_ITERS",
        "5",
        "SOLVER.WARMUP_FACTOR",
        "0.1",
        "INPUT.CROP_SIZE",
        "32",
        "INPUT.TEST_SIZE",
        "36",
        "PRETRAIN.AUG.SHORT_SIDE_RANGE",
        "(32, 40)",
        "PRETRAIN.AUG.PCA_LIGHTING",
        "0.0",
        "MODEL.PIXEL_STD",
        "[58.395, 57.12, 57.375]",
        "PRETRAIN.TEST.MODES",
        "['1crop']",
        "TEST.EVAL_PERIOD",
        "50",
        "PRETRAIN.LOG_PERIOD",
        "5",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SEED",
        "1",
        "MODEL.DEVICE",
        "cpu",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=_this_checkout())
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]

    losses = [r["total_loss"] for r in _metrics(out) if "total_loss" in r]
    assert len(losses) == 20
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    result = json.loads((out / "metrics.json").read_text())
    # 83 of the 153 validation images are bees: chance (majority) is 0.54
    assert 0.6 < result["top1"] <= 1 and result["top5"] == 1.0
    evals = [r for r in _metrics(out) if "val/top1_err" in r]
    assert [r["iteration"] for r in evals] == [49, 99] and all("train/top1_err" in r for r in evals)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(out.glob("events.out.tfevents.*"))

    final = torch.load(out / "model_final.pth", weights_only=True)
    meta = final["meta"]
    assert meta["format"] == "resdet-classifier"
    assert (
        meta["depth"],
        meta["dataset"],
        meta["shortcut"],
        meta["residual"],
        meta["stride_in_1x1"],
    ) == (18, "imagenet", "B", True, False)
    assert (meta["num_classes"], meta["classes"], meta["norm"], meta["input_format"]) == (
        2,
        ["ants", "bees"],
        "BN",
        "RGB",
    )
    assert meta["pixel_mean"] == [123.675, 116.28, 103.53] and meta["pixel_std"] == [
        58.395,
        57.12,
        57.375,
    ]
    assert meta["recipe"] == "paper" and meta["metrics"]["top1"] == result["top1"]
    assert (
        final["model"]["linear.weight"].shape == (2, 512)
        and "res5.1.conv2.weight" in final["model"]
    )

    # the shipped weights alone reproduce the reported accuracy
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(str(out / "config.yaml"))
    cfg.OUTPUT_DIR = str(tmp_path / "reeval")
    assert evaluate_checkpoint(cfg, out / "model_final.pth")["top1"] == result["top1"]


def test_run_folder_holds_the_results_the_log_and_console_progress(cifar_root, tmp_path):
    """As in every run folder: metrics.json is the evaluation, train_log.json the
    training log; the console shows Detectron2's progress lines (iteration, ETA, loss)."""
    out = tmp_path / "run"
    opts = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", "8", "SOLVER.IMS_PER_BATCH", "8"]
    opts += ["SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(2,)", "SOLVER.CHECKPOINT_PERIOD", "2"]
    opts += ["TEST.EVAL_PERIOD", "2", "PRETRAIN.LOG_PERIOD", "1", "DATALOADER.NUM_WORKERS", "0"]
    opts += ["PRETRAIN.TEST.MODES", "['1crop', '10crop']", "SEED", "3"]
    cmd = [sys.executable, str(REPO / "tools/pretrain_imagenet.py")]
    cmd += ["--config", str(REPO / "configs/cifar/resnet20.yaml"), "--data", str(cifar_root)]
    cmd += ["--output", str(out), *opts]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=_this_checkout())
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((out / "metrics.json").read_text())
    assert set(results) == {"top1", "top5", "modes"} and set(results["modes"]) == {
        "1crop",
        "10crop",
    }
    assert results["modes"]["1crop"] == {"top1": results["top1"], "top5": results["top5"]}
    assert f"top-1 {results['top1']:.4f}, top-5 {results['top5']:.4f}" in proc.stdout
    assert not (out / "eval.json").exists()
    log = _metrics(out)
    assert [r["iteration"] for r in log if "total_loss" in r] == [0, 1, 2, 3]
    assert [r["iteration"] for r in log if "val/top1" in r] == [1, 3]
    assert (
        log[-1]["iteration"] == 4
        and log[-1]["final/10crop/top1"] == results["modes"]["10crop"]["top1"]
    )
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    # Detectron2's CommonMetricPrinter, one line per log period
    progress = re.findall(
        r"d2\.utils\.events\]:\s+(?:eta: \S+\s+)?iter: (\d+)\s+total_loss: ", proc.stdout
    )
    assert progress == ["0", "1", "2", "3"], proc.stdout[-3000:]
    assert re.search(r"eta: 0:00:\d\d\s+iter: 3\s+total_loss: [\d.]+ .* lr: ", proc.stdout)
    meta = torch.load(out / "model_final.pth", weights_only=True)["meta"]
    assert meta["class_names"] == ["airplane", "automobile", "bird"] and "torch" in meta["versions"]


def test_interrupted_and_resumed_run_is_bit_identical(cifar_root, tmp_path):
    full = PretrainTrainer(_tiny_cfg(cifar_root, tmp_path / "full"))
    full.train()

    cfg = _tiny_cfg(cifar_root, tmp_path / "killed")
    killed = PretrainTrainer(cfg)
    step = killed.trainer.run_step  # Detectron2's SimpleTrainer runs the steps

    def die_in_iteration_4(*args):
        if killed.iter == 3:
            raise KeyboardInterrupt("killed")
        return step(*args)

    killed.trainer.run_step = die_in_iteration_4
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    # Detectron2's names: the iteration that had just finished (the 2nd)
    assert (tmp_path / "killed/last_checkpoint").read_text() == "model_0000001.pth"

    resumed = PretrainTrainer(cfg, resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    for a, b in ((full.model, resumed.model), (full.ema, resumed.ema)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    for a, b in zip(full.optimizer.state.values(), resumed.optimizer.state.values()):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    # the killed run's third iteration was dropped from the history; the rest is identical
    assert _metrics(tmp_path / "full", timing=False) == _metrics(tmp_path / "killed", timing=False)
    # and the run did train: weights moved away from the first checkpoint
    first = torch.load(tmp_path / "full/model_0000001.pth", weights_only=True)["model"]
    assert not torch.equal(
        first["stem.conv1.weight"], resumed.model.state_dict()["stem.conv1.weight"]
    )


def _ddp_worker(cfg, out):
    from detectron2.utils import comm

    trainer = PretrainTrainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    atomic_save(
        {"before": before, "after": trainer.model.state_dict()},
        Path(out) / f"rank{comm.get_rank()}.pth",
    )


def test_two_process_gloo_run_keeps_replicas_identical(cifar_root, tmp_path, monkeypatch):
    from detectron2.engine import launch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # gloo on CPU even on a GPU machine
    cfg = _tiny_cfg(cifar_root, tmp_path / "ddp", "SOLVER.MAX_ITER", 3, "TEST.EVAL_PERIOD", 0)
    launch(_ddp_worker, 2, dist_url="auto", args=(cfg, tmp_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pth", weights_only=True) for r in (0, 1))
    assert r0["after"].keys() == r1["after"].keys()
    for k in r0["after"]:
        assert torch.equal(r0["after"][k], r1["after"][k]), k
    assert not torch.equal(r0["before"]["stem.conv1.weight"], r0["after"]["stem.conv1.weight"])
    assert [r["iteration"] for r in _metrics(tmp_path / "ddp") if "total_loss" in r] == [0, 1, 2]


def _direct_scores(model, path, mode, cfg):
    """Scores computed by hand (numpy/PIL/tensor slicing) for one 32x32 CIFAR image."""

    def to_input(img):
        x = torch.from_numpy(np.asarray(img, dtype=np.float64)).permute(2, 0, 1)
        return (x - torch.tensor(CIFAR_MEAN, dtype=torch.float64).view(3, 1, 1))[None]

    def probs(x):
        with torch.no_grad():
            return model(x)["linear"].softmax(1)[0]

    img = Image.open(path).convert("RGB")
    x = to_input(img)
    if mode == "1crop":
        return probs(x[..., 4:28, 4:28])
    if mode == "10crop":
        crops = [
            x[..., i : i + 24, j : j + 24] for i, j in ((0, 0), (0, 8), (8, 0), (8, 8), (4, 4))
        ]
        return torch.stack([probs(c) for c in crops] + [probs(c.flip(-1)) for c in crops]).mean(0)
    return torch.stack(
        [probs(to_input(img.resize((s, s), Image.BILINEAR))) for s in cfg.PRETRAIN.TEST.SCALES]
    ).mean(0)


@pytest.mark.parametrize("mode", ["1crop", "10crop", "multiscale"])
def test_evaluation_modes_agree_with_direct_computation(shared_data, tmp_path, mode):
    root = tmp_path / "data"
    classes = sorted(p.name for p in (shared_data / "cifar10-mini/train").iterdir())
    _subset(shared_data / "cifar10-mini/train", root / "train", classes, 1)
    _subset(shared_data / "cifar10-mini/test", root / "test", classes, 3)
    cfg = _tiny_cfg(
        root,
        tmp_path / "out",
        "INPUT.CROP_SIZE",
        24,
        "PRETRAIN.TEST.SCALES",
        [24, 40],
        "PRETRAIN.TEST.IMS_PER_BATCH",
        7,
    )
    _, _, val = load_splits(cfg)
    torch.manual_seed(0)
    model = build_classifier(cfg, len(classes)).double().eval()
    torch.nn.init.normal_(model.linear.weight, std=0.05)  # scores apart, yet not saturated

    got = evaluate(model, build_test_loader(cfg, val, mode), mode)
    scores = torch.stack([_direct_scores(model, p, mode, cfg) for p, _ in val])
    labels = torch.tensor([label for _, label in val])
    ranks = (scores > scores.gather(1, labels[:, None])).sum(1)
    assert got["images"] == 30 and got["bad_images"] == 0
    assert 0 <= got["top1"] <= got["top5"] <= 1
    assert got["top1"] == pytest.approx((ranks < 1).double().mean().item())
    assert got["top5"] == pytest.approx((ranks < 5).double().mean().item())


# ---- bad input -------------------------------------------------------------------------
def _copy_images(shared_data, dst: Path, cls: str, n: int = 2):
    src = sorted((shared_data / "hymenoptera/train" / cls).iterdir())[:n]
    dst.mkdir(parents=True)
    for f in src:
        (dst / f.name).write_bytes(f.read_bytes())
    return sorted(dst.iterdir())


def _data_cfg(root):
    cfg = get_pretrain_cfg()
    cfg.PRETRAIN.DATA.ROOT = str(root)
    return cfg


def test_empty_class_folder_stops_at_start(shared_data, tmp_path):
    _copy_images(shared_data, tmp_path / "train/ants", "ants")
    (tmp_path / "train/bees").mkdir()
    _copy_images(shared_data, tmp_path / "val/ants", "ants")
    with pytest.raises(DatasetError, match=r"train/bees: class folder has no images"):
        load_splits(_data_cfg(tmp_path))
    # the tool: exit 2, one line naming the folder, nothing written
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tools/pretrain_imagenet.py"),
            "--config",
            str(REPO / "configs/imagenet/r18.yaml"),
            "--data",
            str(tmp_path),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr.strip().splitlines()[-1]
        == f"error: {tmp_path}/train/bees: class folder has no images "
        "(.jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp)"
    )
    assert not (tmp_path / "out").exists()


def test_validation_class_unknown_to_training_stops_at_start(shared_data, tmp_path):
    _copy_images(shared_data, tmp_path / "train/ants", "ants")
    _copy_images(shared_data, tmp_path / "val/ants", "ants")
    _copy_images(shared_data, tmp_path / "val/wasps", "bees")
    with pytest.raises(
        DatasetError, match=r"val/wasps: validation class 'wasps' has no training folder"
    ):
        load_splits(_data_cfg(tmp_path))


def test_missing_split_folder_and_bad_option_are_named(shared_data, tmp_path):
    _copy_images(shared_data, tmp_path / "train/ants", "ants")
    with pytest.raises(DatasetError, match=r"val: no such folder"):
        load_splits(_data_cfg(tmp_path))
    cfg = _data_cfg(tmp_path)
    cfg.PRETRAIN.TEST.MODES = ["5crop"]
    with pytest.raises(
        ValueError,
        match=r"PRETRAIN.TEST.MODES: '5crop' is not supported; allowed: 1crop, 10crop, multiscale",
    ):
        PretrainTrainer(cfg)


def test_truncated_and_non_image_files_are_skipped_and_counted(cifar_root, tmp_path, caplog):
    victim = sorted((cifar_root / "train/bird").iterdir())[0]
    data = victim.resolve().read_bytes()
    victim.unlink()
    victim.write_bytes(data[: len(data) // 2])  # truncated JPEG
    (cifar_root / "test/bird/notes.jpg").write_text("not an image")
    # one batch holds the whole training split, so every epoch meets the truncated file
    cfg = _tiny_cfg(
        cifar_root,
        tmp_path / "bad",
        "SOLVER.IMS_PER_BATCH",
        24,
        "SOLVER.MAX_ITER",
        2,
        "SOLVER.STEPS",
        (1,),
        "TEST.EVAL_PERIOD",
        0,
    )
    dataset = ClassFolder([(str(victim), 0)], lambda img: img)
    assert dataset[0] is None

    metrics = PretrainTrainer(cfg).train()
    assert metrics["bad_images"] == 2 and metrics["val_bad_images"] == 1
    assert _metrics(tmp_path / "bad")[-1]["data/bad_images"] == 2
    assert _metrics(tmp_path / "bad")[-1]["final/1crop/top1"] == metrics["top1"]
    assert f"skipping unreadable image {victim}" in caplog.text

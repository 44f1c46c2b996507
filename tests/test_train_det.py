"""The detection trainer on real coco128: converted weights in, fine-tuning, resume,
evaluation, safe checkpoints, run outputs.

One small R18-FPN run (128 px, batch 2, 12 iterations evaluated every 6 on 16 images,
then resumed for 4 more) is shared by the tests that look at its results.
"""

import io
import json
import pickle
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, CodeOnLoad
from PIL import Image
from torch import nn

from resdet.checkpoint import ResdetCheckpointer
from resdet.detection import DetectionTrainer
from resdet.engine import load
from resdet.errors import ResdetError
from resdet.io import CheckpointError, atomic_save
from resdet.modeling import build_resnet

FPN_CONFIG = str(REPO / "configs" / "coco_r50_fpn.yaml")
TV_MEAN, TV_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
ITERS, EVAL_PERIOD = 12, 6


def _pretrained(path, pixel_std=TV_STD):
    """A pretraining checkpoint in contract-1 form (random weights: no download here)."""
    torch.manual_seed(0)
    net = build_resnet(18, num_classes=10)
    meta = dict(
        format="resdet-classifier",
        depth=18,
        dataset="imagenet",
        shortcut="B",
        residual=True,
        stride_in_1x1=False,
        num_classes=10,
        norm="BN",
        input_format="RGB",
        pixel_mean=TV_MEAN,
        pixel_std=list(pixel_std),
        recipe="test",
        classes=[str(i) for i in range(10)],
        metrics={},
    )
    atomic_save({"model": net.state_dict(), "meta": meta}, path)
    return path


def _converted(tmp, pixel_std=TV_STD, layout="fpn"):
    from resdet.convert import convert

    out = Path(tmp) / f"r18_{layout}.pth"
    convert(_pretrained(Path(tmp) / "pretrain.pth", pixel_std), out, layout=layout)
    return out


def _coco_subset(shared_data, path, n):
    """The first ``n`` coco128 images as a COCO JSON in ``path`` (images stay in shared data)."""
    full = json.loads((shared_data / "coco128/annotations/instances_train2017.json").read_text())
    ids = {im["id"] for im in full["images"][:n]}
    sub = dict(
        full,
        images=full["images"][:n],
        annotations=[a for a in full["annotations"] if a["image_id"] in ids],
    )
    path.write_text(json.dumps(sub))
    return path


def _opts(shared_data, work, out, weights, iters=ITERS):
    images = str(shared_data / "coco128/train2017")
    return [
        "MODEL.WEIGHTS",
        str(weights),
        "MODEL.FPN.OUT_CHANNELS",
        "64",
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        "256",
        "RESDET.DATA.TRAIN",
        str(shared_data / "coco128/annotations/instances_train2017.json"),
        "RESDET.DATA.TRAIN_IMAGES",
        images,
        "RESDET.DATA.TEST",
        str(_coco_subset(shared_data, work / "val16.json", 16)),
        "RESDET.DATA.TEST_IMAGES",
        images,
        "DATASETS.TRAIN",
        "('resdet_train',)",
        "DATASETS.TEST",
        "('resdet_test',)",
        "INPUT.MIN_SIZE_TRAIN",
        "(128,)",
        "INPUT.MAX_SIZE_TRAIN",
        "224",
        "INPUT.MIN_SIZE_TEST",
        "128",
        "INPUT.MAX_SIZE_TEST",
        "224",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "128",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        "100",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.BASE_LR",
        "0.005",
        "SOLVER.WARMUP_ITERS",
        "4",
        "SOLVER.STEPS",
        "()",
        "SOLVER.MAX_ITER",
        str(iters),
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "TEST.EVAL_PERIOD",
        str(EVAL_PERIOD),
        "DATALOADER.NUM_WORKERS",
        "0",
        "SEED",
        "0",
        "RESDET.EVAL.NUM_VIS",
        "2",
        "RESDET.EVAL.VIS_THRESH",
        "0.0",
        "OUTPUT_DIR",
        str(out),
    ]


def _train(config, opts, resume=False):
    setup = load(config, overrides=opts, kind="detection", datasets=True)
    with setup.run(resume=resume) as run:
        trainer = DetectionTrainer(setup, run)
        trainer.resume_or_load(resume=resume)
        start = trainer.start_iter
        first = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
    loop = trainer.trainer
    return Namespace(
        start=start,
        end=loop.iter,
        first=first,
        losses=[v for v, _ in loop.storage.history("total_loss").values()],
    )


@pytest.fixture(scope="module")
def run(shared_data, tmp_path_factory):
    """Fine-tune from converted weights for ITERS iterations, then resume to ITERS + 4."""
    work = tmp_path_factory.mktemp("det")
    out = work / "out"
    weights = _converted(work)
    opts = _opts(shared_data, work, out, weights)
    first = _train(FPN_CONFIG, opts)
    final_metrics = json.loads((out / "metrics.json").read_text())
    outputs = {p.name: p.read_bytes() for p in [out / "curves.png", out / "last_checkpoint"]}
    predictions = sorted((out / "predictions").glob("*.jpg"))
    final = torch.load(out / "model_final.pth", weights_only=True)
    log = [json.loads(line) for line in (out / "train_log.json").read_text().splitlines()]
    best_record = json.loads((out / "model_best.json").read_text())
    resumed = _train(FPN_CONFIG, _opts(shared_data, work, out, weights, ITERS + 4), resume=True)
    return Namespace(
        work=work,
        out=out,
        opts=opts,
        first=first,
        resumed=resumed,
        final=final["model"],
        log=log,
        metrics=final_metrics,
        best_record=best_record,
        outputs=outputs,
        predictions=predictions,
        resumed_metrics=json.loads((out / "metrics.json").read_text()),
        resumed_best_record=json.loads((out / "model_best.json").read_text()),
    )


def test_fine_tuning_decreases_the_loss(run):
    losses = run.first.losses
    assert len(losses) == ITERS and all(np.isfinite(losses))
    head, tail = np.mean(losses[:4]), np.mean(losses[-4:])
    assert tail < 0.9 * head, losses


def test_converted_backbone_weights_are_loaded(run):
    converted = torch.load(run.work / "r18_fpn.pth", weights_only=True)["model"]
    assert len(converted) > 50
    for k, v in converted.items():
        assert torch.equal(run.first.first[k], v), k


def test_evaluation_writes_metrics_json_and_best_checkpoint(run):
    bbox = run.metrics["bbox"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(bbox)
    assert all(0.0 <= bbox[k] <= 100.0 for k in ("AP", "AP50", "AP75"))
    assert any(k.startswith("AP-") for k in bbox)  # per-class table
    evals = {r["iteration"]: r["bbox/AP"] for r in run.log if "bbox/AP" in r}
    assert set(evals) == {
        EVAL_PERIOD - 1,
        ITERS,
    }  # the final evaluation is logged after the last step
    assert evals[ITERS] == pytest.approx(bbox["AP"])
    assert (run.out / "model_best.pth").is_file()
    # the best score is recorded beside it, so a resumed run keeps comparing to it
    best = run.best_record
    assert best["metric"] == "bbox/AP" and best["value"] == pytest.approx(max(evals.values()))
    assert evals[best["iteration"]] == best["value"]
    # model_best is a snapshot beside the run; --resume follows the periodic checkpoints
    assert run.outputs["last_checkpoint"] == b"model_final.pth"
    assert list(run.out.glob("events.out.tfevents.*"))


def test_curves_and_prediction_images(run, shared_data):
    from detectron2.data.detection_utils import read_image

    curves = Image.open(io.BytesIO(run.outputs["curves.png"]))
    assert curves.format == "PNG" and curves.size[0] >= 500
    assert len(run.predictions) == 2
    for path in run.predictions:
        drawn = Image.open(path)
        assert drawn.format == "JPEG"
        source = read_image(str(shared_data / "coco128/train2017" / path.name), "RGB")
        drawn = np.asarray(drawn.convert("RGB"), dtype=np.int16)
        assert drawn.shape == source.shape
        # JPEG noise stays small; drawn boxes and labels replace whole pixel runs
        changed = (np.abs(drawn - source.astype(np.int16)).max(axis=2) > 80).mean()
        assert changed > 0.01


def test_resume_continues_from_the_last_checkpoint(run):
    assert run.resumed.start == ITERS  # not from 0
    assert run.resumed.end == ITERS + 4
    assert len(run.resumed.losses) == 4
    for k, v in run.final.items():  # the weights it continued from are model_final's
        assert torch.equal(run.resumed.first[k], v), k
    log = [json.loads(line) for line in (run.out / "train_log.json").read_text().splitlines()]
    assert max(r["iteration"] for r in log if "total_loss" in r) == ITERS + 3
    # the best is still the best over both parts, not the resumed part's first evaluation
    assert run.resumed_best_record["value"] == pytest.approx(
        max(run.best_record["value"], run.resumed_metrics["bbox"]["AP"])
    )
    # appended to, not restarted
    assert [r["iteration"] for r in log[: len(run.log)]] == [r["iteration"] for r in run.log]


def test_eval_only_tool_reproduces_the_final_evaluation(run, tmp_path):
    """tools/train_det.py --eval-only on model_final.pth gives the AP the run measured at
    its end (same weights, same images)."""
    out = tmp_path / "eval"
    opts = [o if o != str(run.out) else str(out) for o in run.opts]
    opts[opts.index("MODEL.WEIGHTS") + 1] = str(run.out / "model_final.pth")
    opts += ["RESDET.EVAL.NUM_VIS", "0"]  # depth and widths: the weights carry them
    r = subprocess.run(
        [sys.executable, "tools/train_det.py", "--config", FPN_CONFIG, "--eval-only", *opts],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = json.loads((out / "metrics.json").read_text())["bbox"], run.resumed_metrics["bbox"]
    assert want["AP50"] > 0  # a comparison of zeros would prove nothing
    for k in ("AP", "AP50", "AP75"):
        assert got[k] == pytest.approx(want[k], abs=1e-6), k


def test_c4_model_trains_from_converted_weights(shared_data, tmp_path):
    """The paper's C4 form: res5 of the converted weights becomes the RoI head."""
    weights = _converted(tmp_path, layout="c4")
    opts = _opts(shared_data, tmp_path, tmp_path / "out", weights, iters=2) + [
        "DATASETS.TEST",
        "()",
    ]
    result = _train(str(REPO / "configs" / "coco_r50.yaml"), opts)
    converted = torch.load(weights, weights_only=True)["model"]
    assert any(k.startswith("roi_heads.res5.") for k in converted)
    for k, v in converted.items():
        assert torch.equal(result.first[k], v), k
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert (tmp_path / "out" / "curves.png").is_file()


def test_weights_settings_are_merged_and_contradictions_warned(tmp_path):
    """Weights pretrained with mean subtraction only (std 1) carry it in their meta: it wins
    over the config file's PIXEL_STD and DEPTH with a warning each in the run's log;
    RES2_OUT_CHANNELS, which the user never set, is merged silently."""
    weights = _converted(tmp_path, pixel_std=[1.0, 1.0, 1.0])
    assert not weights.with_suffix(".yaml").exists()  # no file beside the weights
    out = tmp_path / "out"
    setup = load(FPN_CONFIG, weights, ["MODEL.RESDET.SHORTCUT", "B"], out)
    with setup.run():
        pass
    cfg = setup.cfg
    assert cfg.MODEL.RESNETS.DEPTH == 18 and cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == 64
    assert list(cfg.MODEL.PIXEL_STD) == [1.0, 1.0, 1.0] and cfg.MODEL.DEVICE == "cpu"
    warned = [line for line in (out / "log.txt").read_text().splitlines() if "WARNING" in line]
    warned = [w for w in warned if "so the weights are used as trained" in w]
    assert len(warned) == 2, warned
    assert any("MODEL.RESNETS.DEPTH: the config sets 50" in w and "need 18" in w for w in warned)
    assert any("MODEL.PIXEL_STD" in w for w in warned)
    assert "DEPTH: 18" in (out / "config.yaml").read_text()


def test_a_yaml_beside_weights_is_not_read(tmp_path):
    """A config saved beside its weights (det.yaml next to det.pth), as people keep them,
    changes nothing: the weights' settings travel inside them."""
    weights = _converted(tmp_path, pixel_std=[1.0, 1.0, 1.0])
    beside = weights.with_suffix(".yaml")
    beside.write_text("MODEL:\n  WEIGHTS: ''\n  PIXEL_STD: [9.0, 9.0, 9.0]\n")
    cfg = load(FPN_CONFIG, weights).cfg
    assert list(cfg.MODEL.PIXEL_STD) == [1.0, 1.0, 1.0]
    assert cfg.MODEL.WEIGHTS == str(weights)


def test_legacy_fragment_loads_with_a_warning_and_bad_ones_name_file_and_key(tmp_path, caplog):
    """A resdet conversion from before the weights carried their settings (no meta, its
    OUT.yaml fragment beside it) still loads, with a warning; a broken fragment is one line
    naming it."""
    from resdet.weights import read_meta

    weights = tmp_path / "w.pth"
    atomic_save({"model": {}, "__author__": "resdet", "matching_heuristics": False}, weights)
    (tmp_path / "w.yaml").write_text("MODEL:\n  RESNETS:\n    DEPTH: 34\n  PIXEL_STD: [1, 1, 1]\n")
    with caplog.at_level("WARNING"):
        meta = read_meta(weights)
    assert meta["depth"] == 34 and meta["pixel_std"] == [1, 1, 1]
    assert "Convert the weights again" in caplog.text
    for text, message in [
        ("MODEL:\n  RESNETS:\n    DEPTHH: 18\n", "unknown config key MODEL.RESNETS.DEPTHH"),
        ("MODEL: [1, 2\n", "not valid YAML"),
        ("MODEL:\n  RESNETS:\n    DEPTH: deep\n", "must be a whole number"),
    ]:
        (tmp_path / "w.yaml").write_text(text)
        with pytest.raises(ResdetError, match=message) as e:
            read_meta(weights)
        assert str(e.value).startswith(str(tmp_path / "w.yaml")) and "\n" not in str(e.value)


def test_malicious_weights_are_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    pkl, pth = tmp_path / "model.pkl", tmp_path / "model.pth"
    pkl.write_bytes(pickle.dumps({"model": {"weight": CodeOnLoad(str(marker))}, "__author__": "x"}))
    torch.save({"model": {"weight": CodeOnLoad(str(marker))}}, pth)
    for path in (pkl, pth):
        with pytest.raises(CheckpointError, match="refused"):
            ResdetCheckpointer(nn.Linear(3, 2)).load(str(path))
    assert not marker.exists()
    r = subprocess.run(
        [
            sys.executable,
            "tools/train_det.py",
            "--config",
            FPN_CONFIG,
            "--eval-only",
            "MODEL.WEIGHTS",
            str(pkl),
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            # a registered test set (its files are absent: the weights load first)
            "DATASETS.TEST",
            "('coco_2017_val',)",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode != 0 and not marker.exists()
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {pkl}: refused to load")


def test_safe_loading_keeps_detectron2_pickle_conventions(tmp_path):
    """numpy .pkl weights in Detectron2 format load by name and become tensors."""
    linear = nn.Linear(3, 2)
    w, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7.0, 8.0], dtype=np.float32)
    path = tmp_path / "d2.pkl"
    path.write_bytes(
        pickle.dumps({"model": {"weight": w, "bias": b}, "__author__": "Detectron2 Model Zoo"})
    )
    ResdetCheckpointer(linear).load(str(path))
    assert torch.equal(linear.weight.data, torch.from_numpy(w)) and torch.equal(
        linear.bias.data, torch.from_numpy(b)
    )


def test_checkpoints_are_atomic_and_best_is_not_tagged(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    ck = ResdetCheckpointer(model, str(tmp_path))
    ck.save("model_final", iteration=5)
    ck.save("model_best", iteration=3)
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    before = (tmp_path / "model_final.pth").read_bytes()

    def crash(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        ck.save("model_final", iteration=6)
    assert (tmp_path / "model_final.pth").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "last_checkpoint",
        "model_best.pth",
        "model_final.pth",
    ]
    assert (
        ResdetCheckpointer(nn.Linear(3, 2)).load(str(tmp_path / "model_final.pth"))["iteration"]
        == 5
    )

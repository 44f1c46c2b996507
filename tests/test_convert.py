"""Weight conversion into Detectron2 checkpoints: every source format, both layouts,
features equal to the source network's own, and bad input refused with nothing written."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from conftest import REPO, CodeOnLoad
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

import resdet.convert as rc
from resdet.io import CheckpointError
from resdet.modeling import build_resnet

STAGES = ("res2", "res3", "res4", "res5")
TV_INPUT = dict(
    FORMAT="RGB", PIXEL_MEAN=[123.675, 116.28, 103.53], PIXEL_STD=[58.395, 57.12, 57.375]
)
# Non-backbone modules a converted checkpoint leaves for fine-tuning to initialise.
HEADS = {
    "c4": {"proposal_generator.rpn_head", "roi_heads.box_predictor"},
    "fpn": {"proposal_generator.rpn_head", "roi_heads.box_head", "roi_heads.box_predictor"}
    | {f"backbone.fpn_{kind}{i}" for kind in ("lateral", "output") for i in (2, 3, 4, 5)},
}


def _randomize_bn(net, seed=1):
    """Random BN statistics and affine terms, so a swapped or dropped BN tensor shows."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
    return net.eval()


@torch.no_grad()
def _tv_stages(net, x):
    """res2..res5 of a torchvision/timm ResNet, from its own modules."""
    act = getattr(net, "relu", None) or net.act1
    y, out = net.maxpool(act(net.bn1(net.conv1(x)))), {}
    for i in range(1, 5):
        y = out[f"res{i + 1}"] = getattr(net, f"layer{i}")(y)
    return out


def _detector(out, layout):
    """Build the detector as the trainer does (base config + what the weights carry),
    load ``out``."""
    from resdet.engine import load

    base = REPO / "configs" / ("Base-RCNN-C4.yaml" if layout == "c4" else "Base-RCNN-FPN.yaml")
    cfg = load(base, out, device="cpu").cfg
    model = build_model(cfg).eval()
    checkpointer, seen = DetectionCheckpointer(model), []
    checkpointer._log_incompatible_keys = seen.append
    checkpointer.load(str(out))
    (incompatible,) = seen
    assert not incompatible.unexpected_keys and not incompatible.incorrect_shapes
    assert {".".join(k.split(".")[:2]) for k in incompatible.missing_keys} == HEADS[layout]
    return cfg, model


@torch.no_grad()
def _det_stages(model, layout, x):
    if layout == "fpn":
        return model.backbone.bottom_up(x)
    res4 = model.backbone(x)["res4"]
    return {"res4": res4, "res5": model.roi_heads.res5(res4)}


def _assert_close(ours, theirs):
    assert ours, "no stages compared"
    for stage, y in ours.items():
        assert y.shape == theirs[stage].shape, stage
        assert (y - theirs[stage]).abs().max().item() < 1e-4, stage


def _no_output(tmp_path, name="out"):
    return not [p.name for p in tmp_path.iterdir() if p.name.startswith((name, f".{name}"))]


def _run_tool(*args):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "convert_weights.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )


@pytest.mark.parametrize(
    "depth,layout", [(18, "c4"), (34, "fpn"), (50, "c4"), (101, "fpn"), (152, "c4")]
)
def test_torchvision_round_trip_every_depth(tmp_path, depth, layout):
    net = _randomize_bn(getattr(torchvision.models, f"resnet{depth}")())
    torch.save(net.state_dict(), tmp_path / "tv.pth")
    result = rc.convert(tmp_path / "tv.pth", tmp_path / "out.pth", layout=layout)
    assert (result.source.kind, result.source.depth, result.source.shortcut) == (
        "torchvision",
        depth,
        "B",
    )
    cfg, model = _detector(tmp_path / "out.pth", layout)
    assert cfg.MODEL.RESNETS.DEPTH == depth and cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    assert cfg.MODEL.RESNETS.RES2_OUT_CHANNELS == (64 if depth < 50 else 256)
    assert cfg.INPUT.FORMAT == "RGB" and list(cfg.MODEL.PIXEL_STD) == TV_INPUT["PIXEL_STD"]
    x = torch.randn(1, 3, 64, 64)
    ours, theirs = _det_stages(model, layout, x), _tv_stages(net, x)
    _assert_close(ours, theirs)
    assert len(ours) == (4 if layout == "fpn" else 2)


def _resdet_checkpoint(path, depth=18, **arch):
    net = _randomize_bn(
        build_resnet(depth, num_classes=5, out_features=list(STAGES) + ["linear"], **arch)
    )
    meta = dict(
        format="resdet-classifier",
        depth=depth,
        dataset="imagenet",
        shortcut=arch.get("shortcut", "B"),
        residual=arch.get("residual", True),
        stride_in_1x1=False,
        num_classes=5,
        norm="BN",
        input_format="BGR",
        pixel_mean=[103.53, 116.28, 123.675],
        pixel_std=[1.0, 1.0, 1.0],
        recipe="test",
        classes=[str(i) for i in range(5)],
        metrics={},
    )
    torch.save({"model": net.state_dict(), "meta": meta}, path)
    return net


@pytest.mark.parametrize(
    "layout,arch", [("c4", dict(shortcut="C")), ("fpn", dict(shortcut="A", residual=False))]
)
def test_resdet_checkpoint_to_both_layouts(tmp_path, layout, arch):
    net = _resdet_checkpoint(tmp_path / "model_final.pth", **arch)
    result = rc.convert(
        tmp_path / "model_final.pth",
        tmp_path / "out.pth",
        layout=layout,
        verify_features=True,
        size=64,
    )
    assert result.source.kind == "resdet"
    assert all(
        set(d) == {"resdet trunk"} and d["resdet trunk"] < 1e-4 for d in result.diffs.values()
    )
    assert not any(
        "linear" in k for k in torch.load(tmp_path / "out.pth", weights_only=True)["model"]
    )
    cfg, model = _detector(tmp_path / "out.pth", layout)
    # the weights carry their settings, not the base config's defaults
    assert (cfg.INPUT.FORMAT, list(cfg.MODEL.PIXEL_STD)) == ("BGR", [1.0, 1.0, 1.0])
    assert (cfg.MODEL.RESDET.SHORTCUT, cfg.MODEL.RESDET.RESIDUAL) == (
        arch["shortcut"],
        arch.get("residual", True),
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_close(_det_stages(model, layout, x), net(x))


def test_timm_resnet_converts_and_variants_are_refused(tmp_path):
    import timm

    net = _randomize_bn(timm.create_model("resnet18", pretrained=False))
    torch.save(net.state_dict(), tmp_path / "timm.pth")
    result = rc.convert(
        tmp_path / "timm.pth", tmp_path / "out.pth", kind="timm", verify_features=True, size=64
    )
    # verify ran timm's own network as a reference
    assert all(
        set(d) == {"resdet trunk", "timm"} and max(d.values()) < 1e-4 for d in result.diffs.values()
    )
    _, model = _detector(tmp_path / "out.pth", "c4")
    x = torch.randn(1, 3, 64, 64)
    _assert_close(_det_stages(model, "c4", x), _tv_stages(net, x))

    torch.save(timm.create_model("resnet18d", pretrained=False).state_dict(), tmp_path / "r18d.pth")
    with pytest.raises(CheckpointError) as e:
        rc.convert(tmp_path / "r18d.pth", tmp_path / "bad.pth")
    assert "r18d.pth" in str(e.value) and "deep stem" in str(e.value) and "avg-down" in str(e.value)
    assert _no_output(tmp_path, "bad")


def _c2_name(key):
    """resdet name -> Caffe2/MSRA blob name (the inverse of Detectron2's renaming)."""
    key = (
        key.replace(".norm.weight", "_bn_s").replace(".norm.bias", "_bn_b").replace(".weight", "_w")
    )
    if key.startswith("stem."):
        return "conv1_w" if key == "stem.conv1_w" else key.replace("stem.conv1", "res_conv1")
    for ours, theirs in (
        ("shortcut", "branch1"),
        ("conv1", "branch2a"),
        ("conv2", "branch2b"),
        ("conv3", "branch2c"),
    ):
        key = key.replace(f".{ours}", f".{theirs}")
    return key.replace(".", "_")


def test_detectron2_sources_caffe2_pkl_and_reconversion(tmp_path):
    net = _randomize_bn(build_resnet(18, num_classes=None, out_features=list(STAGES)))
    for m in net.modules():  # Caffe2 BN is an affine channel: identity statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.zero_()
            m.running_var.fill_(1 - m.eps)
    blobs = {
        _c2_name(k): v.numpy()
        for k, v in net.state_dict().items()
        if "running" not in k and "num_batches" not in k
    }
    assert "res2_0_branch2a_bn_s" in blobs and "res3_0_branch1_w" in blobs
    (tmp_path / "R-18.pkl").write_bytes(pickle.dumps({"blobs": blobs}))
    result = rc.convert(tmp_path / "R-18.pkl", tmp_path / "c4.pth", verify_features=True, size=64)
    assert (result.source.kind, result.source.depth, result.source.shortcut) == (
        "detectron2",
        18,
        "B",
    )
    cfg, model = _detector(tmp_path / "c4.pth", "c4")
    # MSRA weights: Detectron2's defaults
    assert (cfg.INPUT.FORMAT, list(cfg.MODEL.PIXEL_STD), cfg.MODEL.RESNETS.STRIDE_IN_1X1) == (
        "BGR",
        [1.0, 1.0, 1.0],
        True,
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_close(_det_stages(model, "c4", x), net(x))

    # resdet's own C4 output re-laid out as FPN keeps its settings
    again = rc.convert(tmp_path / "c4.pth", tmp_path / "fpn.pth", layout="fpn")
    assert again.source.kind == "detectron2"
    metas = [torch.load(tmp_path / f, weights_only=True)["meta"] for f in ("c4.pth", "fpn.pth")]
    drop = ("layout", "versions", "source")
    assert [{k: v for k, v in m.items() if k not in drop} for m in metas][0] == {
        k: v for k, v in metas[1].items() if k not in drop
    }
    _, model = _detector(tmp_path / "fpn.pth", "fpn")
    with torch.no_grad():
        _assert_close(_det_stages(model, "fpn", x), net(x))


def test_auto_detection_of_every_source_kind(tmp_path):
    import timm

    trunk = build_resnet(18, num_classes=10).state_dict()
    tv = torchvision.models.resnet18().state_dict()
    sources = {
        "resdet": {"model": trunk, "meta": {"format": "resdet-classifier"}},
        "torchvision": tv,
        "timm": timm.create_model("resnet18d", pretrained=False).state_dict(),
        "detectron2": {
            "model": {"backbone.bottom_up." + k: v.numpy() for k, v in trunk.items()},
            "__author__": "Detectron2 Model Zoo",
        },
    }
    for kind, obj in sources.items():
        assert rc.detect_format(obj) == kind
    assert (
        rc.detect_format({"conv1_w": np.zeros(1), "res2_0_branch2a_w": np.zeros(1)}) == "detectron2"
    )
    assert (
        rc.detect_format(timm.create_model("resnet18", pretrained=False).state_dict())
        == "torchvision"
    )
    # detectron2 model-zoo pickle with Detectron2 names: same trunk tensors, MSRA settings
    (tmp_path / "zoo.pkl").write_bytes(pickle.dumps(sources["detectron2"]))
    src = rc.load_source(tmp_path / "zoo.pkl")
    assert src.stride_in_1x1 is True and src.input_format == "BGR"
    assert all(torch.equal(src.weights[k], v) for k, v in trunk.items() if k in src.weights)
    assert len(src.weights) == len(
        [k for k in trunk if "linear" not in k and "num_batches" not in k]
    )
    torch.save(tv, tmp_path / "tv.pth")
    with pytest.raises(
        CheckpointError, match=r"tv\.pth: not a resdet checkpoint \(it looks like torchvision\)"
    ):
        rc.load_source(tmp_path / "tv.pth", "resdet")


def test_malicious_checkpoints_never_run(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(
        pickle.dumps({"model": {"conv1_w": CodeOnLoad(str(marker))}})
    )
    proc = _run_tool(tmp_path / "evil.pkl", tmp_path / "out.pth")
    assert proc.returncode != 0 and not marker.exists()
    assert (
        len(proc.stderr.strip().splitlines()) == 1
        and "evil.pkl" in proc.stderr
        and "forbidden" in proc.stderr
    )
    torch.save({"model": {"conv1.weight": CodeOnLoad(str(marker))}}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth: refused"):
        rc.convert(tmp_path / "evil.pth", tmp_path / "out.pth")
    assert not marker.exists() and _no_output(tmp_path)


def test_depth_mismatch_via_tool_names_key_and_shapes(tmp_path):
    torch.save(torchvision.models.resnet50().state_dict(), tmp_path / "r50.pth")
    proc = _run_tool(tmp_path / "r50.pth", tmp_path / "out.pth", "--depth", "101")
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert "r50.pth" in line and "ResNet-101" in line
    assert (
        "res4.6.conv1.weight: checkpoint absent, ResNet-101 (B shortcuts) expects (256, 1024, 1, 1)"
        in line
    )
    assert _no_output(tmp_path)


def _truncated(path):
    torch.save(torchvision.models.resnet18().state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])


def _blocks_missing(path):
    sd = torchvision.models.resnet18().state_dict()
    torch.save({k: v for k, v in sd.items() if not k.startswith("layer4.1.")}, path)


def _r18(path):
    torch.save(torchvision.models.resnet18().state_dict(), path)


def _cifar(path):
    torch.save(
        {
            "model": build_resnet(20, dataset="cifar", num_classes=10).state_dict(),
            "meta": {"format": "resdet-classifier", "dataset": "cifar", "depth": 20},
        },
        path,
    )


def _wide(path):
    torch.save(torchvision.models.wide_resnet50_2().state_dict(), path)


@pytest.mark.parametrize(
    "make,kwargs,message",
    [
        (None, {}, r"src\.pth: no such checkpoint file"),
        (_truncated, {}, r"src\.pth: not a readable PyTorch checkpoint"),
        (
            lambda p: torch.save({"foo": torch.zeros(2)}, p),
            {},
            r"src\.pth: unknown checkpoint format \(first key 'foo'\)",
        ),
        (
            _blocks_missing,
            {},
            r"src\.pth: basic blocks per stage \(2, 2, 2, 1\) match no ResNet depth",
        ),
        (
            _r18,
            dict(depth=34),
            r"src\.pth: .*first mismatch res2\.2\.conv1\.weight: checkpoint absent,"
            r" .*expects \(64, 64, 3, 3\)",
        ),
        (_r18, dict(depth=77), r"src\.pth: depth=77 is not supported; allowed: 18, 34"),
        (
            _wide,
            {},
            r"src\.pth: .*first mismatch res2\.0\.conv1\.weight: checkpoint \(128, 64, 1,"
            r" 1\), .*expects \(64, 64, 1, 1\)",
        ),
        (_cifar, {}, r"src\.pth: meta\.dataset='cifar': CIFAR nets"),
        (_r18, dict(layout="c5"), r"out\.pth: layout 'c5' is not supported"),
    ],
)
def test_bad_input_is_one_line_error_and_writes_nothing(tmp_path, make, kwargs, message):
    if make is not None:
        make(tmp_path / "src.pth")
    (tmp_path / "out.pth").write_text("an earlier result")  # stays untouched
    with pytest.raises(CheckpointError, match=message) as e:
        rc.convert(tmp_path / "src.pth", tmp_path / "out.pth", **kwargs)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.pth"] + (["src.pth"] if make else [])
    )
    assert (tmp_path / "out.pth").read_text() == "an earlier result"


def test_failed_verification_writes_nothing(tmp_path, monkeypatch):
    _r18(tmp_path / "tv.pth")
    real = rc.to_detectron2

    def broken(source, layout):  # a conversion bug: one res3 weight off
        ckpt = real(source, layout)
        key = "backbone.res3.0.conv1.weight"
        ckpt["model"][key] = ckpt["model"][key] + 0.1  # a new tensor: the source stays right
        return ckpt

    monkeypatch.setattr(rc, "to_detectron2", broken)
    with pytest.raises(
        CheckpointError, match=r"tv\.pth: verification failed: res\d differs by .*nothing written"
    ):
        rc.convert(tmp_path / "tv.pth", tmp_path / "out.pth", verify_features=True, size=64)
    assert _no_output(tmp_path)


def test_tool_verifies_on_a_real_image(tmp_path, shared_data):
    image = sorted((shared_data / "imagenet-sample").glob("*.JPEG"))[0]
    _r18(tmp_path / "tv.pth")
    proc = _run_tool(
        tmp_path / "tv.pth", tmp_path / "r18_fpn.pth", "--layout", "fpn", "--verify", image
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| res")]
    assert [r.split("|")[1].strip() for r in rows] == ["res2", "res3", "res4", "res5"]
    assert all(float(v) < 1e-4 for r in rows for v in r.split("|")[2:4])
    assert "torchvision" in proc.stdout and (tmp_path / "r18_fpn.pth").is_file()
    assert not (tmp_path / "r18_fpn.yaml").exists()  # the settings are inside the .pth


def test_training_checkpoint_of_a_detector_takes_its_run_config(tmp_path):
    """Detectron2's checkpointer saves no settings: they come from the config the run was
    trained with, given by name (--config), never from a config.yaml that happens to stand
    beside the checkpoint, nor from Detectron2's BGR defaults."""
    from resdet.config import get_resdet_cfg
    from resdet.convert import convert, load_source, to_detectron2

    src = tmp_path / "src.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), src)
    run = tmp_path / "run"
    run.mkdir()
    model = to_detectron2(load_source(src), "fpn")["model"]
    torch.save({"model": model, "iteration": 1, "optimizer": {}}, run / "model_0000001.pth")
    cfg = get_resdet_cfg()
    cfg.INPUT.FORMAT, cfg.MODEL.PIXEL_STD = "RGB", [58.395, 57.12, 57.375]
    (run / "config.yaml").write_text(cfg.dump())
    with pytest.raises(CheckpointError, match=r"give the config it was trained with \(--config"):
        load_source(run / "model_0000001.pth")
    convert(
        run / "model_0000001.pth", tmp_path / "out.pth", layout="fpn", config=run / "config.yaml"
    )
    meta = torch.load(tmp_path / "out.pth", weights_only=True)["meta"]
    assert meta["input_format"] == "RGB" and meta["pixel_std"] == [58.395, 57.12, 57.375]


def test_refuses_non_finite_weights_and_overwriting_the_source(tmp_path):
    from resdet.convert import convert

    state = torchvision.models.resnet18(weights=None).state_dict()
    src = tmp_path / "r18.pth"
    torch.save(state, src)
    with pytest.raises(CheckpointError, match="would overwrite the source"):
        convert(src, src)
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, src)
    with pytest.raises(
        CheckpointError, match=r"res3\.0\.conv1\.weight holds NaN or infinite values"
    ):
        convert(src, tmp_path / "out.pth")
    assert not (tmp_path / "out.pth").exists()

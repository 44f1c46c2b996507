"""Layer responses (paper Fig. 7) on real CIFAR images."""

import json
import subprocess
import sys

import torch
from conftest import REPO
from PIL import Image

from resdet.analysis.responses import layer_response_stds, load_classifier
from resdet.io import atomic_save
from resdet.modeling import build_resnet

CIFAR_META = dict(
    format="resdet-classifier",
    dataset="cifar",
    shortcut="A",
    stride_in_1x1=False,
    num_classes=10,
    norm="BN",
    input_format="RGB",
    pixel_mean=[125.3, 123.0, 113.9],
    pixel_std=[63.0, 62.1, 66.7],
    recipe="test",
    classes=[str(i) for i in range(10)],
    metrics={},
)


def _checkpoint(path, residual):
    model = build_resnet(8, dataset="cifar", shortcut="A", residual=residual, num_classes=10)
    atomic_save(
        {"model": model.state_dict(), "meta": dict(CIFAR_META, depth=8, residual=residual)}, path
    )
    return path


def test_stds_match_direct_computation():
    model = build_resnet(8, dataset="cifar", num_classes=10).eval()
    batches = [torch.randn(4, 3, 16, 16), torch.randn(3, 3, 16, 16)]
    stds = layer_response_stds(model, batches)
    assert len(stds) == 7  # stem + 3 stages x 1 block x 2 convs
    with torch.no_grad():
        stem = torch.cat([model.stem.conv1(x).flatten() for x in batches])
        last = torch.cat(
            [
                model.res4[0]
                .conv2(torch.relu(model.res4[0].conv1(model.res3(model.res2(model.stem(x))))))
                .flatten()
                for x in batches
            ]
        )
    assert abs(stds[0] - stem.double().std(unbiased=False).item()) < 1e-5
    assert abs(stds[-1] - last.double().std(unbiased=False).item()) < 1e-5


def test_tool_writes_plot_and_json(tmp_path, shared_data):
    plain = _checkpoint(tmp_path / "plain.pth", residual=False)
    res = _checkpoint(tmp_path / "res.pth", residual=True)
    out = tmp_path / "out"
    r = subprocess.run(
        [
            sys.executable,
            "tools/layer_responses.py",
            "--checkpoints",
            str(plain),
            str(res),
            "--data",
            str(shared_data / "cifar10-mini" / "test"),
            "--output",
            str(out),
            "--max-images",
            "40",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "responses.json").read_text())
    assert set(summary) == {"plain-8", "resnet-8"}
    assert all(len(v["stds"]) == 7 and all(s > 0 for s in v["stds"]) for v in summary.values())
    assert Image.open(out / "responses.png").size[0] > 100


def test_bad_checkpoint_is_a_one_line_error(tmp_path, shared_data):
    bad = tmp_path / "bad.pth"
    torch.save({"weights": {}}, bad)
    r = subprocess.run(
        [
            sys.executable,
            "tools/layer_responses.py",
            "--checkpoints",
            str(bad),
            "--data",
            str(shared_data / "cifar10-mini" / "test"),
            "--output",
            str(tmp_path / "o"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0
    assert (
        r.stderr.strip().splitlines()[-1]
        == f"error: {bad}: not a resdet classifier checkpoint (needs 'model' and 'meta')"
    )
    assert not (tmp_path / "o" / "responses.json").exists()


def test_load_classifier_round_trip(tmp_path):
    path = _checkpoint(tmp_path / "c.pth", residual=True)
    model, meta = load_classifier(path)
    assert meta["depth"] == 8 and model.linear.out_features == 10

"""Layer responses (paper Sec. 4.2, Fig. 7): the standard deviation of every 3x3 layer's
output, after BN and before the addition and ReLU, over a test set.

The paper's argument: residual functions are generally closer to zero than the
unreferenced functions of a plain net, so a ResNet's responses are smaller. A forward hook
on each 3x3 ``Conv2d`` (Detectron2's Conv2d applies its norm inside, so its output is
exactly "after BN, before ReLU/addition") accumulates sums and squares in float64.
"""

import json
from pathlib import Path
from typing import Dict, List

import torch
from detectron2.layers import Conv2d
from torch import nn

from ..errors import CheckpointError, ConfigError, DatasetError, one_line
from ..io import atomic_write, safe_torch_load
from ..modeling import build_resnet
from ..plots import save_figure

__all__ = ["load_classifier", "layer_response_stds", "plot_responses", "run_layer_responses"]


def load_classifier(path):
    """Rebuild a resdet classifier from a pretraining checkpoint (``model`` + ``meta``)."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or not isinstance(ckpt.get("meta"), dict):
        raise CheckpointError(
            f"{path}: not a resdet classifier checkpoint (needs 'model' and 'meta')"
        )
    meta = ckpt["meta"]
    kind = meta.get("format")
    if kind not in (None, "resdet-classifier"):  # a detector or a converted backbone
        raise CheckpointError(
            f"{path}: a {kind} checkpoint, not a pretraining classifier (resdet-classifier:"
            f" what tools/pretrain_imagenet.py writes); give the classifier's model_final.pth"
        )
    lacking = [
        k
        for k in ("depth", "dataset", "shortcut", "residual", "num_classes", "stride_in_1x1")
        if k not in meta
    ]
    if lacking:
        raise CheckpointError(
            f"{path}: its meta lacks {lacking[0]!r}, so its network cannot be rebuilt; give a"
            f" checkpoint written by tools/pretrain_imagenet.py"
        )
    try:
        model = build_resnet(
            meta["depth"],
            dataset=meta["dataset"],
            shortcut=meta["shortcut"],
            residual=meta["residual"],
            num_classes=meta["num_classes"],
            stride_in_1x1=meta["stride_in_1x1"],
        )
        model.load_state_dict(ckpt["model"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path}: its weights do not fit the network its meta describes: {one_line(e)}"
        ) from None
    return model.eval(), meta


@torch.no_grad()
def layer_response_stds(model: nn.Module, batches) -> List[float]:
    """Std of each 3x3 conv layer's output (in network order) over all ``batches``."""
    layers = [m for m in model.modules() if isinstance(m, Conv2d) and m.kernel_size == (3, 3)]
    stats = [[0.0, 0.0, 0] for _ in layers]

    def hook(i):
        def fn(_module, _inp, out):
            out = out.double()
            stats[i][0] += out.sum().item()
            stats[i][1] += (out * out).sum().item()
            stats[i][2] += out.numel()

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    try:
        model.eval()
        for x in batches:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [max(sq / n - (s / n) ** 2, 0.0) ** 0.5 for s, sq, n in stats]


def plot_responses(stds: Dict[str, List[float]], path) -> None:
    """Fig. 7: std per layer in network order (top) and sorted by magnitude (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6))
    for name, s in stds.items():
        style = "--" if name.startswith("plain") else "-"
        a.plot(range(1, len(s) + 1), s, style, label=name)
        b.plot(range(1, len(s) + 1), sorted(s, reverse=True), style, label=name)
    a.set(xlabel="layer index (original)", ylabel="std")
    b.set(xlabel="layer index (sorted by magnitude)", ylabel="std")
    a.legend()
    fig.tight_layout()
    save_figure(fig, path)


def _test_batches(meta, data_dir, max_images, batch_size=100):
    from torchvision import datasets, transforms

    mean = [m / 255 for m in meta["pixel_mean"]]
    std = [s / 255 for s in meta["pixel_std"]]
    tf = [transforms.ToTensor(), transforms.Normalize(mean, std)]
    if meta["dataset"] == "imagenet":
        tf = [transforms.Resize(256), transforms.CenterCrop(224)] + tf
    if not Path(data_dir).is_dir():
        raise DatasetError(f"{data_dir}: no such folder (expected <class>/<image> folders)")
    try:
        ds = datasets.ImageFolder(str(data_dir), transforms.Compose(tf))
    except FileNotFoundError as e:
        raise DatasetError(f"{data_dir}: {one_line(e)}") from None
    ds = torch.utils.data.Subset(ds, range(min(len(ds), max_images)))
    return [x for x, _ in torch.utils.data.DataLoader(ds, batch_size=batch_size)]


def run_layer_responses(checkpoints, data_dir, output_dir, max_images=1000) -> dict:
    """Compute, plot (responses.png) and save (responses.json) the layer responses."""
    if max_images < 1:
        raise ConfigError(f"max_images must be at least 1, got {max_images}")
    output_dir = Path(output_dir)
    stds = {}
    for ckpt in checkpoints:
        model, meta = load_classifier(ckpt)
        name = f"{'resnet' if meta['residual'] else 'plain'}-{meta['depth']}"
        if name in stds:
            name = f"{name} ({Path(ckpt).parent.name})"
        stds[name] = layer_response_stds(model, _test_batches(meta, data_dir, max_images))
    output_dir.mkdir(parents=True, exist_ok=True)
    plot_responses(stds, output_dir / "responses.png")
    summary = {k: {"mean_std": sum(v) / len(v), "stds": v} for k, v in stds.items()}
    with atomic_write(output_dir / "responses.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary

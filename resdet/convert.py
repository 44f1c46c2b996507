"""ResNet weights from resdet, torchvision, timm or Detectron2 -> a Detectron2 checkpoint.

The usual ways to get a Detectron2 backbone wrong are silent: the stride in the wrong
conv of the bottleneck, BGR weights fed RGB images, the wrong pixel statistics. So the
converted checkpoint carries every setting the weights require in its ``meta``
(resdet.weights; every resdet command merges it into the config), and ``verify`` runs the
source network and the Detectron2 backbone on the same input and demands equal features
per stage.

All weights are first brought to resdet's names (which are Detectron2's): torchvision and
plain timm ResNets through one mapping table, Caffe2/MSRA names through Detectron2's own
``convert_basic_c2_names``; depth and shortcut option are read off the weights and the
result is checked key by key, shape by shape, against the resdet layout before anything
is written.
"""

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from tabulate import tabulate

from .config import get_resdet_cfg, load_config, shipped_config_file
from .errors import one_line
from .io import CheckpointError, atomic_save, load_checkpoint_file
from .modeling.resnet import IMAGENET_DEPTHS, build_resnet
from .weights import (
    backbone_meta,
    config_of,
    config_settings,
    legacy_fragment,
    merge_weights_settings,
)

__all__ = [
    "FORMATS",
    "LAYOUTS",
    "TOLERANCE",
    "Source",
    "Conversion",
    "detect_format",
    "load_source",
    "to_detectron2",
    "config_keys",
    "verify",
    "convert",
    "convert_weights",
]

logger = logging.getLogger(__name__)

FORMATS = ("auto", "resdet", "torchvision", "timm", "detectron2")
LAYOUTS = ("c4", "fpn")
STAGES = ("res2", "res3", "res4", "res5")
TOLERANCE = 1e-4  # max abs feature difference per stage that --verify accepts

# What torchvision and timm weights were trained on: RGB in [0, 255] normalised by the
# ImageNet mean/std, stride in the 3x3 conv.
TORCHVISION_INPUT = dict(
    input_format="RGB",
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    stride_in_1x1=False,
)

# torchvision / plain timm ResNet names -> resdet names: the one mapping table.
_TORCHVISION_TO_RESDET = [
    (r"conv1\.weight", lambda m: "stem.conv1.weight"),
    (r"bn1\.(\w+)", lambda m: f"stem.conv1.norm.{m[1]}"),
    (
        r"layer(\d)\.(\d+)\.conv(\d)\.weight",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.weight",
    ),
    (
        r"layer(\d)\.(\d+)\.bn(\d)\.(\w+)",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.conv{m[3]}.norm.{m[4]}",
    ),
    (
        r"layer(\d)\.(\d+)\.downsample\.0\.weight",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.weight",
    ),
    (
        r"layer(\d)\.(\d+)\.downsample\.1\.(\w+)",
        lambda m: f"res{int(m[1]) + 1}.{m[2]}.shortcut.norm.{m[3]}",
    ),
    (r"fc\.(weight|bias)", lambda m: f"linear.{m[1]}"),
]

# timm ResNet variants whose extra layers have no place in the paper's network.
_TIMM_VARIANTS = [
    (r"conv1\.\d+\.", "deep stem (three 3x3 convs, timm resnet*c/d/s/t)"),
    (r"layer\d\.\d+\.downsample\.2\.", "avg-down shortcut (avg pool + 1x1 conv, timm resnet*d)"),
    (r"layer\d\.\d+\.se\.", "squeeze-and-excitation (timm seresnet*)"),
    (r"stages\.\d+\.", "ByobNet layout (timm resnet*ts, resnext*ts)"),
]
_TRUNK = re.compile(r"(stem|res[2-5])\.")


@dataclass
class Source:
    """Weights in resdet names (stem, res2..res5 only) and the settings they need."""

    path: Path
    kind: str
    weights: Dict[str, torch.Tensor]
    depth: int
    shortcut: str
    stride_in_1x1: bool
    input_format: str  # "RGB" or "BGR", as Detectron2's INPUT.FORMAT
    pixel_mean: list  # 0-255 scale, in input_format's channel order
    pixel_std: list
    residual: bool = True
    # The original torchvision/timm state dict, run by its own library in ``verify``.
    reference: Optional[Dict[str, torch.Tensor]] = None


@dataclass
class Conversion:
    """What ``convert`` did: the detected source, the file, the per-stage differences."""

    source: Source
    out: Path
    diffs: Dict[str, Dict[str, float]] = field(default_factory=dict)  # stage -> reference -> diff


def _fail(path, msg):
    raise CheckpointError(f"{path}: {msg}")


def _check_layout_name(layout, path):
    if layout not in LAYOUTS:
        _fail(path, f"layout {layout!r} is not supported; allowed: {', '.join(LAYOUTS)}")


def _shape(t) -> str:
    return "absent" if t is None else str(tuple(t.shape))


def _unwrap(obj, path):
    """The name -> tensor dict inside a checkpoint (``model``, ``state_dict``, ``blobs``)."""
    if not isinstance(obj, dict):
        _fail(path, f"unknown checkpoint format: a {type(obj).__name__}, not a dict of weights")
    for key in ("model", "state_dict", "blobs"):
        if isinstance(obj.get(key), dict):
            return _without_wrapper_prefix(obj[key])
    return _without_wrapper_prefix(obj)


def _without_wrapper_prefix(state):
    """The weights of the wrapped ResNet when every name is under one wrapper's prefix: a
    DataParallel/DistributedDataParallel ``module.`` (stripped by Detectron2's and timm's
    loaders too), or a training wrapper's attribute (a Lightning module's ``model.``,
    ``net.``) whose names below it are a torchvision ResNet's."""
    keys = [k for k in state if isinstance(k, str)]
    if not keys or len(keys) != len(state) or not all("." in k for k in keys):
        return state
    prefix = keys[0].split(".", 1)[0] + "."
    if not all(k.startswith(prefix) for k in keys):
        return state
    inner = {k[len(prefix) :]: v for k, v in state.items()}
    if prefix == "module." or any(re.match(r"(conv1\.weight|layer\d\.)", k) for k in inner):
        return _without_wrapper_prefix(inner)  # DataParallel around a Lightning module
    return state


def _is_c2_name(key: str) -> bool:
    return bool(re.match(r"(conv1_|res_conv1_|res\d_\d+_branch|pred_[wb]$)", key))


def detect_format(obj, path="<checkpoint>") -> str:
    """Which source a loaded checkpoint is: resdet, torchvision, timm or detectron2.

    A plain timm ``resnet*`` state dict has exactly torchvision's names and meaning, so it
    is reported (and converted) as torchvision; "timm" means timm-only layers are present.
    """
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if isinstance(meta, dict) and meta.get("format") == "resdet-classifier":
        return "resdet"
    keys = list(_unwrap(obj, path))
    if any(re.match(p, k) for k in keys for p, _ in _TIMM_VARIANTS):
        return "timm"
    if any(re.match(r"(conv1\.weight|layer\d\.)", k) for k in keys):
        return "torchvision"
    if any(
        re.match(r"(backbone\.|roi_heads\.res5\.|stem\.|res[2-5]\.)", k) or _is_c2_name(k)
        for k in keys
    ):
        return "detectron2"
    first = keys[0] if keys else "none"
    _fail(
        path,
        f"unknown checkpoint format (first key {first!r}); expected resdet, "
        "torchvision/timm or Detectron2 ResNet weights",
    )


def _as_tensor(value, path, key):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    _fail(path, f"{key}: expected a tensor or array, found {type(value).__name__}")


def _from_torchvision(state, path, kind):
    """Map torchvision/timm names; refuse timm variants by name."""
    variants = [
        f"{variant} (key {hit!r})"
        for pattern, variant in _TIMM_VARIANTS
        for hit in [next((k for k in state if re.match(pattern, k)), None)]
        if hit
    ]
    if variants:
        _fail(
            path,
            f"timm variant with {' and '.join(variants)} cannot be mapped onto the "
            "paper's ResNet; only plain resnet18..200 weights convert",
        )
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        for pattern, name in _TORCHVISION_TO_RESDET:
            m = re.fullmatch(pattern, key)
            if m:
                out[name(m)] = _as_tensor(value, path, key)
                break
        else:
            _fail(path, f"key {key!r} is not part of a {kind} ResNet")
    return out


def _from_detectron2(state, path):
    """Strip Detectron2 prefixes (C4 or FPN) and Caffe2 names down to the trunk."""
    from detectron2.checkpoint.c2_model_loading import convert_basic_c2_names

    state = {k: v for k, v in state.items() if not k.endswith(("_momentum", "num_batches_tracked"))}
    keys = list(state)
    if any(_is_c2_name(k) for k in keys):
        keys = convert_basic_c2_names(keys)
    out = {}
    for old, key in zip(state, keys):
        key = re.sub(r"^backbone\.(bottom_up\.)?", "", key)
        key = re.sub(r"^roi_heads\.(?=res5\.)", "", key)
        if _TRUNK.match(key):
            out[key] = _as_tensor(state[old], path, old)
    if not out:
        _fail(
            path,
            "no ResNet trunk weights (stem.*, res2..res5.*) found in this Detectron2 checkpoint",
        )
    # Caffe2 BN is an affine channel (scale, bias): give it the identity statistics that
    # Detectron2's FrozenBatchNorm2d starts from, so x * scale + bias is exact.
    for key in [k for k in out if k.endswith(".norm.weight")]:
        stem = key[: -len("weight")]
        out.setdefault(stem + "running_mean", torch.zeros_like(out[key]))
        out.setdefault(stem + "running_var", torch.ones_like(out[key]) - 1e-5)
    return out


def _block_counts(weights, path):
    counts = []
    for stage in STAGES:
        idx = {int(k.split(".")[1]) for k in weights if k.startswith(stage + ".")}
        if not idx or idx != set(range(len(idx))):
            _fail(path, f"stage {stage}: blocks {sorted(idx) or 'none'} do not form a ResNet stage")
        counts.append(len(idx))
    return tuple(counts)


def _infer_depth(weights, path) -> int:
    counts, bottleneck = _block_counts(weights, path), any(".conv3." in k for k in weights)
    for depth, table in IMAGENET_DEPTHS.items():
        if table == counts and (depth >= 50) == bottleneck:
            return depth
    known = ", ".join(f"R{d} {t}" for d, t in IMAGENET_DEPTHS.items())
    _fail(
        path,
        f"{'bottleneck' if bottleneck else 'basic'} blocks per stage {counts} match no "
        f"ResNet depth ({known})",
    )


def _infer_shortcut(weights, path) -> str:
    """B: projections exactly where the shape changes; C: on every block; A: none."""
    blocks = sorted(
        {k.split(".")[0] + "." + k.split(".")[1] for k in weights if k.startswith("res")}
    )
    projected = {b for b in blocks if f"{b}.shortcut.weight" in weights}
    bottleneck = any(".conv3." in k for k in weights)
    reshaping = {
        b for b in blocks if b.endswith(".0") and (bottleneck or not b.startswith("res2."))
    }
    if not projected:
        return "A"
    if projected == reshaping:
        return "B"
    if projected == set(blocks):
        return "C"
    odd = sorted(projected ^ reshaping)[0]
    _fail(path, f"{odd}: shortcut projections fit none of the options A/B/C")


def _check_layout(source: Source) -> None:
    """Every key and shape of the weights must be those of the resdet network they need."""
    try:
        with torch.device("meta"):  # shapes only: no memory, no init
            net = build_resnet(
                source.depth,
                shortcut=source.shortcut,
                residual=source.residual,
                stride_in_1x1=source.stride_in_1x1,
                num_classes=None,
            )
    except ValueError as e:  # e.g. a forced or recorded depth or shortcut resdet does not build
        _fail(source.path, one_line(e))
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    name = (
        f"ResNet-{source.depth} ({source.shortcut} shortcuts{'' if source.residual else ', plain'})"
    )
    for key, want in expected.items():
        have = source.weights.get(key)
        if have is None or have.shape != want.shape:
            _fail(
                source.path,
                f"weights do not fit {name}: first mismatch {key}: checkpoint "
                f"{_shape(have)}, {name} expects {_shape(want)}",
            )
    for key, have in source.weights.items():
        if key not in expected:
            _fail(
                source.path,
                f"weights do not fit {name}: first mismatch {key}: checkpoint "
                f"{_shape(have)}, {name} expects absent",
            )


def _settings_from_d2(obj, path, c2_names, config=None):
    """Input settings of a Detectron2 checkpoint: what it carries (resdet.weights); for a
    resdet conversion from before that, its fragment; the torchvision ones for
    Detectron2's torchvision conversions; for a training checkpoint that carries none, the
    ``config`` it was trained with; otherwise Detectron2's defaults (BGR, Caffe2 means,
    std 1, stride in the 1x1), which its model zoo and the MSRA weights use."""
    author = obj.get("__author__") if isinstance(obj, dict) else None
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if not c2_names and isinstance(meta, dict) and meta.get("input_format"):
        return {k: meta[k] for k in _SETTINGS if k in meta}
    if not c2_names and author == "resdet":
        legacy = legacy_fragment(path)
        if legacy is None:
            _fail(
                path,
                "a resdet conversion that carries no settings (no meta, no fragment beside it): "
                "the input settings of these weights are unknown; convert the source again",
            )
        return {k: legacy[k] for k in _SETTINGS if k in legacy}
    if not c2_names and author == "torchvision":
        return dict(TORCHVISION_INPUT)
    if not c2_names and author is None:
        if config is None:
            _fail(
                path,
                "a Detectron2 training checkpoint carries no input settings (input format, pixel "
                "statistics, stride placement): give the config it was trained with (--config "
                "its run's config.yaml)",
            )
        return _settings_from_config(config)
    d2 = get_resdet_cfg()
    return dict(
        input_format=d2.INPUT.FORMAT,
        pixel_mean=list(d2.MODEL.PIXEL_MEAN),
        pixel_std=list(d2.MODEL.PIXEL_STD),
        stride_in_1x1=d2.MODEL.RESNETS.STRIDE_IN_1X1,
    )


_SETTINGS = ("input_format", "pixel_mean", "pixel_std", "stride_in_1x1", "shortcut", "residual")


def _settings_from_config(config):
    """The input settings a YAML detection config gives its weights."""
    try:
        cfg = load_config(config, kind="detection").cfg
    except CheckpointError:
        raise
    except Exception as e:  # a ConfigError already names the file
        raise CheckpointError(one_line(e)) from None
    settings = config_of(cfg)
    logger.info("input settings from %s", config)
    return {k: settings[k] for k in _SETTINGS}


def load_source(path, kind: str = "auto", depth: Optional[int] = None, config=None) -> Source:
    """Load any supported checkpoint into resdet names, with the settings it requires.

    ``depth`` forces a layout instead of reading it off the weights; weights that do not
    fit it are refused with the first mismatching key and both shapes. ``config``: the
    config a Detectron2 training checkpoint without resdet's meta was trained with.
    """
    path = Path(path)
    if kind not in FORMATS:
        _fail(path, f"format {kind!r} is not supported; allowed: {', '.join(FORMATS)}")
    obj = load_checkpoint_file(path)
    found = detect_format(obj, path)
    # plain timm weights carry torchvision's names; either flag reads either
    if kind != "auto" and kind != found and not {kind, found} <= {"torchvision", "timm"}:
        _fail(path, f"not a {kind} checkpoint (it looks like {found})")
    kind = found if kind == "auto" else kind
    state = _unwrap(obj, path)
    settings = {}
    if kind == "resdet":
        meta = obj["meta"]
        if meta.get("dataset", "imagenet") != "imagenet":
            _fail(
                path,
                f"meta.dataset={meta.get('dataset')!r}: CIFAR nets (3x3 stem, res2..res4) have "
                "no Detectron2 detection layout; allowed: imagenet",
            )
        if meta.get("norm", "BN") != "BN":
            _fail(path, f"meta.norm={meta.get('norm')!r}: only BN weights convert to FrozenBN")
        lacking = [
            k
            for k in (
                "depth",
                "shortcut",
                "residual",
                "stride_in_1x1",
                "input_format",
                "pixel_mean",
                "pixel_std",
            )
            if k not in meta
        ]
        if lacking:
            _fail(path, f"meta lacks {lacking[0]!r}, which the conversion needs")
        weights = {
            k: _as_tensor(v, path, k)
            for k, v in state.items()
            if _TRUNK.match(k) and not k.endswith("num_batches_tracked")
        }
        settings = dict(
            input_format=meta["input_format"],
            pixel_mean=list(meta["pixel_mean"]),
            pixel_std=list(meta["pixel_std"]),
            stride_in_1x1=bool(meta["stride_in_1x1"]),
            shortcut=meta["shortcut"],
            residual=bool(meta["residual"]),
        )
        depth = depth or int(meta["depth"])
    elif kind in ("torchvision", "timm"):
        weights = _from_torchvision(state, path, kind)
        settings = dict(TORCHVISION_INPUT)
    else:
        weights = _from_detectron2(state, path)
        settings = _settings_from_d2(obj, path, any(_is_c2_name(k) for k in state), config)
    weights.pop("linear.weight", None)
    weights.pop("linear.bias", None)
    settings.setdefault("shortcut", _infer_shortcut(weights, path))
    bad = next(
        (k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()),
        None,
    )
    if bad is not None:
        _fail(
            path,
            f"{bad} holds NaN or infinite values: these weights come from a diverged run; "
            "convert an earlier checkpoint",
        )
    source = Source(
        path=path,
        kind=kind,
        weights=weights,
        depth=depth or _infer_depth(weights, path),
        reference=state if kind in ("torchvision", "timm") else None,
        **settings,
    )
    _check_layout(source)
    return source


def config_keys(source: Source, layout: str = "c4") -> dict:
    """``{YAML key: value}`` the converted weights need, for a plain Detectron2 config (a
    resdet command reads them from the checkpoint's meta itself)."""
    return config_settings(backbone_meta(source, layout))


def to_detectron2(source: Source, layout: str = "c4") -> dict:
    """The Detectron2 checkpoint: C4 puts res5 in the RoI head, FPN everything in bottom_up."""
    _check_layout_name(layout, source.path)

    def target(key):
        if layout == "fpn":
            return "backbone.bottom_up." + key
        return ("roi_heads." if key.startswith("res5.") else "backbone.") + key

    model = {target(k): v.detach().float().contiguous() for k, v in source.weights.items()}
    return {
        "model": model,
        "__author__": "resdet",
        "matching_heuristics": False,
        "meta": backbone_meta(source, layout),
    }


def _detector(source: Source, layout: str):
    from detectron2.modeling import build_model

    base = "Base-RCNN-C4.yaml" if layout == "c4" else "Base-RCNN-FPN.yaml"
    cfg = load_config(shipped_config_file(base), {"MODEL.DEVICE": "cpu"}).cfg
    merge_weights_settings(cfg, config_keys(source, layout), source.path)
    return build_model(cfg).eval()


def _detector_stages(model, layout, x):
    """res2..res5 of the Detectron2 model (C4: trunk to res4, then the RoI head's res5)."""
    trunk = model.backbone if layout == "c4" else model.backbone.bottom_up
    out, x = {}, trunk.stem(x)
    for name, stage in zip(trunk.stage_names, trunk.stages):
        x = out[name] = stage(x)
    if layout == "c4":
        out["res5"] = model.roi_heads.res5(out["res4"])
    return out


def _reference_stages(source: Source, x):
    """The source weights run by their own library (torchvision or timm), if it has the net."""
    if source.reference is None or source.shortcut != "B":
        return None
    if source.kind == "timm":
        import timm

        net = timm.create_model(f"resnet{source.depth}", pretrained=False)
    else:
        import torchvision

        builder = getattr(torchvision.models, f"resnet{source.depth}", None)
        if builder is None:
            return None
        net = builder(weights=None)
    missing, unexpected = net.load_state_dict(source.reference, strict=False)
    if unexpected or set(missing) - {"fc.weight", "fc.bias"}:
        _fail(
            source.path,
            f"{source.kind} resnet{source.depth} does not take these weights "
            f"(first mismatch {(unexpected or missing)[0]})",
        )
    net.eval()
    act = getattr(net, "relu", None) or net.act1
    y, out = net.maxpool(act(net.bn1(net.conv1(x)))), {}
    for i, stage in enumerate(STAGES, start=1):
        y = out[stage] = getattr(net, f"layer{i}")(y)
    return out


def _verification_input(source: Source, image, size: int):
    """A real image preprocessed as the weights need, or a fixed random tensor."""
    if image is None:
        return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image

    image = Path(image)
    if not image.is_file():
        _fail(image, "no such image file")
    try:
        img = read_image(str(image), format=source.input_format)
    except OSError as e:
        _fail(image, f"not a readable image: {one_line(e)}")
    img = T.ResizeShortestEdge(size, 2 * size).get_transform(img).apply_image(img)
    x = torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1)), dtype=torch.float32)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (source.pixel_mean, source.pixel_std))
    return ((x - mean) / std)[None]


@torch.no_grad()
def verify(source: Source, checkpoint: dict, layout: str = "c4", image=None, size: int = 224):
    """Max abs difference per stage between the source nets and the Detectron2 model.

    The references are the resdet classifier trunk with the source settings and, for
    torchvision/timm weights, that library's own ResNet, so a mistake in resdet's names
    cannot hide. Raises CheckpointError when any stage differs by ``TOLERANCE`` or more.
    """
    x = _verification_input(source, image, size)
    trunk = build_resnet(
        source.depth,
        shortcut=source.shortcut,
        residual=source.residual,
        stride_in_1x1=source.stride_in_1x1,
        num_classes=None,
        out_features=list(STAGES),
    )
    trunk.load_state_dict(source.weights, strict=False)
    refs = {"resdet trunk": trunk.eval()(x)}
    theirs = _reference_stages(source, x)
    if theirs is not None:
        refs[source.kind] = theirs
    model = _detector(source, layout)
    incompatible = model.load_state_dict(checkpoint["model"], strict=False)
    part = "backbone.bottom_up." if layout == "fpn" else ("backbone.", "roi_heads.res5.")
    missing = [k for k in incompatible.missing_keys if k.startswith(part)]
    if missing or incompatible.unexpected_keys:
        _fail(
            source.path,
            f"the Detectron2 {layout} model does not take the converted weights "
            f"(first mismatch {(missing or incompatible.unexpected_keys)[0]})",
        )
    det = _detector_stages(model, layout, x)
    diffs = {
        s: {r: (out[s] - det[s]).abs().max().item() for r, out in refs.items()} for s in STAGES
    }
    logger.info(
        "max abs difference per stage (source vs Detectron2 %s):\n%s",
        layout,
        tabulate(
            [[s] + [f"{d:.3g}" for d in diffs[s].values()] for s in STAGES],
            headers=["stage"] + list(refs),
            tablefmt="pipe",
        ),
    )
    worst = max(((d, s, r) for s in STAGES for r, d in diffs[s].items()))
    if not worst[0] < TOLERANCE:
        _fail(
            source.path,
            f"verification failed: {worst[1]} differs by {worst[0]:.3g} between "
            f"{worst[2]} and the Detectron2 {layout} model (tolerance {TOLERANCE}); nothing"
            f" written",
        )
    return diffs


def convert(
    src,
    out,
    *,
    kind: str = "auto",
    layout: str = "c4",
    depth: Optional[int] = None,
    verify_features: bool = False,
    image=None,
    size: int = 224,
    config=None,
) -> Conversion:
    """Convert ``src`` into the Detectron2 checkpoint ``out`` (.pth), which carries the
    settings the weights need (resdet.weights). Written atomically and only after every
    check (and ``verify_features``) passed; on any error nothing is touched. ``config``:
    for a Detectron2 training checkpoint without resdet's meta, its training config."""
    out = Path(out)
    if out.suffix != ".pth":
        _fail(
            out,
            "the converted checkpoint must end in .pth (Detectron2 reads .pkl as Caffe2 pickles)",
        )
    _check_layout_name(layout, out)
    if Path(src).resolve() == out.resolve():
        _fail(out, "the output would overwrite the source weights; choose another output path")
    source = load_source(src, kind, depth, config)
    logger.info(
        "%s: %s weights, ResNet-%d, shortcut %s%s, %s input, stride_in_1x1=%s",
        src,
        source.kind,
        source.depth,
        source.shortcut,
        "" if source.residual else " (plain)",
        source.input_format,
        source.stride_in_1x1,
    )
    checkpoint = to_detectron2(source, layout)
    result = Conversion(source=source, out=out)
    if verify_features:
        result.diffs = verify(source, checkpoint, layout, image, size)
    atomic_save(checkpoint, out)
    logger.info("wrote %s (%d tensors, %s layout)", out, len(checkpoint["model"]), layout)
    return result


def convert_weights(
    src, out, *, layout="c4", verify=False, kind="auto", depth=None, size=224, config=None
) -> dict:
    """Convert ResNet weights (resdet, torchvision, timm, Detectron2/MSRA) to a Detectron2
    checkpoint ``out`` (.pth) that carries what they need (tools/convert_weights.py).

    ``verify``: False, True (a fixed input) or an image path: compare the features of every
    stage with the source network at ``size`` px; above 1e-4 nothing is written. ``config``:
    the training config of a Detectron2 checkpoint that carries no settings. Returns what
    was found and written: format, depth, shortcut, input format, stride_in_1x1, the file,
    the config keys the weights need (for a plain Detectron2 config), and ``diffs`` (stage
    -> reference -> max abs difference; {} without verify)."""
    image = str(verify) if isinstance(verify, (str, os.PathLike)) else None
    result = convert(
        src,
        out,
        kind=kind,
        layout=layout,
        depth=depth,
        verify_features=bool(verify),
        image=image,
        size=size,
        config=config,
    )
    s, diffs = result.source, result.diffs or {}
    return {
        "format": s.kind,
        "depth": s.depth,
        "shortcut": s.shortcut,
        "residual": s.residual,
        "input_format": s.input_format,
        "stride_in_1x1": s.stride_in_1x1,
        "pixel_mean": list(s.pixel_mean),
        "pixel_std": list(s.pixel_std),
        "layout": layout,
        "out": str(result.out),
        "config_keys": config_keys(s, layout),
        "diffs": diffs,
        "max_abs_diff": max((d for refs in diffs.values() for d in refs.values()), default=None),
    }

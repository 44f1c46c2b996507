"""Export the dense part of a resdet Faster R-CNN to ONNX, OpenVINO IR or TorchScript.

One folder per export: the model file(s) and ``export.json`` (what a caller needs to feed
and read the graph: input format, normalisation, padding, test resize, class names,
outputs with their strides, the versions that made it). The folder is built under a
temporary name beside the target, checked (the exported graph is run at a size it was
not traced at and compared with PyTorch), and only then renamed into place: an export
that fails leaves nothing behind.
"""

import contextlib
import copy
import importlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ..errors import CheckpointError, ConfigError, OutputError, ResdetError
from .dense import INPUT_NAME, DenseRCNN, check_exportable, dense_outputs, fingerprint

__all__ = [
    "FORMATS",
    "MODEL_FILES",
    "load_config",
    "build_detector",
    "export_model",
    "export_dense",
    "read_export",
    "require",
    "write_onnx",
]

FORMATS = ("onnx", "openvino", "torchscript")
MODEL_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.ts"}
METADATA = "export.json"
# what the export check tolerates on random input (parity on real images is the tests' job)
VERIFY_RTOL = 1e-3
INT8_VERIFY_RL2 = 0.25
# the pip package behind each module; all in the "deploy" extra
PACKAGES = {
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
}


def require(module: str, what: str):
    """Import an optional runtime module, or a one-line ConfigError saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"{what} needs the Python package {PACKAGES.get(module, module)}, which is "
            f"not installed: pip install 'resdet[deploy]'"
        ) from None


def is_lazy(cfg) -> bool:
    """Whether ``cfg`` is a LazyConfig (an omegaconf DictConfig) rather than a CfgNode."""
    from omegaconf import DictConfig

    return isinstance(cfg, DictConfig)


def load_config(config, weights=None, opts=()):
    """The detector's config on the CPU, with ``weights`` as its weights: a YAML file
    (resdet defaults + the file + ``opts`` as KEY VALUE ... + the YAML fragment beside the
    weights), a LazyConfig ``.py`` (``opts`` as KEY=VALUE, weights as
    train.init_checkpoint), or a CfgNode / LazyConfig object (copied). (The training
    tools' ``setup_cfg`` also sets up logging and output folders, which an export must
    not do.)"""
    from detectron2.config import CfgNode

    if is_lazy(config) or str(config).endswith(".py"):
        return _load_lazy(config, weights, opts)
    from ..config import get_resdet_cfg, merge_config_file, merge_overrides
    from ..detection.checkpoint import merge_weights_fragment

    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.defrost()
    else:
        cfg = merge_config_file(get_resdet_cfg(), config)
    merge_overrides(cfg, list(opts or []))
    if weights is not None:
        cfg.MODEL.WEIGHTS = str(weights)
    cfg.MODEL.DEVICE = "cpu"  # the runtimes here run on the CPU
    merge_weights_fragment(cfg)
    return cfg


def _load_lazy(config, weights, opts):
    from detectron2.config import LazyConfig

    from ..lazy import load_lazy_config, merge_weights_fragment

    if is_lazy(config):
        cfg = LazyConfig.apply_overrides(copy.deepcopy(config), list(opts or []))
    else:
        _, cfg, _ = load_lazy_config(config, list(opts or []))
    if weights is not None:
        cfg.train.init_checkpoint = str(weights)
    if "train" in cfg:
        cfg.train.device = "cpu"
    merge_weights_fragment(cfg)
    return cfg


def build_detector(cfg):
    """The detector of ``cfg`` (a CfgNode or a LazyConfig) with its weights loaded
    (MODEL.WEIGHTS or train.init_checkpoint), in eval mode. Every parameter must come from
    the weights: an export with randomly initialised layers would be wrong."""
    from ..detection.checkpoint import load_detector_weights

    weights = _weights_of(cfg)
    key = "--weights (train.init_checkpoint)" if is_lazy(cfg) else "--weights (MODEL.WEIGHTS)"
    if not weights:
        raise CheckpointError(f"{key} is empty: give the trained detector to export")
    if not Path(weights).is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    if is_lazy(cfg):
        if "model" not in cfg:
            raise ConfigError("the LazyConfig has no 'model' to build")
        from detectron2.config import instantiate

        model = instantiate(cfg.model)
    else:
        from detectron2.modeling import build_model

        model = build_model(cfg)
    return load_detector_weights(model.cpu().eval(), weights)


def export_model(
    cfg,
    weights=None,
    fmt="onnx",
    output_dir="export",
    *,
    opts=(),
    verify=True,
    int8_calibration=None,
    calibration_images=None,
) -> Path:
    """Export the trained detector of ``cfg`` with ``weights`` (default: the config's own)
    to ``output_dir`` in ``fmt``. ``cfg``: a YAML or LazyConfig file (merged with ``opts``:
    KEY VALUE pairs for YAML, KEY=VALUE for a LazyConfig), a CfgNode or a LazyConfig.

    An existing export in ``output_dir`` is replaced; any other non-empty folder is
    refused. ``int8_calibration``: a folder of images to calibrate an int8 export on (up
    to ``calibration_images`` of them; see :func:`export_dense`). Returns the output
    folder."""
    if fmt not in FORMATS:
        raise ConfigError(
            f"--format {fmt!r}: not an export format; choose one of {', '.join(FORMATS)}"
        )
    if weights is not None and not Path(weights).is_file():
        raise CheckpointError(f"{weights}: weights file not found")
    cfg = load_config(cfg, weights, opts)
    return export_dense(
        build_detector(cfg),
        cfg,
        fmt,
        output_dir,
        verify=verify,
        int8_calibration=int8_calibration,
        calibration_images=calibration_images,
    )


def export_dense(
    model,
    cfg,
    fmt,
    output_dir,
    *,
    verify=True,
    onnx_export=None,
    int8_calibration=None,
    calibration_images=None,
) -> Path:
    """Export the dense part of a built detector (weights loaded) to ``output_dir``.

    ``onnx_export``: for ``fmt="openvino"``, an fp32 ONNX export folder of this same model
    to convert (or quantize) instead of exporting the graph again (the graph export is
    most of the time). ``int8_calibration``: a folder (or list) of images; the graph is
    then quantized to int8 (onnx or openvino), its activation ranges calibrated on up to
    ``calibration_images`` of them (resdet.export.quantize)."""
    if fmt not in FORMATS:
        raise ConfigError(
            f"--format {fmt!r}: not an export format; choose one of {', '.join(FORMATS)}"
        )
    check_exportable(model)
    if next(model.parameters()).device.type != "cpu":
        raise ConfigError("MODEL.DEVICE: export runs on the CPU; set MODEL.DEVICE cpu")
    from ..modeling import fold_frozen_batchnorm

    outputs = dense_outputs(model)
    reference = DenseRCNN(model).eval()
    dense = fold_frozen_batchnorm(copy.deepcopy(reference))
    div = model.backbone.size_divisibility
    metadata = _metadata(model, cfg, fmt, outputs)
    names = [o["name"] for o in outputs]
    batches = None
    if int8_calibration is not None:
        from .quantize import DEFAULT_CALIBRATION_IMAGES, calibration_batches

        if fmt == "torchscript":
            raise ConfigError("--int8: int8 exports are onnx or openvino, not torchscript")
        batches = calibration_batches(
            model,
            metadata["test_resize"],
            int8_calibration,
            calibration_images or DEFAULT_CALIBRATION_IMAGES,
        )
    onnx_file = None
    if onnx_export is not None:
        if fmt != "openvino" and batches is None:
            raise ConfigError(
                f"onnx_export: only an openvino export converts an ONNX export, not {fmt}"
            )
        source = read_export(onnx_export)
        if (
            source["format"] != "onnx"
            or source["fingerprint"] != metadata["fingerprint"]
            or source.get("precision", "fp32") != "fp32"
        ):
            raise ConfigError(
                f"{onnx_export}: not an fp32 ONNX export of this model; export it again"
            )
        onnx_file = Path(onnx_export) / MODEL_FILES["onnx"]
    with _atomic_dir(output_dir) as tmp, torch.no_grad():
        try:
            if batches is not None:
                metadata["precision"] = "int8"
                metadata["quantization"] = _write_int8(
                    dense, tmp, names, div, fmt, batches, onnx_file
                )
            elif fmt == "openvino":
                _write_openvino(dense, tmp, names, div, onnx_file=onnx_file)
            else:
                {"onnx": write_onnx, "torchscript": _write_torchscript}[fmt](dense, tmp, names, div)
        except ResdetError:
            raise
        except Exception as e:  # the converters' own errors, e.g. an op a format lacks
            raise ConfigError(
                f"{type(model.backbone).__name__} cannot be exported to {fmt}: "
                f"{type(e).__name__}: {_first_line(e)}"
            ) from e
        metadata["files"] = sorted(p.name for p in tmp.iterdir())
        (tmp / METADATA).write_text(json.dumps(metadata, indent=1))
        if verify:
            _verify(reference, tmp, fmt, div, batches)
    return Path(output_dir)


def _write_int8(dense, folder, names, div, fmt, batches, onnx_file=None) -> dict:
    """The fp32 ONNX graph (``onnx_file``, or exported now), quantized, as ``fmt``."""
    from .quantize import quantize_onnx

    work = Path(tempfile.mkdtemp(dir=folder))
    try:
        if onnx_file is None:
            write_onnx(dense, work, names, div)
            onnx_file = work / MODEL_FILES["onnx"]
        int8 = work / "int8.onnx"
        rpn_outputs = [n for n in names if n.startswith("rpn_")]
        info = quantize_onnx(onnx_file, int8, batches, INPUT_NAME, keep_fp32_outputs=rpn_outputs)
        if fmt == "onnx":
            os.replace(int8, folder / MODEL_FILES["onnx"])
        else:
            _write_openvino(dense, folder, names, div, onnx_file=int8)
        return info
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_export(export_dir) -> dict:
    """The metadata of an export folder, or a one-line error if it is not one."""
    path = Path(export_dir) / METADATA
    if not path.is_file():
        raise ConfigError(f"{export_dir}: not a resdet export (no {METADATA}); run tools/export.py")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); export again") from None
    model_file = Path(export_dir) / MODEL_FILES.get(meta.get("format"), "?")
    if not model_file.is_file():
        raise ConfigError(
            f"{export_dir}: {METADATA} names format {meta.get('format')!r} "
            f"but {model_file.name} is missing; export again"
        )
    return meta


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _metadata(model, cfg, fmt, outputs) -> dict:
    import resdet

    div = model.backbone.size_divisibility
    versions = {"resdet": resdet.__version__, "torch": torch.__version__}
    runtime_modules = {
        "onnx": ("onnx", "onnxruntime"),
        "openvino": ("openvino",),
        "torchscript": (),
    }[fmt]
    for name in runtime_modules:
        versions[name] = require(name, f"--format {fmt}").__version__
    num_classes = model.roi_heads.num_classes
    trunk = getattr(model.backbone, "bottom_up", model.backbone)
    return {
        "format": fmt,
        "model": MODEL_FILES[fmt],
        "precision": "fp32",
        "input": {
            "name": INPUT_NAME,
            "layout": "NCHW",
            "dtype": "float32",
            "format": model.input_format,
            "pixel_mean": [float(v) for v in model.pixel_mean.flatten()],
            "pixel_std": [float(v) for v in model.pixel_std.flatten()],
            "preprocess": "(image - pixel_mean) / pixel_std, then zero-padded at the bottom and "
            "right to a multiple of size_divisibility, batched",
            "size_divisibility": div,
            "dynamic": ["batch", "height", "width"],
        },
        "test_resize": _test_resize(cfg),
        "class_names": _class_names(cfg, num_classes),
        "num_classes": num_classes,
        "outputs": outputs,
        "architecture": {
            "meta": type(model).__name__,
            "backbone": type(model.backbone).__name__,
            "depth": getattr(trunk, "arch", {}).get("depth"),
            "roi_heads": type(model.roi_heads).__name__,
        },
        "in_pytorch": "anchor decoding, RPN top-k and NMS, ROI heads, per-class NMS, rescaling",
        "weights": _weights_of(cfg),
        "fingerprint": fingerprint(model),
        "versions": versions,
    }


def _weights_of(cfg):
    if not is_lazy(cfg):
        return cfg.MODEL.WEIGHTS
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, "train.init_checkpoint", default="") or ""


def _test_resize(cfg):
    """The test-time resize of the config: INPUT.MIN/MAX_SIZE_TEST, or a LazyConfig's
    ResizeShortestEdge in dataloader.test.mapper.augmentations (None if it has none)."""
    note = "shortest side to min_size, longest at most max_size, before preprocess"
    if not is_lazy(cfg):
        return {
            "min_size": cfg.INPUT.MIN_SIZE_TEST,
            "max_size": cfg.INPUT.MAX_SIZE_TEST,
            "note": note,
        }
    from omegaconf import OmegaConf

    augs = OmegaConf.select(cfg, "dataloader.test.mapper.augmentations", default=None) or []
    for aug in augs:
        target = aug.get("_target_") if hasattr(aug, "get") else None
        if getattr(target, "__name__", str(target)).endswith("ResizeShortestEdge"):
            short = aug.get("short_edge_length")
            short = OmegaConf.to_container(short) if OmegaConf.is_config(short) else short
            return {"min_size": short, "max_size": aug.get("max_size"), "note": note}
    return None


def _dataset_names(cfg):
    if not is_lazy(cfg):
        return list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN)
    from omegaconf import OmegaConf

    names = []
    for part in ("test", "train"):
        found = OmegaConf.select(cfg, f"dataloader.{part}.dataset.names", default=None)
        if found is not None:
            names += [found] if isinstance(found, str) else list(found)
    return names


def _class_names(cfg, num_classes):
    """The class names of the config's datasets when known; None when not registered."""
    from detectron2.data import MetadataCatalog

    for name in _dataset_names(cfg):
        classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is None:
            continue
        if len(classes) != num_classes:
            raise ConfigError(
                f"datasets: {name} has {len(classes)} classes but the detector has "
                f"{num_classes}; export the config it was trained with"
            )
        return list(classes)
    return None


@contextlib.contextmanager
def _atomic_dir(output_dir):
    """A temporary folder beside ``output_dir`` that replaces it on success."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file; choose a folder for the export")
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA).is_file():
        raise OutputError(f"{out}: exists and is not a resdet export; choose a new or empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as e:
        raise OutputError(
            f"{out}: cannot write here ({e.strerror or type(e).__name__}); "
            f"choose a folder you can write to"
        ) from None
    try:
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old / "x")
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _example(div, batch=2, h=4, w=5):
    step = div if div > 0 else 32
    return torch.randn(batch, 3, h * step, w * step)


def write_onnx(dense, folder, output_names, div, name=MODEL_FILES["onnx"]):
    """``dense`` (images -> tuple of tensors) to ``folder/name`` with dynamic batch and
    size (multiples of ``div`` when it is > 0), through torch.export."""
    require("onnxscript", "--format onnx")
    from torch.export import Dim

    if div > 0:  # FPN: the top-down sum needs sizes divisible by the coarsest stride
        shape = {
            0: Dim("batch", min=1),
            2: div * Dim("height_div", min=1),
            3: div * Dim("width_div", min=1),
        }
    else:
        shape = {0: Dim("batch", min=1), 2: Dim("height", min=32), 3: Dim("width", min=32)}
    # the exporter narrates each stage on stdout; a tool's output is its result only
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        program = torch.onnx.export(
            dense,
            (_example(div),),
            dynamo=True,
            dynamic_shapes={"images": shape},
            input_names=[INPUT_NAME],
            output_names=output_names,
            optimize=True,
            verbose=False,
        )
        program.save(str(folder / name), external_data=False)


def _write_openvino(dense, folder, output_names, div, onnx_file=None):
    """Through the ONNX graph: OpenVINO's direct PyTorch conversion was no faster and its
    dynamic shapes are the ONNX export's anyway."""
    ov = require("openvino", "--format openvino")
    onnx_dir = Path(tempfile.mkdtemp(dir=folder))
    try:
        if onnx_file is None:
            onnx_file = onnx_dir / MODEL_FILES["onnx"]
            write_onnx(dense, onnx_dir, output_names, div)
        model = ov.convert_model(str(onnx_file))
        # keep fp32 weights: reduced precision is a runtime choice (INFERENCE_PRECISION_HINT)
        ov.save_model(model, str(folder / MODEL_FILES["openvino"]), compress_to_fp16=False)
    finally:
        shutil.rmtree(onnx_dir, ignore_errors=True)


def _write_torchscript(dense, folder, output_names, div):
    dense = dense.to(memory_format=torch.channels_last)
    x = _example(div).contiguous(memory_format=torch.channels_last)
    # torch deprecates TorchScript as a whole; it is the format asked for, and works
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(dense, (x,), check_trace=False)
        # weights become constants (conv + bias folding); layout rewrites stay a load-time choice
        torch.jit.save(torch.jit.freeze(traced), str(folder / MODEL_FILES["torchscript"]))


def _verify(reference, folder, fmt, div, int8_batches=None):
    """Run the export at a batch and size it was not traced at and compare with PyTorch:
    to VERIFY_RTOL (fp32), or for an int8 export on a real calibration image, to
    INT8_VERIFY_RL2 relative L2 error (a broken graph, not the precision's cost: that is
    an AP change, measured by bench/precision_ap.py)."""
    from .runtime import load_dense

    meta = json.loads((folder / METADATA).read_text())
    if int8_batches is None:
        x = _example(div, batch=1, h=3, w=2)
        got = load_dense(folder, precision="fp32")(x)
    else:
        x = torch.from_numpy(int8_batches[0])
        got = load_dense(folder, precision="int8")(x)
    expected = reference(x)
    for name, e in zip([o["name"] for o in meta["outputs"]], expected):
        g = got[name]
        if g.shape != e.shape:
            err = None
        elif int8_batches is None:
            err = float((g - e).abs().max() / e.abs().max().clamp_min(1e-12))
        else:
            err = float((g - e).norm() / e.norm().clamp_min(1e-12))
        tol = VERIFY_RTOL if int8_batches is None else INT8_VERIFY_RL2
        if err is None or not err <= tol:
            how = f"shape {tuple(g.shape)}" if err is None else f"relative error {err:.2g}"
            raise ConfigError(
                f"the {fmt} export of output {name} does not match PyTorch ({how}); "
                f"the model cannot be exported to {fmt} faithfully"
            )

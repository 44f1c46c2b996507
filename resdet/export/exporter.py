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
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from ..engine import load
from ..errors import ConfigError, ResdetError, one_line
from ..io import atomic_dir
from ..version import __version__
from .dense import INPUT_NAME, DenseRCNN, check_exportable, dense_outputs, fingerprint
from .formats import FORMATS, METADATA, MODEL_FILES, read_export, require

__all__ = ["export_model", "export_dense", "write_onnx"]

# what the export check tolerates on random input (parity on real images is the tests' job)
VERIFY_RTOL = 1e-3
INT8_VERIFY_RL2 = 0.25


def export_model(
    config,
    weights=None,
    fmt="onnx",
    output_dir="export",
    *,
    opts=None,
    verify=True,
    int8_calibration=None,
    calibration_images=None,
) -> Path:
    """Export the trained detector of ``config`` with ``weights`` (default: the config's
    own) to ``output_dir`` in ``fmt``. ``config``: anything resdet.engine.load takes (a
    YAML or LazyConfig file, a CfgNode, a LazyConfig), ``opts`` its overrides. The weights
    load under the inference policy: every parameter must come from the file.

    An existing export in ``output_dir`` is replaced; any other non-empty folder is
    refused. ``int8_calibration``: a folder of images to calibrate an int8 export on (up
    to ``calibration_images`` of them; see :func:`export_dense`). Returns the output
    folder."""
    if fmt not in FORMATS:
        raise ConfigError(
            f"--format {fmt!r}: not an export format; choose one of {', '.join(FORMATS)}"
        )
    setup = load(config, weights, opts, device="cpu", kind="detection")  # the runtimes: CPU
    return export_dense(
        setup.build_model(weights="inference").eval(),
        setup,
        fmt,
        output_dir,
        verify=verify,
        int8_calibration=int8_calibration,
        calibration_images=calibration_images,
    )


def export_dense(
    model,
    setup,
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
    metadata = _metadata(model, setup, fmt, outputs)
    names = [o["name"] for o in outputs]
    batches = None
    if int8_calibration is not None:
        from .quantize import DEFAULT_CALIBRATION_IMAGES, calibration_batches

        if fmt == "torchscript":
            raise ConfigError("--int8: int8 exports are onnx or openvino, not torchscript")
        batches = calibration_batches(
            model,
            setup.test_augmentation(),
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
    is_export = lambda folder: (folder / METADATA).is_file()  # noqa: E731
    with atomic_dir(output_dir, replaceable=is_export) as tmp, torch.no_grad():
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
                f"{type(e).__name__}: {one_line(e)[:300]}"
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


def _metadata(model, setup, fmt, outputs) -> dict:
    div = model.backbone.size_divisibility
    versions = {"resdet": __version__, "torch": str(torch.__version__)}
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
        "test_resize": setup.test_resize,
        "class_names": _class_names(setup, num_classes),
        "num_classes": num_classes,
        "outputs": outputs,
        "architecture": {
            "meta": type(model).__name__,
            "backbone": type(model.backbone).__name__,
            "depth": getattr(trunk, "arch", {}).get("depth"),
            "roi_heads": type(model.roi_heads).__name__,
        },
        "in_pytorch": "anchor decoding, RPN top-k and NMS, ROI heads, per-class NMS, rescaling",
        "weights": setup.weights,
        "fingerprint": fingerprint(model),
        "versions": versions,
    }


def _class_names(setup, num_classes):
    """The names of the detector's classes (what the weights carry, else the data's)."""
    classes = setup.class_names
    if classes is not None and len(classes) != num_classes:
        raise ConfigError(
            f"the detector has {num_classes} classes but its class names are {len(classes)}; "
            f"export the config it was trained with"
        )
    return classes


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
    from .backends import load_dense

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

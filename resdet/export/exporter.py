"""Export a trained Faster R-CNN as one graph (resdet.export.graph) in a format of the
table in resdet.export.formats, with what a client needs to call it.

One folder per export: the model and ``export.json``. The same metadata goes into the ONNX
file's ``metadata_props`` and the OpenVINO IR's ``rt_info`` (and a ``.pt2``'s extra files),
so a model file taken out of its folder still says how to feed it. The folder is built
under a temporary name beside the target, checked (the export run at a size it was not
traced at and compared with PyTorch), and only then renamed into place: an export that
fails leaves nothing behind.
"""

import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from ..engine import load
from ..errors import ConfigError, ResdetError, one_line
from ..io import atomic_dir
from ..weights import versions
from .formats import FORMATS, METADATA, MODEL_FILES, RUNTIMES, require
from .graph import (
    GRAPH_INPUT,
    GRAPH_OPSET,
    GRAPH_OUTPUTS,
    GraphRCNN,
    check_graph_exportable,
    export_graph_onnx,
    trace_shapes,
)
from .quantize import DEFAULT_CALIBRATION_IMAGES, calibration_inputs, quantize_graph
from .runtimes import check_choice, load_export, load_graph

__all__ = ["export_model", "export_detector", "export_metadata", "runtime_model"]

# an fp32 export against the PyTorch graph on the check image (pixels; score)
VERIFY_BOX_ATOL, VERIFY_SCORE_ATOL = 1e-2, 1e-3


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
    own; weights that carry their config need none: ``config=None``) to ``output_dir`` in
    ``fmt`` (a name of resdet.export.FORMATS). ``config``: anything resdet.engine.load
    takes, ``opts`` its overrides. The weights load under the inference policy: every
    parameter must come from the file.

    An earlier export in ``output_dir`` is replaced; any other non-empty folder is
    refused. ``int8_calibration``: a folder of images like the ones to detect on; the
    graph's convolutions and linear layers are then quantized to int8 (onnx, openvino),
    calibrated on up to ``calibration_images`` of them. Returns the output folder."""
    _check_format(fmt)
    setup = load(config, weights, opts, device="cpu", kind="detection")  # runtimes: the CPU
    model = setup.build_model(weights="inference").eval()
    return export_detector(
        model,
        setup,
        fmt,
        output_dir,
        verify=verify,
        int8_calibration=int8_calibration,
        calibration_images=calibration_images,
    )


def _check_format(fmt):
    if fmt not in FORMATS:
        raise ConfigError(
            f"--format {fmt!r}: not an export format; choose one of {', '.join(FORMATS)}"
        )


def export_detector(
    model, setup, fmt, output_dir, *, verify=True, int8_calibration=None, calibration_images=None
) -> Path:
    """Export a built detector (weights loaded, on the CPU) of ``setup`` (its
    resdet.engine Setup: test resize, class names, weights) to ``output_dir``."""

    _check_format(fmt)
    check_graph_exportable(model)
    if next(model.parameters()).device.type != "cpu":
        raise ConfigError("MODEL.DEVICE: export runs on the CPU; set MODEL.DEVICE cpu")
    for module in FORMATS[fmt].packages:
        require(module, f"--format {fmt}")
    int8 = int8_calibration is not None
    if int8 and fmt == "pt2":
        raise ConfigError("--int8: int8 exports are onnx or openvino, not pt2")
    graph = GraphRCNN(model).eval()
    inputs = None
    if int8:
        limit = calibration_images or DEFAULT_CALIBRATION_IMAGES
        inputs = calibration_inputs(model, setup.test_augmentation(), int8_calibration, limit)
    meta = export_metadata(model, setup, fmt, graph, "int8" if int8 else "fp32")
    is_export = lambda folder: (folder / METADATA).is_file()  # noqa: E731
    with atomic_dir(output_dir, replaceable=is_export) as tmp:
        try:
            if fmt == "pt2":
                _write_pt2(graph, tmp / MODEL_FILES["pt2"], meta)
            else:
                onnx_path = tmp / "graph.onnx.tmp" if fmt == "openvino" or int8 else None
                onnx_path = onnx_path or tmp / MODEL_FILES["onnx"]
                export_graph_onnx(model, onnx_path, metadata=meta)
                if int8:
                    int8_path = tmp / MODEL_FILES["onnx"] if fmt == "onnx" else tmp / "int8.tmp"
                    meta["quantization"] = quantize_graph(onnx_path, int8_path, inputs)
                    onnx_path.unlink()
                    _write_metadata_props(int8_path, meta)
                    onnx_path = int8_path
                if fmt == "openvino":
                    _write_openvino(onnx_path, tmp / MODEL_FILES["openvino"], meta)
                    onnx_path.unlink()
        except ResdetError:
            raise
        except Exception as e:  # the converters' own errors, e.g. an op a format lacks
            raise ConfigError(
                f"{type(model.backbone).__name__} cannot be exported to {fmt}: "
                f"{type(e).__name__}: {one_line(e)[:300]}"
            ) from e
        meta["files"] = sorted(p.name for p in tmp.iterdir())
        (tmp / METADATA).write_text(json.dumps(meta, indent=1))
        if verify:
            _verify(graph, tmp, fmt, setup, inputs)
    return Path(output_dir)


def export_metadata(model, setup, fmt, graph, precision="fp32") -> dict:
    """What a client needs to call the export (the keys of export.json, of the ONNX
    file's metadata_props and of the IR's rt_info)."""
    classes = setup.class_names
    if classes is not None and len(classes) != graph.num_classes:
        raise ConfigError(
            f"the detector has {graph.num_classes} classes but its class names are "
            f"{len(classes)}; export the config it was trained with"
        )
    generator = model.proposal_generator.anchor_generator
    trunk = getattr(model.backbone, "bottom_up", model.backbone)
    weights = setup.weights
    return {
        "format": fmt,
        "model": MODEL_FILES[fmt],
        "precision": precision,
        "input": {
            "name": GRAPH_INPUT,
            "dtype": "float32",
            "layout": "NCHW",
            "shape": [1, 3, "H", "W"],
            "range": [0, 255],
            "note": "one image, any H and W, resized as test_resize says; normalisation "
            "and padding to size_divisibility are in the graph",
        },
        "input_format": graph.input_format,
        "pixel_mean": [float(v) for v in graph.pixel_mean.flatten()],
        "pixel_std": [float(v) for v in graph.pixel_std.flatten()],
        "size_divisibility": graph.size_divisibility,
        "test_resize": setup.test_resize,
        "preprocess": "read the image in input_format; resize it (Detectron2's "
        "ResizeShortestEdge: shortest side to test_resize.min_size, longest at most "
        "max_size); feed it as float32 1x3xHxW, 0-255",
        "postprocess": "boxes are in the input image's pixels: scale them by original / "
        "input size, clip to the original image, drop the ones left empty "
        "(Detectron2's detector_postprocess)",
        "class_names": list(classes) if classes is not None else None,
        "num_classes": graph.num_classes,
        "anchors": {
            "sizes": [[float(s) for s in c] for c in _anchor_sizes(generator)],
            "aspect_ratios": [[float(r) for r in a] for a in _anchor_ratios(generator)],
            "strides": [int(s) for s in generator.strides],
            "offset": float(generator.offset),
        },
        "outputs": [
            {"name": "boxes", "dtype": "float32", "shape": ["N", 4], "meaning": "x1, y1, x2, y2"},
            {"name": "scores", "dtype": "float32", "shape": ["N"], "meaning": "highest first"},
            {
                "name": "classes",
                "dtype": "int64",
                "shape": ["N"],
                "meaning": "index of class_names",
            },
        ],
        "opset": GRAPH_OPSET if fmt != "pt2" else None,
        "architecture": {
            "meta": type(model).__name__,
            "backbone": type(model.backbone).__name__,
            "depth": getattr(trunk, "arch", {}).get("depth"),
            "roi_heads": type(model.roi_heads).__name__,
        },
        "weights": {"path": weights, "sha256": _sha256(weights) if weights else None},
        "versions": dict(versions(), **_runtime_versions(fmt)),
    }


def _anchor_sizes(generator):
    return [(c[:, 2] - c[:, 0]).unique().tolist() for c in generator.cell_anchors]


def _anchor_ratios(generator):
    return [
        ((c[:, 3] - c[:, 1]) / (c[:, 2] - c[:, 0])).round(decimals=4).unique().tolist()
        for c in generator.cell_anchors
    ]


def _runtime_versions(fmt):
    found = {}
    for name in FORMATS[fmt].packages + tuple(r for r in FORMATS[fmt].runtimes if r != "torch"):
        try:
            found[name] = str(require(name, f"--format {fmt}").__version__)
        except ResdetError:
            pass  # a runtime this machine lacks runs the export elsewhere
    return found


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_metadata_props(path, meta):
    onnx = require("onnx", "--format onnx")
    model = onnx.load(str(path), load_external_data=False)
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))


def _write_openvino(onnx_path, xml_path, meta):
    """The IR of the ONNX graph, its weights kept fp32 (reduced precision is a runtime
    choice), the metadata in its rt_info under "resdet"."""
    ov = require("openvino", "--format openvino")
    model = ov.convert_model(str(onnx_path))
    for key, value in meta.items():
        model.set_rt_info(json.dumps(value), ["resdet", key])
    ov.save_model(model, str(xml_path), compress_to_fp16=False)


def _write_pt2(graph, path, meta):
    """``torch.export``'s ExportedProgram of the graph, the metadata in its extra files."""
    example, shapes = trace_shapes(graph)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.filterwarnings("ignore", "`create_unbacked_symint` is deprecated")
        program = torch.export.export(graph, (example,), dynamic_shapes=shapes, strict=False)
    _drop_size_asserts(program)
    torch.export.save(program, str(path), extra_files={METADATA: json.dumps(meta)})


def _drop_size_asserts(program):
    """Drop the trace's checks on data-dependent sizes (``u5 + u6 + u7 + u8 != 0``: at
    least one proposal, as the example had): the ONNX export leaves them out too, and the
    graph handles none (the tests run images with no detections through both)."""
    graph = program.graph_module.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target is torch.ops.aten._assert_scalar.default:
            graph.erase_node(node)
    graph.eliminate_dead_code()
    program.graph_module.recompile()


def _check_image(setup, size_divisibility):
    """A fixed image of mixed textures at the test resize, of a size the trace did not use
    (not a multiple of the padding): what the export is checked on without real images."""
    g = torch.Generator().manual_seed(0)
    short = (setup.test_resize or {}).get("min_size")
    h = short if isinstance(short, int) and short > 0 else 320
    h = h + 3 if size_divisibility > 1 and h % size_divisibility == 0 else h
    w = h * 4 // 3 + 1
    noise = torch.rand(1, 3, h // 8, w // 8, generator=g) * 255
    return torch.nn.functional.interpolate(noise, size=(h, w), mode="bilinear").round()


def _verify(graph, folder, fmt, setup, int8_inputs=None):
    """Run the export on an image of a size it was not traced at and compare with the
    PyTorch graph: the same detections (fp32), or well-formed ones (an int8 graph gives
    other detections; what that costs is an AP change, measured by bench/precision_ap.py)."""
    int8 = int8_inputs is not None
    image = (
        torch.from_numpy(int8_inputs[0]) if int8 else _check_image(setup, graph.size_divisibility)
    )
    runner, _ = load_graph(folder, precision="int8" if int8 else "fp32")
    got = runner(np.ascontiguousarray(image.numpy()))
    with torch.no_grad():
        want = [t.numpy() for t in graph(image)]
    names = list(GRAPH_OUTPUTS)
    shapes_ok = all(g.ndim == w.ndim for g, w in zip(got, want)) and len({len(g) for g in got}) == 1
    finite = all(np.isfinite(g).all() for g in got[:2])
    if not (shapes_ok and finite):
        raise ConfigError(
            f"the {fmt} export returns malformed {', '.join(names)}; the model cannot be "
            f"exported to {fmt} faithfully"
        )
    if int8:
        return
    same = len(got[0]) == len(want[0]) and (
        len(want[0]) == 0
        or (
            np.abs(got[0] - want[0]).max() <= VERIFY_BOX_ATOL
            and np.abs(got[1] - want[1]).max() <= VERIFY_SCORE_ATOL
            and (got[2] == want[2]).all()
        )
    )
    if not same:
        raise ConfigError(
            f"the {fmt} export's detections differ from PyTorch's on a check image "
            f"({len(got[0])} vs {len(want[0])}); the model cannot be exported to {fmt} faithfully"
        )


def runtime_model(model, setup, runtime, precision="fp32", int8_calibration=None):
    """``model`` (a GeneralizedRCNN, weights loaded) exported to a temporary folder and run
    on ``runtime`` ("onnxruntime", "openvino" or "torch" for a .pt2): what
    ``Predictor(config, weights, runtime=...)`` does. Export once with ``resdet export``
    and load the folder (``Predictor(folder)``) to skip the export at every start."""
    check_choice(runtime, precision)
    fmt = RUNTIMES[runtime][0]
    if precision == "int8" and int8_calibration is None:
        raise ConfigError(
            "precision int8: give int8_calibration (a folder of images like the ones to "
            "detect on), or export once with --int8 and load that folder"
        )
    keep = tempfile.TemporaryDirectory(prefix="resdet-export-")
    folder = Path(keep.name) / fmt
    calibration = int8_calibration if precision == "int8" else None
    export_detector(model, setup, fmt, folder, int8_calibration=calibration)
    detector = load_export(folder, runtime, precision)
    detector._export_tmp = keep  # the temporary export lives as long as the detector
    return detector

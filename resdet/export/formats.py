"""The export formats in one table, the export folder's contract, and the optional runtime
packages.

An export folder holds one model (``model.onnx``; ``model.xml`` + ``model.bin``; or
``model.pt2``) and ``export.json``. The model is the whole detector (resdet.export.graph):
its input is one image as a float32 ``1 x 3 x H x W`` array, 0-255, channels in the
recorded ``input.format``, resized as ``test_resize`` says (the resize stays outside the
graph); any H and W. Its outputs are ``boxes`` (N x 4, xyxy, in the input image's pixels),
``scores`` (N) and ``classes`` (N, int64, indices into ``class_names``). What a client needs
to call it is written in three places that agree: ``export.json``, the ONNX file's
``metadata_props`` and the OpenVINO IR's ``rt_info`` (JSON values under the same keys).
"""

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, one_line

__all__ = [
    "Format",
    "FORMATS",
    "MODEL_FILES",
    "METADATA",
    "RUNTIMES",
    "PRECISIONS",
    "require",
    "read_export",
    "find_export",
    "read_graph_metadata",
]

METADATA = "export.json"


@dataclass(frozen=True)
class Format:
    """One export format: its files, the runtimes that run it (the first is its own) and
    the packages that write it."""

    name: str
    files: tuple
    runtimes: tuple
    packages: tuple
    about: str


# the one table of formats (as ultralytics' exporter has one): every command, the
# Predictor and the tests read it
FORMATS = {
    f.name: f
    for f in (
        Format(
            "onnx",
            ("model.onnx",),
            ("onnxruntime", "openvino"),
            ("onnx", "onnxscript"),
            "ONNX (opset 18): ONNX Runtime, OpenVINO, any ONNX runtime",
        ),
        Format(
            "openvino",
            ("model.xml", "model.bin"),
            ("openvino",),
            ("onnx", "onnxscript", "openvino"),
            "OpenVINO IR (fp32 weights)",
        ),
        Format(
            "pt2",
            ("model.pt2",),
            ("torch",),
            (),
            "torch.export ExportedProgram (PyTorch; loading it needs resdet for its NMS op)",
        ),
    )
}
MODEL_FILES = {name: f.files[0] for name, f in FORMATS.items()}
# runtime -> the formats it reads
RUNTIMES = {
    runtime: tuple(name for name, f in FORMATS.items() if runtime in f.runtimes)
    for runtime in ("onnxruntime", "openvino", "torch")
}
# fp32 and bf16 are how a runtime computes an fp32 export; int8 is an export of its own
PRECISIONS = ("fp32", "bf16", "int8")
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
        package = PACKAGES.get(module, module)
        raise ConfigError(
            f"{what} needs the Python package {package}, which is not installed: pip install "
            f"{package} (all runtimes: pip install -e '.[deploy]' in resdet's checkout)"
        ) from None


def read_export(export_dir) -> dict:
    """The metadata of an export folder, or a one-line error if it is not one."""
    folder = Path(export_dir)
    path = folder / METADATA
    if not path.is_file():
        raise ConfigError(f"{folder}: not a resdet export (no {METADATA}); run resdet export")
    try:
        meta = json.loads(path.read_text())
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({one_line(e)}); export again") from None
    fmt = FORMATS.get(meta.get("format") if isinstance(meta, dict) else None)
    if fmt is None:
        raise ConfigError(
            f"{path}: format {meta.get('format') if isinstance(meta, dict) else meta!r} is not "
            f"one of {', '.join(FORMATS)} (an export of another resdet version?); export again"
        )
    missing = [name for name in fmt.files if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"{folder}: {METADATA} names format {fmt.name} but {missing[0]} is missing; "
            f"export again"
        )
    return meta


def find_export(path):
    """``(folder, metadata)`` of an export given as its folder or as its model file
    (``model.onnx``, ``model.xml``, ``model.pt2``, or any .onnx file carrying resdet's
    metadata); None when ``path`` is neither."""
    path = Path(path)
    if path.is_dir() and (path / METADATA).is_file():
        return path, read_export(path)
    suffixes = {f.files[0].rsplit(".", 1)[1]: name for name, f in FORMATS.items()}
    if not (path.is_file() and path.suffix.lstrip(".") in suffixes):
        return None
    if (path.parent / METADATA).is_file() and path.name in MODEL_FILES.values():
        return path.parent, read_export(path.parent)
    if path.suffix == ".onnx":  # a lone graph: its metadata travel inside it
        meta = read_graph_metadata(path)
        if "input_format" not in meta:
            raise ConfigError(f"{path}: carries no resdet metadata (not a resdet export)")
        return path, dict(meta, format="onnx", model=path.name)
    raise ConfigError(f"{path}: a {path.suffix} model without its {METADATA}; give its folder")


def read_graph_metadata(path) -> dict:
    """The metadata_props of an ONNX graph written by resdet's export, decoded."""
    onnx = require("onnx", "reading an ONNX model")
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in model.metadata_props}

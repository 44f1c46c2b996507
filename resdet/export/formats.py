"""The export formats, their files and metadata, and the optional runtime packages."""

import importlib
import json
from pathlib import Path

from ..errors import ConfigError

__all__ = ["FORMATS", "MODEL_FILES", "METADATA", "require", "read_export"]

FORMATS = ("onnx", "openvino", "torchscript")
MODEL_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.ts"}
METADATA = "export.json"
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

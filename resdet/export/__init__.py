"""Deployment: export a resdet Faster R-CNN's dense part (backbone, FPN, RPN head) to ONNX,
OpenVINO IR or TorchScript, and run detectors with that part on an inference runtime.

The runtimes are an optional extra (``pip install 'resdet[deploy]'``): they are imported
only when an export or a runtime model needs them, so ``import resdet.export`` works
without them.
"""

from .dense import DenseRCNN, dense_outputs  # noqa: F401
from .exporter import (  # noqa: F401
    FORMATS,
    build_detector,
    export_dense,
    export_model,
    load_config,
    read_export,
)
from .graph import GraphRCNN, export_graph_onnx, read_graph_metadata  # noqa: F401
from .runtime import PRECISIONS, RUNTIMES, RuntimeRCNN, load_dense, runtime_model  # noqa: F401

__all__ = [
    "FORMATS",
    "RUNTIMES",
    "PRECISIONS",
    "export_model",
    "export_dense",
    "runtime_model",
    "load_dense",
    "load_config",
    "build_detector",
    "read_export",
    "RuntimeRCNN",
    "DenseRCNN",
    "dense_outputs",
    "export_graph_onnx",
    "read_graph_metadata",
    "GraphRCNN",
]

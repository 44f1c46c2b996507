"""Deployment: export a resdet Faster R-CNN's dense part (backbone, FPN, RPN head) to ONNX,
OpenVINO IR or TorchScript, and run detectors with that part on an inference runtime.

The runtimes are an optional extra (``pip install -e '.[deploy]'`` in a checkout): they are imported
only when an export or a runtime model needs them, so ``import resdet.export`` works
without them.
"""

from .backends import PRECISIONS, RUNTIMES, load_dense  # noqa: F401
from .dense import DenseRCNN, dense_outputs  # noqa: F401
from .exporter import export_dense, export_model  # noqa: F401
from .formats import FORMATS, read_export  # noqa: F401
from .graph import GraphRCNN, export_graph_onnx, read_graph_metadata  # noqa: F401
from .runtime import RuntimeRCNN, runtime_model  # noqa: F401

__all__ = [
    "FORMATS",
    "RUNTIMES",
    "PRECISIONS",
    "export_model",
    "export_dense",
    "runtime_model",
    "load_dense",
    "read_export",
    "RuntimeRCNN",
    "DenseRCNN",
    "dense_outputs",
    "export_graph_onnx",
    "read_graph_metadata",
    "GraphRCNN",
]

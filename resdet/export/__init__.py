"""Deployment: a trained Faster R-CNN exported whole (resdet.export.graph: image in,
detections out) to ONNX, OpenVINO IR or a torch.export ``.pt2`` (the one table of
formats: resdet.export.formats), and run by ONNX Runtime, OpenVINO or PyTorch with the
Predictor's call (resdet.export.runtimes).

The runtimes are an optional extra (``pip install -e '.[deploy]'`` in a checkout): they are
imported only when an export or a runtime needs them, so ``import resdet.export`` works
without them.
"""

from .exporter import export_detector, export_metadata, export_model, runtime_model  # noqa: F401
from .formats import FORMATS, PRECISIONS, RUNTIMES, find_export, read_export  # noqa: F401
from .graph import GraphRCNN, export_graph_onnx, read_graph_metadata  # noqa: F401
from .runtimes import ExportedDetector, load_export, load_graph  # noqa: F401

__all__ = [
    "FORMATS",
    "RUNTIMES",
    "PRECISIONS",
    "export_model",
    "export_detector",
    "export_metadata",
    "export_graph_onnx",
    "read_export",
    "read_graph_metadata",
    "find_export",
    "load_graph",
    "load_export",
    "runtime_model",
    "GraphRCNN",
    "ExportedDetector",
]

"""int8 exports: the whole graph's convolutions and linear layers quantized after
training, calibrated on real images.

ONNX Runtime's static quantization writes a QDQ graph (int8 weights per output channel,
uint8 activations per tensor, their ranges the min/max seen on the calibration images).
ONNX Runtime runs it with int8 kernels; OpenVINO reads the same graph and runs it in int8
too. Both need the CPU's 8-bit dot products (VNNI) to pay. Only Conv, Gemm and MatMul are
quantized: anchors, box decoding, NMS and RoiAlign keep fp32, and so do the convs that
write the RPN's objectness and box deltas (a sliver of the time, decoded into boxes).
"""

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from ..data import model_input, read_image
from ..errors import ConfigError, DatasetError
from .formats import require
from .graph import GRAPH_INPUT

__all__ = ["DEFAULT_CALIBRATION_IMAGES", "calibration_inputs", "quantize_graph"]

DEFAULT_CALIBRATION_IMAGES = 32


def _image_files(source, limit):
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: calibration images must be a folder of images")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            raise DatasetError(
                f"{folder}: no images ({', '.join(IMG_EXTENSIONS)}) to calibrate int8 on"
            )
    else:
        files = [Path(p) for p in source]
        if not files:
            raise DatasetError("calibration: an empty list of images")
    return files[: int(limit)]


def calibration_inputs(model, augmentation, source, limit=DEFAULT_CALIBRATION_IMAGES):
    """Up to ``limit`` images of ``source`` (a folder or a list of paths), each as the graph
    takes it: read in the model's input format, resized by the test-time ``augmentation``
    (resdet.data.model_input, as the Predictor), float32 1x3xHxW."""
    if int(limit) < 1:
        raise ConfigError(f"calibration images {limit}: must be at least 1")
    inputs = []
    for path in _image_files(source, limit):
        image = read_image(path, format=model.input_format)
        inputs.append(model_input(image, augmentation)["image"][None].numpy())
    return inputs


def _rpn_output_convs(graph):
    """The Conv nodes writing the RPN head's objectness logits and anchor deltas (the
    exporter records each node's module path in its metadata)."""
    names = []
    for node in graph.node:
        where = " ".join(p.value for p in node.metadata_props)
        if node.op_type == "Conv" and ("objectness_logits" in where or "anchor_deltas" in where):
            names.append(node.name)
    return names


def quantize_graph(src, dst, inputs, input_name=GRAPH_INPUT) -> dict:
    """The fp32 ONNX graph ``src`` quantized to a QDQ int8 graph at ``dst``, activation
    ranges calibrated on ``inputs`` (arrays for ``input_name``)."""
    onnx = require("onnx", "int8 export")
    require("onnxruntime", "int8 export")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{input_name: x} for x in inputs])

        def get_next(self):
            return next(self.feeds, None)

    fp32_nodes = _rpn_output_convs(onnx.load(str(src), load_external_data=False).graph)
    quantize_static(
        str(src),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv", "Gemm", "MatMul"],
        nodes_to_exclude=fp32_nodes,
        calibrate_method=CalibrationMethod.MinMax,
    )
    return {
        "method": "onnxruntime static quantization, QDQ, MinMax calibration",
        "quantized": "Conv, Gemm, MatMul (anchors, NMS, RoiAlign stay fp32)",
        "weights": "int8, per output channel",
        "activations": "uint8, per tensor",
        "calibration_images": len(inputs),
        "fp32_nodes": fp32_nodes,
    }

"""int8 exports: the dense graph quantized after training, calibrated on real images.

ONNX Runtime's static quantization writes a QDQ graph (int8 weights per output channel,
uint8 activations per tensor, their ranges the min/max seen on the calibration images).
ONNX Runtime runs it with int8 kernels; OpenVINO reads the same graph and runs it in
int8 too. Both need the CPU's 8-bit dot products (VNNI) to pay. The convs that write
the RPN's objectness and box deltas keep fp32: they are a sliver of the time, and their
outputs are decoded into boxes directly.
"""

import tempfile
from pathlib import Path

import torch
from torchvision.datasets.folder import IMG_EXTENSIONS

from ..errors import ConfigError, DatasetError
from .formats import require

__all__ = ["DEFAULT_CALIBRATION_IMAGES", "calibration_batches", "quantize_onnx"]

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


def calibration_batches(model, augmentation, source, limit=DEFAULT_CALIBRATION_IMAGES):
    """Up to ``limit`` images of ``source`` (a folder or a list of paths), each as the dense
    graph sees it at inference: read in the model's input format, resized by the test-time
    ``augmentation`` (resdet.data.model_input, as the Predictor), normalised and padded by
    the model's own ``preprocess_image``."""
    from ..data import model_input, read_image

    if int(limit) < 1:
        raise ConfigError(f"calibration images {limit}: must be at least 1")
    batches = []
    for path in _image_files(source, limit):
        try:
            image = read_image(path, format=model.input_format)
        except (OSError, ValueError) as e:
            raise DatasetError(f"{path}: cannot read this calibration image ({e})") from None
        with torch.no_grad():
            inputs = [model_input(image, augmentation)]
            batches.append(model.preprocess_image(inputs).tensor.cpu().numpy())
    return batches


def quantize_onnx(src, dst, batches, input_name, keep_fp32_outputs=()):
    """The fp32 ONNX graph ``src`` quantized to a QDQ int8 graph at ``dst``, activation
    ranges calibrated on ``batches`` (arrays for ``input_name``). The nodes that write
    ``keep_fp32_outputs`` stay fp32."""
    onnx = require("onnx", "int8 export")
    require("onnxruntime", "int8 export")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{input_name: b} for b in batches])

        def get_next(self):
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(dir=Path(dst).parent) as work:
        # shape inference and graph clean-up first, as ONNX Runtime's quantizer expects (ONNX
        # shape inference: the symbolic one cannot follow the FPN's dynamic resize)
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        keep = set(keep_fp32_outputs)
        graph = onnx.load(str(pre), load_external_data=False).graph
        fp32_nodes = [n.name for n in graph.node if keep & set(n.output)]
        quantize_static(
            str(pre),
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=fp32_nodes,
        )
    return {
        "method": "onnxruntime static quantization, QDQ, MinMax calibration",
        "weights": "int8, per output channel",
        "activations": "uint8, per tensor",
        "calibration_images": len(batches),
        "fp32_nodes": fp32_nodes,
    }

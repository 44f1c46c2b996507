"""Run an exported detector: the graph on ONNX Runtime, OpenVINO or PyTorch (a ``.pt2``),
and the detector around it with GeneralizedRCNN's inference call, so the Predictor (and
anything written for Detectron2's models) takes an export as it takes a model.

Runtimes run on the CPU with as many threads as PyTorch uses (``torch.get_num_threads()``
when the runner is made). An fp32 export runs in fp32 on every runtime: OpenVINO is told
``INFERENCE_PRECISION_HINT=f32`` (on a CPU with bf16 dot products it would otherwise run
an fp32 model in bf16); bf16 is asked for by name (``precision="bf16"``, OpenVINO or
PyTorch), int8 is an export of its own.
"""

import contextlib
import ctypes
import sys

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .formats import FORMATS, MODEL_FILES, PRECISIONS, RUNTIMES, find_export, require
from .graph import GRAPH_INPUT, GRAPH_OUTPUTS
from .graph_ops import nms_per_group  # noqa: F401  (registers the graph's NMS op)

__all__ = [
    "load_graph",
    "ExportedDetector",
    "load_export",
    "check_choice",
    "OnnxRuntimeRunner",
    "OpenVinoRunner",
]


def check_choice(runtime, precision, fmt=None):
    """One line for a runtime or precision that is not one, or does not fit the format."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and runtime == "onnxruntime":
        raise ConfigError("precision bf16: ONNX Runtime has no bf16 CPU path; use openvino")
    if fmt is not None and fmt not in RUNTIMES[runtime]:
        raise ConfigError(
            f"runtime {runtime}: runs {' or '.join(RUNTIMES[runtime])} exports, not {fmt}"
        )


class OnnxRuntimeRunner:
    """A graph on ONNX Runtime's CPU provider: ``runner(array)`` feeds ``input_name`` and
    returns the ``outputs`` arrays (the detector's, unless told otherwise: the benchmarks
    run other graphs with the same session settings). ``profile``: a file prefix for ONNX
    Runtime's profile (``runner.session.end_profiling()`` writes it)."""

    def __init__(self, path, threads, input_name=GRAPH_INPUT, outputs=GRAPH_OUTPUTS, profile=None):
        ort = require("onnxruntime", "runtime onnxruntime")
        options = ort.SessionOptions()
        if profile is not None:  # ONNX Runtime's own profiler: time per node, to this prefix
            options.enable_profiling = True
            options.profile_file_prefix = str(profile)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # idle worker threads would otherwise spin and take the cores from the caller
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name, self.outputs = input_name, list(outputs)

    def __call__(self, image):
        return self.session.run(self.outputs, {self.input_name: image})


class _StackT(ctypes.Structure):
    _fields_ = [
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    ]


@contextlib.contextmanager
def _keep_signal_stack():
    """Give the calling thread back its alternate signal stack after the block.

    OpenVINO's CPU plugin installs a signal stack of its own on the thread that compiles a
    model and, when the model is freed, puts back the one it found. Two models freed in the
    order they were made (as a garbage collection may) leave the thread on the first one's
    freed stack; the next signal with a Python handler (Ctrl-C; SIGCHLD under a DataLoader
    with workers) then kills the process with SIGSEGV instead of being handled. Restoring
    the caller's stack at once makes every model put back a stack that is still there."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    old = _StackT()
    if libc.sigaltstack(None, ctypes.byref(old)) != 0:
        yield
        return
    try:
        yield
    finally:
        old.ss_flags &= ~1  # SS_ONSTACK is reported, never set
        libc.sigaltstack(ctypes.byref(old), None)


class OpenVinoRunner:
    """A graph on OpenVINO's CPU plugin, at ``precision`` (fp32 or bf16), called as
    :class:`OnnxRuntimeRunner`."""

    def __init__(self, path, threads, precision, input_name=GRAPH_INPUT, outputs=GRAPH_OUTPUTS):
        ov = require("openvino", "runtime openvino")
        core = ov.Core()
        config = {
            # an fp32 model stays fp32: without the hint a CPU with bf16 computes in bf16
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        # the core and the compiled model live as long as the request and the output ports
        # made from them (OpenVINO's Python objects expect their owners alive)
        self.core = core
        with _keep_signal_stack():
            self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.input_name = input_name
        self.outputs = [self.compiled.output(name) for name in outputs]

    def __call__(self, image):
        self.request.infer({self.input_name: image})
        # the request's buffers are reused by the next call: copy out
        return [self.request.get_tensor(o).data.copy() for o in self.outputs]


class _PyTorch:
    def __init__(self, path, precision):
        self.module = torch.export.load(str(path)).module()
        self.bf16 = precision == "bf16"

    def __call__(self, image):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            outs = self.module(torch.from_numpy(image))
        return [o.float().numpy() if o.is_floating_point() else o.numpy() for o in outs]


def load_graph(export, runtime=None, precision=None, threads=None):
    """``(runner, metadata)`` for an export (its folder, or its model file):
    ``runner(image)`` takes the graph's input (a float32 1x3xHxW array) and returns
    ``[boxes, scores, classes]`` as arrays. ``runtime``: default the format's own;
    ``precision``: default the export's (fp32 or int8); bf16 runs an fp32 export in bf16."""
    found = find_export(export)
    if found is None:
        raise ConfigError(f"{export}: not a resdet export (a folder with export.json, or a model)")
    where, meta = found
    fmt = meta["format"]
    runtime = runtime or FORMATS[fmt].runtimes[0]
    precision = precision or meta.get("precision", "fp32")
    check_choice(runtime, precision, fmt)
    exported = meta.get("precision", "fp32")
    if (precision == "int8") != (exported == "int8"):
        need = "an int8 export (resdet export --int8 IMAGES)" if precision == "int8" else "fp32"
        raise ConfigError(f"{export}: an {exported} export; precision {precision} needs {need}")
    path = where / MODEL_FILES[fmt] if where.is_dir() else where
    threads = threads or torch.get_num_threads()
    if runtime == "onnxruntime":
        runner = OnnxRuntimeRunner(path, threads)
    elif runtime == "openvino":
        # an int8 graph's quantized ops run in int8 whatever the hint; the rest in fp32
        runner = OpenVinoRunner(path, threads, "fp32" if precision == "int8" else precision)
    else:
        runner = _PyTorch(path, precision)
    return runner, meta


class ExportedDetector(nn.Module):
    """An export with GeneralizedRCNN's inference call: a list of ``{"image": CHW tensor
    (resized, in the model's channel order), "height", "width"}`` in, a list of
    ``{"instances": Instances}`` in the original images' pixels out (Detectron2's
    ``detector_postprocess`` on the graph's detections, as the model does)."""

    def __init__(self, runner, metadata):
        super().__init__()
        self.runner, self.metadata = runner, metadata
        self.input_format = metadata["input_format"]
        # the graph pads: the Predictor groups images by this to batch them
        self.size_divisibility = int(metadata.get("size_divisibility") or 0)
        self.padding_constraints = {}

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, batched_inputs):
        from detectron2.modeling.postprocessing import detector_postprocess
        from detectron2.structures import Boxes, Instances

        if self.training:
            raise ConfigError("an exported detector only runs inference; it cannot be trained")
        out = []
        for x in batched_inputs:
            image = x["image"]
            h, w = image.shape[-2:]
            array = image.detach().to("cpu", torch.float32).numpy()[None]
            boxes, scores, classes = self.runner(np.ascontiguousarray(array))
            result = Instances((h, w))
            result.pred_boxes = Boxes(torch.from_numpy(np.asarray(boxes, np.float32)))
            result.scores = torch.from_numpy(np.asarray(scores, np.float32))
            result.pred_classes = torch.from_numpy(np.asarray(classes, np.int64))
            height, width = x.get("height", h), x.get("width", w)
            out.append({"instances": detector_postprocess(result, height, width)})
        return out


def load_export(export, runtime=None, precision=None, threads=None) -> ExportedDetector:
    """:class:`ExportedDetector` of an export folder or model file (in eval mode)."""
    return ExportedDetector(*load_graph(export, runtime, precision, threads)).eval()

"""The inference runtimes that run an exported dense graph: ONNX Runtime, OpenVINO,
TorchScript, and eager PyTorch as the reference, each a callable
``images (N,3,H,W) -> {output name: tensor}``."""

import copy
import warnings
from pathlib import Path

import torch

from ..errors import ConfigError
from .formats import MODEL_FILES, read_export, require

__all__ = ["RUNTIMES", "PRECISIONS", "load_dense", "check_choice"]

# runtime -> the export formats it reads, the first one being what it exports on the fly
RUNTIMES = {
    "onnxruntime": ("onnx",),
    "openvino": ("openvino", "onnx"),
    "torchscript": ("torchscript",),
    "torch": (),
}
# fp32 and bf16 are how a runtime computes an fp32 export; int8 is an export of its own
PRECISIONS = ("fp32", "bf16", "int8")


class OrtDense:
    """The dense graph in an ONNX Runtime CPU session (all graph optimisations on)."""

    def __init__(self, path, names, threads):
        ort = require("onnxruntime", "runtime onnxruntime")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # idle ORT threads would otherwise spin and take the cores from the PyTorch half
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.names = names

    def __call__(self, x):
        outs = self.session.run(self.names, {self.input: x.float().contiguous().numpy()})
        return {n: torch.from_numpy(o) for n, o in zip(self.names, outs)}


class OpenVinoDense:
    """The dense graph compiled by OpenVINO for the CPU, fp32 or bf16 (its inference
    precision hint: weights stay fp32 on disk, the CPU plugin computes in bf16)."""

    def __init__(self, path, names, threads, precision):
        ov = require("openvino", "runtime openvino")
        core = ov.Core()
        config = {
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
        }
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        index = {}
        for i, out in enumerate(self.compiled.outputs):
            for n in out.get_names():
                index[n] = i
        missing = [n for n in names if n not in index]
        if missing:
            raise ConfigError(f"{path}: has no output {missing[0]}; export again")
        self.outputs = [(n, index[n]) for n in names]

    def __call__(self, x):
        self.request.infer({0: x.float().contiguous().numpy()})
        # the request's buffers are reused by the next call: copy out
        return {
            n: torch.from_numpy(self.request.get_output_tensor(i).data.copy())
            for n, i in self.outputs
        }


class TorchScriptDense:
    """The traced, frozen dense graph, run by TorchScript on channels_last input."""

    def __init__(self, path, names):
        with warnings.catch_warnings():  # torch deprecates TorchScript as a whole
            warnings.simplefilter("ignore", FutureWarning)
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        self.names = names

    def __call__(self, x):
        # without the profiling executor's re-optimisation at every new input shape (seconds
        # each, for no gain on a frozen conv graph)
        with torch.no_grad(), torch.jit.optimized_execution(False):
            outs = self.module(x.contiguous(memory_format=torch.channels_last))
        return dict(zip(self.names, outs))


class TorchDense:
    """The dense part in eager PyTorch (norms folded, channels_last): the reference path,
    and bf16 through ``torch.autocast``."""

    def __init__(self, model, names, precision):
        from ..modeling import fold_frozen_batchnorm
        from .dense import DenseRCNN

        dense = fold_frozen_batchnorm(copy.deepcopy(DenseRCNN(model)).eval())
        self.module = dense.to(memory_format=torch.channels_last)
        self.names = names
        self.bf16 = precision == "bf16"

    def __call__(self, x):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            outs = self.module(x.contiguous(memory_format=torch.channels_last))
        return {n: o.float() for n, o in zip(self.names, outs)}


def load_dense(export_dir, runtime=None, precision="fp32", threads=None):
    """A callable ``images (N,3,H,W) -> {output name: tensor}`` running an export folder
    on ``runtime`` (default: the one its format is made for)."""
    meta = read_export(export_dir)
    fmt = meta["format"]
    runtime = (
        runtime
        or {"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torchscript"}[fmt]
    )
    check_choice(runtime, precision)
    if fmt not in RUNTIMES[runtime]:
        raise ConfigError(
            f"{export_dir}: a {fmt} export cannot run on {runtime}; export to "
            f"{' or '.join(RUNTIMES[runtime])}"
        )
    exported = meta.get("precision", "fp32")
    if (precision == "int8") != (exported == "int8"):
        need = "an int8 export (tools/export.py --int8 IMAGES)" if precision == "int8" else "fp32"
        raise ConfigError(f"{export_dir}: an {exported} export; precision {precision} needs {need}")
    threads = threads or torch.get_num_threads()
    path = Path(export_dir) / MODEL_FILES[fmt]
    names = [o["name"] for o in meta["outputs"]]
    if runtime == "onnxruntime":
        return OrtDense(path, names, threads)
    if runtime == "openvino":
        # an int8 graph: its quantized ops run in int8 whatever the hint; the rest in fp32
        return OpenVinoDense(path, names, threads, "fp32" if precision == "int8" else precision)
    return TorchScriptDense(path, names)


def check_choice(runtime, precision):
    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and runtime not in ("openvino", "torch"):
        raise ConfigError(
            f"precision bf16: runtime {runtime} has no bf16 CPU path; use openvino or torch"
        )
    if precision == "int8" and runtime not in ("onnxruntime", "openvino"):
        raise ConfigError(
            f"precision int8: runtime {runtime} has no int8 path; use onnxruntime or openvino"
        )

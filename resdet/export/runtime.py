"""Run an exported dense part on an inference runtime, and the hybrid detector around it.

``runtime_model(model, cfg, runtime)`` returns a module with GeneralizedRCNN's inference
call contract (a list of ``{"image": CHW tensor in cfg.INPUT.FORMAT, "height", "width"}``
in, a list of ``{"instances": Instances}`` out) whose backbone, FPN and RPN head run in
ONNX Runtime, OpenVINO or TorchScript, while anchor decoding, the RPN's top-k and NMS, the
ROI heads and the rescaling run in PyTorch with the model's own Detectron2 modules, so
the detections follow the same code as the PyTorch model's.

Runtimes run on the CPU with as many threads as PyTorch uses (``torch.get_num_threads()``
when the module is built).
"""

import copy
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from .dense import check_exportable, fingerprint
from .exporter import MODEL_FILES, export_dense, read_export, require

__all__ = ["RUNTIMES", "PRECISIONS", "load_dense", "RuntimeRCNN", "runtime_model"]

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
    _check_choice(runtime, precision)
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


def _check_choice(runtime, precision):
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


class Bf16(nn.Module):
    """``module`` with bf16 weights: bf16 in, fp32 out. For the per-ROI head of the bf16
    path (the box head's FCs or the C4 res5), which runs about twice as fast in bf16 on
    CPUs with bf16 dot products."""

    def __init__(self, module):
        super().__init__()
        self.module = module.to(torch.bfloat16)
        # Detectron2's StandardROIHeads reads the box head's output_shape
        if hasattr(module, "output_shape"):
            self.output_shape = module.output_shape

    def forward(self, x):
        return self.module(x.to(torch.bfloat16)).float()


def int8_linears(module):
    """``module`` with its ``nn.Linear`` layers quantized dynamically: int8 weights per
    output channel, activations quantized per call. For the box head's FCs of the int8
    path, which then run on int8 dot products (VNNI), about 2.5x faster on 1000 ROIs.
    PyTorch deprecates torch.ao.quantization in favour of torchao, a dependency resdet
    does not take; it is still the one CPU int8 linear the pinned torch ships, and
    tests/test_export.py fails the day it goes."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    module = copy.deepcopy(module)
    # quantize_dynamic matches exact types: resdet's PackedLinear (prepare_for_inference)
    # would stay fp32 without a word; give it back as the plain nn.Linear it wraps
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and type(child) is not nn.Linear:
                plain = nn.Linear(child.in_features, child.out_features, device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, plain)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
        return quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig})


class RuntimeRCNN(nn.Module):
    """GeneralizedRCNN inference with the dense part in ``dense`` (a ``load_dense`` callable)
    and the rest in PyTorch: Detectron2's own RPN decoding and ROI heads (copied from
    ``model``, their frozen norms folded), so only the dense features can differ.
    ``head_precision``: "bf16" runs the per-ROI head (box head, or res5 for C4) in bf16;
    "int8" quantizes its FCs (:func:`int8_linears`; C4's res5 has none and stays fp32)."""

    def __init__(self, model, dense, outputs, head_precision="fp32"):
        super().__init__()
        from ..modeling import fold_frozen_batchnorm

        check_exportable(model)
        self.dense = dense
        self.outputs = outputs
        self.input_format = model.input_format
        self.size_divisibility = model.backbone.size_divisibility
        self.padding_constraints = dict(model.backbone.padding_constraints)
        self.register_buffer("pixel_mean", model.pixel_mean.detach().cpu().clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().cpu().clone(), False)
        pg = model.proposal_generator
        # the RPN head runs in the runtime: the copy gets None in its place
        self.proposal_generator = copy.deepcopy(pg, {id(pg.rpn_head): None}).cpu().eval()
        roi_heads = fold_frozen_batchnorm(copy.deepcopy(model.roi_heads).cpu().eval())
        self.roi_heads = roi_heads.to(memory_format=torch.channels_last)
        head = "box_head" if hasattr(roi_heads, "box_head") else "res5"
        # one head module (not Cascade R-CNN's list of stages): those keep fp32
        module = getattr(roi_heads, head, None)
        if isinstance(module, nn.Module) and not isinstance(module, nn.ModuleList):
            if head_precision == "bf16":
                setattr(roi_heads, head, Bf16(module))
            elif head_precision == "int8":
                setattr(roi_heads, head, int8_linears(module))

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs):
        from detectron2.structures import ImageList

        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        return ImageList.from_tensors(
            images, self.size_divisibility, padding_constraints=self.padding_constraints
        )

    def _proposals(self, images, out):
        rpn = self.proposal_generator
        logits = [out[f"rpn_logits_{f}"] for f in rpn.in_features]
        deltas = [out[f"rpn_deltas_{f}"] for f in rpn.in_features]
        anchors = rpn.anchor_generator(logits)  # reads only the grid sizes
        # the layout RPN.forward gives the head's outputs before predict_proposals
        logits = [s.permute(0, 2, 3, 1).flatten(1) for s in logits]
        box_dim = rpn.anchor_generator.box_dim
        deltas = [
            d.view(d.shape[0], -1, box_dim, d.shape[-2], d.shape[-1])
            .permute(0, 3, 4, 1, 2)
            .flatten(1, -2)
            for d in deltas
        ]
        return rpn.predict_proposals(anchors, logits, deltas, images.image_sizes)

    def forward(self, batched_inputs):
        from detectron2.modeling import GeneralizedRCNN

        if self.training:
            raise ConfigError("a runtime model only runs inference; it cannot be trained")
        with torch.no_grad():
            images = self.preprocess_image(batched_inputs)
            out = self.dense(images.tensor)
            features = {f: out[f] for f in self.roi_heads.in_features}
            proposals = self._proposals(images, out)
            results, _ = self.roi_heads(images, features, proposals, None)
        return GeneralizedRCNN._postprocess(results, batched_inputs, images.image_sizes)


def runtime_model(
    model, cfg, runtime, precision="fp32", export_dir=None, int8_calibration=None
) -> nn.Module:
    """``model`` (a GeneralizedRCNN, weights loaded) with its dense part on ``runtime``
    ("onnxruntime", "openvino", "torchscript", or "torch" for eager PyTorch).

    ``export_dir``: an export of this model to use; exported there first if it holds
    none; an export of other weights is refused. None: exported to a temporary folder
    that lives as long as the returned module. ``precision`` "bf16" (openvino or torch):
    the dense part and the per-ROI head compute in bf16; proposals, pooling and NMS stay
    fp32. "int8" (onnxruntime or openvino): the dense part is an int8 export, made here
    from ``int8_calibration`` (a folder of images) if ``export_dir`` holds none, and the
    box head's FCs are quantized dynamically (:func:`int8_linears`)."""
    _check_choice(runtime, precision)
    check_exportable(model)
    if next(model.parameters()).device.type != "cpu":
        raise ConfigError("MODEL.DEVICE: the runtimes run on the CPU; set MODEL.DEVICE cpu")
    from .dense import dense_outputs

    outputs = dense_outputs(model)
    names = [o["name"] for o in outputs]
    keep = None
    if runtime == "torch":
        dense = TorchDense(model, names, precision)
    else:
        fmt = RUNTIMES[runtime][0]
        if export_dir is None:
            keep = tempfile.TemporaryDirectory(prefix="resdet-export-")
            export_dir = Path(keep.name) / fmt
        export_dir = Path(export_dir)
        if not (export_dir / "export.json").is_file():
            if precision == "int8" and int8_calibration is None:
                raise ConfigError(
                    "precision int8: give int8_calibration (a folder of images like the "
                    "ones to detect on) or an export_dir holding an int8 export"
                )
            calibration = int8_calibration if precision == "int8" else None
            export_dense(model, cfg, fmt, export_dir, int8_calibration=calibration)
        meta = read_export(export_dir)
        if meta.get("fingerprint") != fingerprint(model):
            raise ConfigError(
                f"{export_dir}: exported from other weights than this model's; "
                f"delete it or choose another export folder"
            )
        dense = load_dense(export_dir, runtime, precision)
    # the PyTorch half on resdet's CPU ROI heads, as prepare_for_inference gives the torch path
    from ..layers import use_fast_box_head, use_fast_roi_align

    use_fast_roi_align(model)
    if precision == "fp32":  # the bf16 and int8 heads convert the box head's own Linears
        use_fast_box_head(model)
    wrapped = RuntimeRCNN(model, dense, outputs, head_precision=precision).eval()
    wrapped._export_tmp = keep  # the temporary export lives as long as the module
    return wrapped

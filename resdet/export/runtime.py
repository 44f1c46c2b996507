"""Run an exported dense part on an inference runtime, and the hybrid detector around it.

``runtime_model(model, setup, runtime)`` returns a module with GeneralizedRCNN's inference
call contract (a list of ``{"image": CHW tensor in the model's input format, "height", "width"}``
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
from .backends import RUNTIMES, TorchDense, check_choice, load_dense
from .dense import check_exportable, fingerprint
from .exporter import export_dense
from .formats import read_export

__all__ = ["RuntimeRCNN", "runtime_model", "int8_linears"]


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
    model, setup, runtime, precision="fp32", export_dir=None, int8_calibration=None
) -> nn.Module:
    """``model`` (a GeneralizedRCNN, weights loaded) with its dense part on ``runtime``
    ("onnxruntime", "openvino", "torchscript", or "torch" for eager PyTorch).

    ``setup``: its resdet.engine Setup (the test resize and class names of export.json).
    ``export_dir``: an export of this model to use; exported there first if it holds
    none; an export of other weights is refused. None: exported to a temporary folder
    that lives as long as the returned module. ``precision`` "bf16" (openvino or torch):
    the dense part and the per-ROI head compute in bf16; proposals, pooling and NMS stay
    fp32. "int8" (onnxruntime or openvino): the dense part is an int8 export, made here
    from ``int8_calibration`` (a folder of images) if ``export_dir`` holds none, and the
    box head's FCs are quantized dynamically (:func:`int8_linears`)."""
    check_choice(runtime, precision)
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
            export_dense(model, setup, fmt, export_dir, int8_calibration=calibration)
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

"""The whole Faster R-CNN in one ONNX graph: image in, detections out.

``export_graph_onnx(model, path)`` writes a graph that needs only an ONNX runtime to
detect: no resdet, Detectron2 or PyTorch at deployment. Its input is one image
(``image``: float32, 1 x 3 x H x W, 0-255, channels in the model's ``input_format``,
already resized as the test resize asks: the resize stays outside the graph, see
docs/deploy_standalone.py); any H and W work. Its outputs are Detectron2's detections
for that image before rescaling to the original size: ``boxes`` (N x 4, xyxy in the
input's pixels, clipped to it), ``scores`` (N) and ``classes`` (N, int64), highest
score first.

In the graph, in Detectron2's order (:mod:`.graph_ops` follows its code step by step):
normalisation and zero padding to the backbone's size divisibility, backbone (+ FPN),
RPN head, anchors for the feature sizes at hand, per-level top-k, box decoding,
clipping, removal of empty boxes, NMS, post-NMS top-k, ROIAlign (per FPN level), box
head (C4: res5 and the mean), box predictor, class-specific decoding, score threshold,
per-class NMS, the detections-per-image top-k.

The ONNX file carries what a caller needs to feed it in its metadata_props (JSON
values): see :data:`METADATA_KEYS`.
"""

import contextlib
import copy
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..modeling import fold_frozen_batchnorm
from .formats import (
    read_graph_metadata,  # noqa: F401  (re-exported)
    require,
)
from .graph_ops import (
    ONNX_TRANSLATIONS,
    assign_levels,
    detections,
    grid_anchors,
    roi_align,
    roi_align_levels,
    top_proposals,
)

__all__ = [
    "GRAPH_OPSET",
    "GRAPH_INPUT",
    "GRAPH_OUTPUTS",
    "METADATA_KEYS",
    "GraphRCNN",
    "check_graph_exportable",
    "export_graph_onnx",
    "graph_metadata",
    "read_graph_metadata",
    "trace_shapes",
]

# RoiAlign's coordinate_transformation_mode (half_pixel: Detectron2's aligned=True) is
# opset 16; the exporter's op library is written for opset 18 and converts to no lower
GRAPH_OPSET = 18
GRAPH_INPUT = "image"
GRAPH_OUTPUTS = ("boxes", "scores", "classes")
# metadata_props of the ONNX file, each a JSON value
METADATA_KEYS = (
    "input_format",  # "RGB" or "BGR": the channel order of the input
    "pixel_mean",  # applied in the graph; for information
    "pixel_std",
    "size_divisibility",  # padding applied in the graph; for information
    "test_resize",  # {"min_size", "max_size"}: the caller's resize, or null
    "class_names",  # list indexed by the classes output, or null
    "input",  # the input's name
    "outputs",  # the outputs' names
)


def check_graph_exportable(model) -> None:
    """A one-line ConfigError unless ``model`` is a Faster R-CNN whose whole inference the
    graph holds: a GeneralizedRCNN with the standard RPN and DefaultAnchorGenerator, and
    StandardROIHeads (one box head) or Res5ROIHeads pooling with ROIAlign, without masks
    or keypoints."""
    from detectron2.layers import ROIAlign
    from detectron2.modeling import GeneralizedRCNN
    from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
    from detectron2.modeling.proposal_generator import RPN
    from detectron2.modeling.roi_heads import Res5ROIHeads, StandardROIHeads
    from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers

    if not isinstance(model, GeneralizedRCNN):
        raise ConfigError(
            f"MODEL.META_ARCHITECTURE: only GeneralizedRCNN detectors export, "
            f"got {type(model).__name__}"
        )
    if not isinstance(model.proposal_generator, RPN):
        name = type(model.proposal_generator).__name__
        raise ConfigError(
            f"MODEL.PROPOSAL_GENERATOR.NAME: only the standard RPN exports, got {name}"
        )
    rpn, heads = model.proposal_generator, model.roi_heads
    if not isinstance(rpn.anchor_generator, DefaultAnchorGenerator):
        name = type(rpn.anchor_generator).__name__
        raise ConfigError(
            f"MODEL.ANCHOR_GENERATOR.NAME: the graph has axis-aligned anchors only, got {name}"
        )
    if not isinstance(heads, (StandardROIHeads, Res5ROIHeads)):
        raise ConfigError(
            f"MODEL.ROI_HEADS.NAME: the graph holds StandardROIHeads or Res5ROIHeads, "
            f"got {type(heads).__name__}"
        )
    if getattr(heads, "mask_on", False) or getattr(heads, "keypoint_on", False):
        raise ConfigError("MODEL.MASK_ON / KEYPOINT_ON: the graph holds boxes only")
    if isinstance(heads, StandardROIHeads) and isinstance(heads.box_head, nn.ModuleList):
        raise ConfigError("MODEL.ROI_HEADS.NAME: a cascade's stages are not in the graph")
    if type(heads.box_predictor) is not FastRCNNOutputLayers:
        name = type(heads.box_predictor).__name__
        raise ConfigError(f"the box predictor must be FastRCNNOutputLayers, got {name}")
    pooler = _pooler(heads)
    if not all(isinstance(p, ROIAlign) for p in pooler.level_poolers):
        raise ConfigError(
            "MODEL.ROI_BOX_HEAD.POOLER_TYPE: the graph pools with ROIAlignV2 or ROIAlign"
        )
    constraints = dict(model.backbone.padding_constraints)
    if constraints.get("square_size", 0):
        raise ConfigError("the backbone's square padding (square_size) is not in the graph")


def _pooler(heads):
    return heads.box_pooler if hasattr(heads, "box_pooler") else heads.pooler


def _plain_linears(module):
    """resdet's PackedLinear (use_fast_box_head) back to the nn.Linear it wraps: its oneDNN
    call does not export."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and type(child) is not nn.Linear:
                plain = nn.Linear(child.in_features, child.out_features, device="meta")
                plain.weight, plain.bias = child.weight, child.bias
                setattr(parent, name, plain)
    return module


class GraphRCNN(nn.Module):
    """``image (1, 3, H, W) -> (boxes (N, 4), scores (N,), classes (N,))``: a
    GeneralizedRCNN's inference on one resized image, its detections in that image's
    pixels, as ``model.inference([{"image": ...}], do_postprocess=False)`` gives them.
    Holds copies of the model's modules (frozen norms folded into the convs)."""

    def __init__(self, model):
        super().__init__()
        check_graph_exportable(model)
        rpn, heads = model.proposal_generator, model.roi_heads
        self.register_buffer("pixel_mean", model.pixel_mean.detach().cpu().clone(), False)
        self.register_buffer("pixel_std", model.pixel_std.detach().cpu().clone(), False)
        constraints = dict(model.backbone.padding_constraints)
        self.size_divisibility = int(
            constraints.get("size_divisibility", model.backbone.size_divisibility)
        )
        self.rpn_in = list(rpn.in_features)
        generator = rpn.anchor_generator
        for i, cell in enumerate(generator.cell_anchors):
            self.register_buffer(f"cell_anchors_{i}", cell.detach().cpu().clone(), False)
        self.anchor_strides = [float(s) for s in generator.strides]
        self.anchor_offset = float(generator.offset)
        self.rpn_box2box = rpn.box2box_transform
        self.rpn_nms = float(rpn.nms_thresh)
        self.pre_nms_topk = int(rpn.pre_nms_topk[False])
        self.post_nms_topk = int(rpn.post_nms_topk[False])
        self.min_box_size = float(rpn.min_box_size)

        self.roi_in = list(getattr(heads, "box_in_features", heads.in_features))
        pooler = _pooler(heads)
        self.aligns = [
            (float(p.spatial_scale), tuple(p.output_size), int(p.sampling_ratio), bool(p.aligned))
            for p in pooler.level_poolers
        ]
        self.levels = (
            pooler.min_level,
            pooler.max_level,
            pooler.canonical_box_size,
            pooler.canonical_level,
        )
        predictor = heads.box_predictor
        self.box2box = predictor.box2box_transform
        self.sigmoid = bool(predictor.use_sigmoid_ce)
        self.num_classes = int(predictor.num_classes)
        self.score_thresh = float(predictor.test_score_thresh)
        self.nms_thresh = float(predictor.test_nms_thresh)
        self.topk_per_image = int(predictor.test_topk_per_image)
        self.input_format = model.input_format

        def copied(module):  # so that the caller's model stays as it is
            if module is None:
                return None
            return _plain_linears(fold_frozen_batchnorm(copy.deepcopy(module)).cpu().eval())

        self.backbone = copied(model.backbone)
        self.rpn_head = copied(rpn.rpn_head)
        self.res5 = copied(getattr(heads, "res5", None))  # C4: res5 on the pooled features
        self.box_head = copied(getattr(heads, "box_head", None))
        self.box_predictor = copied(predictor)

    def forward(self, image):
        height, width = image.shape[-2], image.shape[-1]
        x = (image - self.pixel_mean) / self.pixel_std
        d = self.size_divisibility
        if d > 1:  # ImageList.from_tensors: zeros (after normalising) at the bottom and right
            # the padded size as a multiple of d, which lets the export prove that FPN's
            # upsampled and lateral features have one size
            x = F.pad(
                x, (0, (width + d - 1) // d * d - width, 0, (height + d - 1) // d * d - height)
            )
        features = self.backbone(x)
        proposals = self._proposals([features[f] for f in self.rpn_in], height, width)
        return self._detect([features[f] for f in self.roi_in], proposals, height, width)

    def _proposals(self, features, height, width):
        logits, deltas = self.rpn_head(features)
        anchors = [
            grid_anchors(
                getattr(self, f"cell_anchors_{i}"),
                stride,
                self.anchor_offset,
                f.shape[-2],
                f.shape[-1],
            )
            for i, (f, stride) in enumerate(zip(features, self.anchor_strides))
        ]
        # RPN.forward's layout: (A, Hi, Wi) -> (Hi * Wi * A), (A * 4, Hi, Wi) -> (Hi * Wi * A, 4)
        logits = [s[0].permute(1, 2, 0).reshape(-1) for s in logits]
        deltas = [
            t[0].view(-1, 4, t.shape[-2], t.shape[-1]).permute(2, 3, 0, 1).reshape(-1, 4)
            for t in deltas
        ]
        boxes, _ = top_proposals(
            anchors,
            logits,
            deltas,
            self.rpn_box2box,
            height,
            width,
            nms_thresh=self.rpn_nms,
            pre_nms_topk=self.pre_nms_topk,
            post_nms_topk=self.post_nms_topk,
            min_box_size=self.min_box_size,
        )
        return boxes

    def _detect(self, features, proposals, height, width):
        if len(features) == 1:
            pooled, order = roi_align(features[0], proposals, self.aligns[0]), None
        else:
            levels = assign_levels(proposals, *self.levels)
            pooled, order = roi_align_levels(features, proposals, levels, self.aligns)
        if self.res5 is not None:
            x = self.res5(pooled).mean(dim=[2, 3])
        else:
            x = self.box_head(pooled)
        logits, deltas = self.box_predictor(x)
        if order is not None:
            # back to the proposals' order, so that equal scores meet NMS in Detectron2's order
            inverse = torch.empty_like(order).scatter_(
                0, order, torch.arange(order.shape[0], dtype=order.dtype)
            )
            logits, deltas = logits[inverse], deltas[inverse]
        probs = logits.sigmoid() if self.sigmoid else F.softmax(logits, dim=-1)
        boxes = self.box2box.apply_deltas(deltas, proposals)
        return detections(
            boxes,
            probs,
            height,
            width,
            score_thresh=self.score_thresh,
            nms_thresh=self.nms_thresh,
            topk_per_image=self.topk_per_image,
            num_classes=self.num_classes,
        )


def _min_side(size_divisibility):
    """The smallest height and width the export traces for: with FPN's padding to d, a side
    of 2d + 1 or more, where the coarsest level (LastLevelMaxPool's p6 at 2d) has more than
    one cell; the export cannot treat one cell like more. Smaller inputs are not what a
    detector is given (its test resize makes them hundreds of pixels)."""
    return 2 * size_divisibility + 1 if size_divisibility > 1 else 32


def trace_shapes(graph):
    """``(example input, dynamic shapes)`` to export ``graph`` with: traced for every size
    from :func:`_min_side` up (the graph pads). The example's values do not matter (traced
    symbolically); its size must not be a multiple of the padding, nor square, or the trace
    could take those for rules."""
    from torch.export import Dim

    side = _min_side(graph.size_divisibility)
    example = torch.zeros(1, 3, side + 2, side + 39)
    return example, {GRAPH_INPUT: {2: Dim("height", min=side), 3: Dim("width", min=side)}}


def graph_metadata(graph, test_resize=None, class_names=None) -> dict:
    """The basic metadata of a graph (:data:`METADATA_KEYS`), each key a JSON value."""
    if class_names is not None and len(class_names) != graph.num_classes:
        raise ConfigError(
            f"class_names: {len(class_names)} names for a detector of {graph.num_classes} classes"
        )
    if isinstance(test_resize, (list, tuple)):
        test_resize = {"min_size": test_resize[0], "max_size": test_resize[1]}
    return {
        "input_format": graph.input_format,
        "pixel_mean": [float(v) for v in graph.pixel_mean.flatten()],
        "pixel_std": [float(v) for v in graph.pixel_std.flatten()],
        "size_divisibility": graph.size_divisibility,
        "test_resize": test_resize,
        "class_names": None if class_names is None else list(class_names),
        "input": GRAPH_INPUT,
        "outputs": list(GRAPH_OUTPUTS),
    }


def export_graph_onnx(
    model, path, *, test_resize=None, class_names=None, metadata=None, opset=GRAPH_OPSET
) -> dict:
    """Write ``model`` (a GeneralizedRCNN, weights loaded, on the CPU) as one ONNX graph to
    ``path`` (a temporary file beside it, renamed into place when complete).

    ``test_resize``: ``(min_size, max_size)`` of the test-time ResizeShortestEdge the
    caller must apply (cfg.INPUT.MIN_SIZE_TEST, MAX_SIZE_TEST), written into the file's
    metadata for deployment code. ``class_names``: the names of the classes, likewise.
    ``metadata``: more keys for the file's metadata_props (resdet.export writes its whole
    export.json there). Returns what was written: path, input and output names, opset,
    metadata, notes, and the ExportedProgram it was made from (``program``)."""
    require("onnxscript", "the ONNX graph export")
    if opset < GRAPH_OPSET:
        raise ConfigError(
            f"opset {opset}: the graph exports at opset {GRAPH_OPSET} or later (the exporter's "
            f"ops are written for {GRAPH_OPSET} and its Pad has no conversion below)"
        )
    if next(model.parameters()).device.type != "cpu":
        raise ConfigError("MODEL.DEVICE: export runs on the CPU; set MODEL.DEVICE cpu")
    graph = GraphRCNN(model).eval()
    metadata = dict(graph_metadata(graph, test_resize, class_names), **(metadata or {}))
    example, shapes = trace_shapes(graph)
    side = _min_side(graph.size_divisibility)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # the exporter narrates each stage on stdout; a tool's output is its result only
        with (
            open(os.devnull, "w") as devnull,
            contextlib.redirect_stdout(devnull),
            warnings.catch_warnings(),
        ):
            # torchvision's own NMS shape function, not actionable here
            warnings.filterwarnings("ignore", "`create_unbacked_symint` is deprecated")
            program = torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=[GRAPH_INPUT],
                output_names=list(GRAPH_OUTPUTS),
                custom_translation_table=ONNX_TRANSLATIONS,
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
            _check_dynamic(program)
            for key, value in metadata.items():
                program.model.metadata_props[key] = json.dumps(value)
            program.save(tmp, external_data=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {
        "path": str(path),
        "input": GRAPH_INPUT,
        "outputs": list(GRAPH_OUTPUTS),
        "opset": opset,
        "metadata": metadata,
        "program": program.exported_program,
        "notes": [
            "input: float32 1x3xHxW, 0-255, channels in input_format, already resized "
            f"(ResizeShortestEdge to test_resize); any H, W (traced from {side} px up)",
            "outputs: the input image's pixels; rescale to the original image yourself",
        ],
    }


def _check_dynamic(program):
    """A ConfigError if the export traced the input's height or width as anything but a
    free size: the ONNX exporter, when torch.export cannot prove the model general, retries
    with the sizes it suggests (a fixed value, or a multiple), and a graph traced so may be
    wrong at other sizes."""
    ep = program.exported_program
    (name,) = ep.graph_signature.user_inputs
    (node,) = [n for n in ep.graph.nodes if n.name == name]
    dims = node.meta["val"].shape[2:]
    if not all(isinstance(d, torch.SymInt) and d.node.expr.is_Symbol for d in dims):
        raise ConfigError(
            f"the export holds only input sizes {tuple(dims)}; the graph must take any size"
        )

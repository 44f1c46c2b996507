"""The dense part of a Faster R-CNN: the one piece worth handing to an inference runtime.

Backbone (+ FPN) and RPN head are convolutions over the whole image with static weights:
runtimes fuse and vectorise them well, and their shapes depend only on the image size.
Everything after (anchor decoding, top-k, NMS, ROIAlign, the box head, per-class NMS)
depends on the data and stays in PyTorch (``runtime.RuntimeRCNN``).

The graph's one input is the batch ``GeneralizedRCNN.preprocess_image`` builds
(normalised, zero-padded to the size divisibility); its outputs are the features the ROI
heads read and, per RPN level, the objectness logits and anchor deltas.
"""

import copy
import hashlib

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["DenseRCNN", "dense_outputs", "check_exportable", "fingerprint"]

INPUT_NAME = "images"


def check_exportable(model) -> None:
    """A one-line ConfigError unless ``model`` is a GeneralizedRCNN with a standard RPN."""
    from detectron2.modeling import GeneralizedRCNN
    from detectron2.modeling.proposal_generator import RPN

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
    if model.roi_heads is None or not hasattr(model.roi_heads, "in_features"):
        raise ConfigError("MODEL.ROI_HEADS.NAME: the ROI heads must declare their in_features")


def dense_outputs(model) -> list:
    """One dict per graph output, in graph order: name, kind, stride and channels."""
    shapes = model.backbone.output_shape()
    rpn = model.proposal_generator
    num_anchors = rpn.anchor_generator.num_anchors
    outs = [
        {"name": f, "kind": "feature", "stride": shapes[f].stride, "channels": shapes[f].channels}
        for f in model.roi_heads.in_features
    ]
    for kind, per_anchor in (("rpn_logits", 1), ("rpn_deltas", rpn.anchor_generator.box_dim)):
        outs += [
            {
                "name": f"{kind}_{f}",
                "kind": kind,
                "stride": shapes[f].stride,
                "channels": n * per_anchor,
                "level": f,
            }
            for f, n in zip(rpn.in_features, num_anchors)
        ]
    return outs


class DenseRCNN(nn.Module):
    """``images -> (ROI-head features..., RPN logits per level..., RPN deltas per level...)``."""

    def __init__(self, model):
        super().__init__()
        check_exportable(model)
        self.backbone = model.backbone
        self.rpn_head = model.proposal_generator.rpn_head
        self.rpn_in = list(model.proposal_generator.in_features)
        self.roi_in = list(model.roi_heads.in_features)

    def forward(self, images):
        features = self.backbone(images)
        logits, deltas = self.rpn_head([features[f] for f in self.rpn_in])
        return tuple([features[f] for f in self.roi_in] + list(logits) + list(deltas))


def fingerprint(model) -> str:
    """sha256 over the dense part's weights and buffers (names, shapes, values): ties an
    export to the weights it was made from, so a stale export is refused, not used.
    Taken after folding frozen norms, so a model already prepared for inference
    (``prepare_for_inference``) has the fingerprint of the checkpoint it came from."""
    from ..modeling import fold_frozen_batchnorm

    h = hashlib.sha256()
    dense = fold_frozen_batchnorm(copy.deepcopy(DenseRCNN(model)))
    for name, t in sorted(dense.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()

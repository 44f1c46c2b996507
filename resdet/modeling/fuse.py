"""Inference-time folding of frozen normalisation into the preceding convolution.

A FrozenBN (or an eval-mode BN) after a conv is an affine map per channel, so it can be
merged into the conv's weight and bias: one op instead of two and one less pass over
memory, which is most of FrozenBN's cost on a CPU. Outputs match the unfolded model up
to float rounding (tests check < 1e-4 relative).
"""

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..layers import use_fast_roi_heads

__all__ = ["fold_frozen_batchnorm", "prepare_for_inference"]


@torch.no_grad()
def fold_frozen_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every ``Conv2d.norm`` that is FrozenBN (or BN in eval mode) into its conv.

    In place; returns ``model``. Trainable BN in train mode is left alone, since its
    statistics still change.
    """
    for m in model.modules():
        if not isinstance(m, Conv2d) or m.norm is None:
            continue
        norm = m.norm
        if isinstance(norm, FrozenBatchNorm2d):
            pass
        elif isinstance(norm, nn.modules.batchnorm._BatchNorm) and not norm.training:
            pass
        else:
            continue
        m.weight, m.bias = fuse_conv_bn_weights(
            m.weight, m.bias, norm.running_mean, norm.running_var, norm.eps, norm.weight, norm.bias
        )
        m.norm = None
    return model


def _conv_parts(model: nn.Module):
    """The convolution-heavy parts of a model, the ones worth compiling: a detector's
    backbone and RPN head (the ROI heads' shapes depend on the data), else the model."""
    if not hasattr(model, "backbone"):
        return [model]
    rpn_head = getattr(getattr(model, "proposal_generator", None), "rpn_head", None)
    return [model.backbone] + ([rpn_head] if rpn_head is not None else [])


def prepare_for_inference(model: nn.Module, compile: bool = False) -> nn.Module:
    """Eval mode, frozen norms folded into convs, channels_last weights (NHWC convs are
    faster on CPUs and tensor cores), ROI heads on resdet's CPU paths
    (``resdet.layers.use_fast_roi_heads``: multi-threaded ROIAlign with identical output,
    box-head FCs on oneDNN). In place; returns ``model``.

    ``compile``: also compile the convolution-heavy parts with TorchInductor's freezing
    (``nn.Module.compile``, so parameter names do not change): the weights become
    constants prepacked for oneDNN and conv + add + ReLU fuse: 1.05-1.25x on an R50
    trunk on a 2-core CPU (bench/), at the price of a one-off compile (seconds to a
    minute per input shape). Run it under
    ``torch.no_grad()``; the weights must not change afterwards.
    """
    model.eval()
    fold_frozen_batchnorm(model)
    model = use_fast_roi_heads(model.to(memory_format=torch.channels_last))
    if compile:
        for part in _conv_parts(model):
            part.compile(options={"freezing": True})
    return model

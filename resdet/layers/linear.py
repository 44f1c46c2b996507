"""The box head's large fully connected layers on oneDNN with a once-packed weight.

A Faster R-CNN box head's first FC (12544 -> 1024 on every proposal) is the largest GEMM
of the ROI heads. PyTorch runs an fp32 ``nn.Linear`` on a CPU through MKL's sgemm, whose
code path depends on the CPU vendor; oneDNN's linear with its weight reordered once into
its blocked layout runs the same fp32 product with its own kernels (bench/README.md has
the measured difference). Values differ from ``F.linear`` only by summation order
(relative ~1e-6); with autograd, or off a CPU, it is ``F.linear`` itself.
"""

import torch
import torch.nn.functional as F
from detectron2.modeling.roi_heads.box_head import FastRCNNConvFCHead
from torch import nn

__all__ = ["PackedLinear", "use_fast_box_head"]


def _onednn_ok(x, weight) -> bool:
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() == 2
        and not x.is_mkldnn
        and torch.backends.mkldnn.is_available()
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


class PackedLinear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) whose inference runs oneDNN's linear
    on a copy of the weight packed on first use and repacked whenever the weight changes.
    Build it with :meth:`from_linear`, which shares the original's parameters."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "PackedLinear":
        new = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta"
        )
        new.weight, new.bias = linear.weight, linear.bias
        new.train(linear.training)
        return new

    def forward(self, x):
        w = self.weight
        autograd = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
        if autograd or not _onednn_ok(x, w):
            return F.linear(x, w, self.bias)
        return torch.ops.mkldnn._linear_pointwise(
            x, self._packed_weight(), self.bias, "none", [], ""
        )

    def _packed_weight(self):
        # the packed copy is stale once the weight is replaced or changed in place
        key = (self.weight.data_ptr(), self.weight._version)
        cache = self.__dict__.get("_packed")
        if cache is None or cache[0] != key:
            cache = (key, torch.ops.mkldnn._reorder_linear_weight(self.weight.detach()))
            self.__dict__["_packed"] = cache
        return cache[1]

    def __getstate__(self):
        # oneDNN's opaque tensors can be neither copied nor pickled; it is rebuilt on use
        return {k: v for k, v in self.__dict__.items() if k != "_packed"}


def use_fast_box_head(model: nn.Module) -> nn.Module:
    """Swap the ``nn.Linear`` layers of every Detectron2 ``FastRCNNConvFCHead`` in ``model``
    for :class:`PackedLinear` (same parameter objects, so optimisers and checkpoints are
    unaffected). In place; returns ``model``."""
    for head in [m for m in model.modules() if isinstance(m, FastRCNNConvFCHead)]:
        for name, child in list(head.named_children()):
            if type(child) is nn.Linear:
                setattr(head, name, PackedLinear.from_linear(child))
    return model

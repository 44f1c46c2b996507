"""A multi-threaded CPU ROIAlign: torchvision's own kernel on disjoint runs of the boxes.

torchvision's CPU ``roi_align`` loops over the boxes on one thread. Each box's output
depends only on that box and the feature map, and torch ops release the GIL, so the same
kernel called on disjoint runs of the boxes from ``torch.get_num_threads()`` threads gives
bit-identical output in less time. The boxes are cut into a few runs per thread of about
equal estimated work (the kernel's bilinear samples per box) that the threads take from one
queue; :class:`FastROIPooler` does this across all FPN levels at once.

Gradients are torchvision's: the backward is its ``_roi_align_backward`` kernel on the
whole batch, so training gets the faster forward and exactly the same gradients. Anything
else (GPU, quantized input, one thread, tracing or compiling) goes to torchvision as is.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.utils import _pair
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops._utils import convert_boxes_to_roi_format

from detectron2.layers import ROIAlign as D2ROIAlign
from detectron2.modeling.poolers import (
    ROIPooler,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)

__all__ = ["roi_align", "ROIAlign", "FastROIPooler", "use_fast_roi_align"]

RUNS_PER_THREAD = 4
_pool = None  # (pid, workers, executor); rebuilt after a fork or a thread-count change
_pool_lock = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        # a forked child (DataLoader worker) inherits the object but not its threads
        if _pool is None or _pool[:2] != (os.getpid(), workers):
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            _pool = (os.getpid(), workers,
                     ThreadPoolExecutor(workers, thread_name_prefix="resdet-roi-align"))
        return _pool[2]


def _run_parallel(fn, jobs: list) -> None:
    """``fn(job)`` for every job, taken in order from one queue by this thread and the
    pool's (the cost estimate is rough; whoever is free takes the next run)."""
    queue, lock = iter(jobs), threading.Lock()

    def drain():
        while True:
            with lock:
                job = next(queue, None)
            if job is None:
                return
            fn(job)

    workers = min(torch.get_num_threads(), len(jobs)) - 1
    futures = [_executor(torch.get_num_threads() - 1).submit(drain) for _ in range(workers)]
    try:
        drain()
    finally:
        for f in futures:
            f.result()  # waits for all, re-raises a worker's error


def _box_costs(rois, scales, output_size, sampling_ratio: int, aligned: bool):
    """Relative work of each box in torchvision's kernel: bilinear samples per bin, plus one
    for the bin itself. It only balances the threads; it never changes a value."""
    if sampling_ratio > 0:
        return torch.full((len(rois),), float(sampling_ratio ** 2 + 1), dtype=torch.float64)
    r = rois[:, 1:].double() * scales.reshape(-1, 1)
    w, h = r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]
    if not aligned:  # the legacy kernel forces boxes to at least 1x1
        w, h = w.clamp(min=1), h.clamp(min=1)
    grid_h = (h / output_size[0]).ceil().clamp(min=0)
    grid_w = (w / output_size[1]).ceil().clamp(min=0)
    return grid_h * grid_w + 1


def _parts() -> int:
    # a few runs per thread, so that a rough cost estimate still evens out
    return RUNS_PER_THREAD * torch.get_num_threads()


def _cuts(costs, parts: int) -> list:
    """Boundaries ``[0, ..., len(costs)]`` cutting ``costs`` into at most ``parts``
    contiguous runs of about equal sum, none empty."""
    n = len(costs)
    cum = costs.cumsum(0)
    targets = cum[-1] * torch.arange(1, parts, dtype=cum.dtype) / parts
    inner = (torch.searchsorted(cum, targets) + 1).clamp(max=n).tolist()
    return sorted({0, n, *inner})


def _parallel_ok(input, n_boxes: int) -> bool:
    return (input.device.type == "cpu" and not input.is_quantized and n_boxes > 1
            and torch.get_num_threads() > 1 and not torch.jit.is_scripting()
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling())


def _forward(input, rois, spatial_scale: float, output_size, sampling_ratio: int,
             aligned: bool):
    """torchvision's forward kernel on runs of ``rois`` in parallel; no autograd."""
    op = torch.ops.torchvision.roi_align
    ph, pw = output_size
    input = input.contiguous()  # the kernel would otherwise copy a channels_last map per call
    scales = torch.full((1,), float(spatial_scale), dtype=torch.float64)
    cuts = _cuts(_box_costs(rois, scales, output_size, sampling_ratio, aligned), _parts())
    if len(cuts) <= 2:
        return op(input, rois, spatial_scale, ph, pw, sampling_ratio, aligned)
    out = input.new_empty((len(rois), input.shape[1], ph, pw))

    def run(run_range):
        a, b = run_range
        out[a:b] = op(input, rois[a:b], spatial_scale, ph, pw, sampling_ratio, aligned)

    _run_parallel(run, list(pairwise(cuts)))
    return out


class _ROIAlignFunction(torch.autograd.Function):
    """Parallel forward; torchvision's backward kernel, so gradients are its own."""

    @staticmethod
    def forward(ctx, input, rois, spatial_scale, output_size, sampling_ratio, aligned):
        ctx.save_for_backward(rois)
        ctx.args = (spatial_scale, output_size, sampling_ratio, aligned, input.shape)
        return _forward(input, rois, spatial_scale, output_size, sampling_ratio, aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        spatial_scale, (ph, pw), sampling_ratio, aligned, (n, c, h, w) = ctx.args
        grad_input = torch.ops.torchvision._roi_align_backward(
            grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned)
        return grad_input, None, None, None, None, None


def roi_align(input, boxes, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False):
    """``torchvision.ops.roi_align`` (same arguments, same output bit for bit), with the
    boxes spread over ``torch.get_num_threads()`` threads on a CPU."""
    rois = boxes if isinstance(boxes, torch.Tensor) else convert_boxes_to_roi_format(boxes)
    output_size = _pair(output_size)
    if rois.dim() != 2 or rois.size(1) != 5 or not _parallel_ok(input, len(rois)):
        return tv_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    args = (float(spatial_scale), tuple(output_size), int(sampling_ratio), bool(aligned))
    if torch.is_grad_enabled() and (input.requires_grad or rois.requires_grad):
        return _ROIAlignFunction.apply(input, rois, *args)
    return _forward(input, rois, *args)


class ROIAlign(D2ROIAlign):
    """Detectron2's ``ROIAlign`` (same arguments and attributes) on :func:`roi_align`."""

    def forward(self, input, rois):
        if input.is_quantized:
            return super().forward(input, rois)
        assert rois.dim() == 2 and rois.size(1) == 5
        return roi_align(input, rois.to(dtype=input.dtype), self.output_size,
                         self.spatial_scale, self.sampling_ratio, self.aligned)


class FastROIPooler(ROIPooler):
    """Detectron2's ``ROIPooler`` whose levels run together: at inference the boxes of all
    FPN levels are cut into runs of about equal work shared by the threads, each written
    straight into its rows of the output (no zero-filled buffer). With autograd it is
    Detectron2's forward over :class:`ROIAlign` levels. Build it with :meth:`from_pooler`."""

    @classmethod
    def from_pooler(cls, pooler: ROIPooler) -> "FastROIPooler":
        fast = cls.__new__(cls)
        nn.Module.__init__(fast)
        fast.__dict__.update({k: v for k, v in pooler.__dict__.items()
                              if k not in ("_modules", "_parameters", "_buffers")})
        fast.level_poolers = nn.ModuleList(_fast_align(p) for p in pooler.level_poolers)
        return fast

    def forward(self, x, box_lists):
        if (len(self.level_poolers) == 1 or len(x) != len(self.level_poolers)
                or len(box_lists) == 0 or len(box_lists) != len(x[0])
                or (torch.is_grad_enabled() and any(f.requires_grad for f in x))
                or not _parallel_ok(x[0], sum(len(b) for b in box_lists))):
            return super().forward(x, box_lists)
        rois = convert_boxes_to_pooler_format(box_lists).to(dtype=x[0].dtype)
        levels = assign_boxes_to_levels(box_lists, self.min_level, self.max_level,
                                        self.canonical_box_size, self.canonical_level)
        return _multilevel_forward(x, rois, levels, self.level_poolers)


def _multilevel_forward(features, rois, levels, poolers):
    """All levels' boxes in level order, cut into runs of about equal work; each run pools
    its boxes level by level into their rows of the output."""
    op = torch.ops.torchvision.roi_align
    order = torch.argsort(levels, stable=True)
    sorted_levels = levels[order]
    spatial = torch.tensor([p.spatial_scale for p in poolers], dtype=torch.float64)
    p0 = poolers[0]
    # one pooler per level, as Detectron2 builds them: same output size, sampling, alignment
    costs = _box_costs(rois[order], spatial[sorted_levels], p0.output_size, p0.sampling_ratio,
                       p0.aligned)
    cuts = _cuts(costs, _parts())
    used = sorted_levels.unique().tolist()
    maps = {lvl: features[lvl].contiguous() for lvl in used}  # one copy per channels_last map
    ph, pw = p0.output_size
    out = rois.new_empty((len(rois), features[0].shape[1], ph, pw))

    def run(run_range):
        a, b = run_range
        run_levels, counts = sorted_levels[a:b].unique_consecutive(return_counts=True)
        for lvl, n in zip(run_levels.tolist(), counts.tolist()):
            idx, a = order[a:a + n], a + n
            p = poolers[lvl]
            out[idx] = op(maps[lvl], rois[idx], p.spatial_scale, ph, pw, p.sampling_ratio,
                          p.aligned)

    _run_parallel(run, list(pairwise(cuts)))
    return out


def _is_plain_align_pooler(m) -> bool:
    return type(m) is ROIPooler and all(type(p) is D2ROIAlign for p in m.level_poolers)


def use_fast_roi_align(model: nn.Module) -> nn.Module:
    """Swap every Detectron2 ``ROIPooler`` over ROIAlign levels in ``model`` for a
    :class:`FastROIPooler`, and every other Detectron2 ``ROIAlign`` for :class:`ROIAlign`.

    In place; returns ``model`` (a new module only when ``model`` is itself such a pooler).
    Outputs and gradients stay identical. ROIPool and rotated poolers are left alone;
    subclasses of ``ROIPooler`` (export wrappers) keep their own forward.
    """
    if _is_plain_align_pooler(model):
        return FastROIPooler.from_pooler(model)
    # poolers first; then any ROIAlign left (a pooler subclass's levels, a user's module)
    for wanted, make in ((_is_plain_align_pooler, FastROIPooler.from_pooler),
                         (lambda m: type(m) is D2ROIAlign, _fast_align)):
        swaps = [(parent, name, make(child)) for parent in model.modules()
                 for name, child in parent.named_children() if wanted(child)]
        for parent, name, new in swaps:
            setattr(parent, name, new)
    return model


def _fast_align(m: D2ROIAlign) -> ROIAlign:
    return ROIAlign(m.output_size, m.spatial_scale, m.sampling_ratio, m.aligned)

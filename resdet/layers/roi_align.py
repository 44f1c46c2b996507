"""A faster CPU ROIAlign, equal to torchvision's ``roi_align``.

torchvision's CPU kernel loops over the boxes on one thread, channel by channel, reading
four scattered pixels per bilinear sample. Two paths replace it:

- Inference (no autograd): the same sampling points, positions and bilinear weights,
  computed with torch ops (in pieces that each op runs on one thread), then summed per
  bin by ``F.embedding_bag`` over the feature map's NHWC rows, which reads whole channel
  vectors and runs on ``torch.get_num_threads()`` threads. Values equal torchvision's to
  float rounding (the sums run in another order): about 1e-6 of the map's scale for
  proposal-sized boxes, up to 1e-5 for bins of thousands of samples.
- Training: torchvision's own kernel on disjoint runs of the boxes from a thread pool
  (each box's output depends only on that box, torch ops release the GIL), so the output
  is bit-identical; the backward is torchvision's ``_roi_align_backward`` on the whole
  batch, so gradients are exactly torchvision's.

Which modes take these paths, and which go to torchvision's op as is (tests/
test_roi_align_upstream.py runs torchvision's and Detectron2's own tests of the op with
resdet's in place and checks which path each mode takes):

- resdet's paths: float32 and float64 maps on a CPU, run eagerly or from a torch.fx
  GraphModule (``roi_align`` and ``ROIAlign`` are one leaf call under torch.fx, as
  torchvision's are), and under CPU autocast by torchvision's autocast rule for roi_align
  (inputs other than float64 cast to float32, output in the input's dtype).
- torchvision's op: TorchScript (``torch.jit.script`` compiles ``roi_align``,
  ``ROIAlign`` and ``FastROIPooler`` to torchvision's op, the modules to Detectron2's own
  forwards; scripting leaves the eager modules resdet's); ``torch.jit.trace`` and
  ``torch.compile`` (the graph records torchvision's op: the gather is data-dependent
  Python); float16, and bfloat16 outside autocast (torchvision's kernel computes in them,
  or raises its error); quantized maps (torchvision's quantized kernel; ``ROIAlign``
  dequantizes them first, as Detectron2's does); GPU tensors; no boxes; autograd with one
  box or one thread (nothing to split); boxes of another dtype than the map (torchvision's
  error).
- ``FastROIPooler`` gathers all levels itself at inference; with one level, under
  autograd, or for a map resdet's paths do not take, it is Detectron2's forward over
  resdet's ``ROIAlign`` levels.
"""

import os
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import List, Union

import torch
import torch.nn.functional as F
import torchvision  # noqa: F401  (registers torch.ops.torchvision)
from detectron2.layers import ROIAlign as D2ROIAlign
from detectron2.modeling.poolers import (
    ROIPooler,
    assign_boxes_to_levels,
    convert_boxes_to_pooler_format,
)
from detectron2.structures import Boxes
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.jit.annotations import BroadcastingList2
from torch.nn.modules.utils import _pair
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops._utils import check_roi_boxes_shape, convert_boxes_to_roi_format

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
            _pool = (
                os.getpid(),
                workers,
                ThreadPoolExecutor(workers, thread_name_prefix="resdet-roi-align"),
            )
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
        return torch.full((len(rois),), float(sampling_ratio**2 + 1), dtype=torch.float64)
    r = rois[:, 1:].double() * scales.reshape(-1, 1)
    w, h = r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]
    if not aligned:  # the legacy kernel forces boxes to at least 1x1
        w, h = w.clamp(min=1), h.clamp(min=1)
    grid_h = _ceil(h / output_size[0]).clamp(min=0)
    grid_w = _ceil(w / output_size[1]).clamp(min=0)
    return (grid_h * grid_w + 1).double()


def _ceil(v):
    """``ceil(v)`` as an integer tensor (what C++ ``(int)ceil`` gives); truncation plus
    one where it cut something off (``torch.ceil`` was slow with two threads here)."""
    t = v.long()
    return t + (v > t).long()


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


def _cpu_ok(input) -> bool:
    """Inputs resdet's paths take: fp32/fp64 on a CPU, outside scripting and compiling."""
    return (
        input.device.type == "cpu"
        and input.dtype in (torch.float32, torch.float64)
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


# bilinear corners gathered per embedding_bag call: bounds the sample table's memory
MAX_CORNERS = 1 << 22
# corners per piece of the sample table (estimated high): below ATen's grain size
# (32768 elements), so that its ops stay on one thread
TABLE_CORNERS = 30000


def _sample_table(
    rois,
    spatial_scale: float,
    output_size,
    sampling_ratio: int,
    aligned: bool,
    height: int,
    width: int,
):
    """Every bilinear sample torchvision's CPU kernel takes, as the four NHWC rows it
    reads (``batch * H * W + y * W + x``) and their weights, the offset of each bin's bag
    of corners, and each box's sample count per bin. The arithmetic follows the
    kernel's (roi_align_kernel.cpp) step by step, in the boxes' dtype."""
    ph, pw = output_size
    dt = rois.dtype
    off = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * spatial_scale - off
    y1 = rois[:, 2] * spatial_scale - off
    rw = (rois[:, 3] * spatial_scale - off) - x1
    rh = (rois[:, 4] * spatial_scale - off) - y1
    if not aligned:  # the legacy kernel forces boxes to at least 1x1
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    bin_h, bin_w = rh / ph, rw / pw
    if sampling_ratio > 0:
        grid_h = grid_w = torch.full((len(rois),), sampling_ratio, dtype=torch.long)
    else:
        grid_h, grid_w = _ceil(rh / ph), _ceil(rw / pw)
    count = (grid_h * grid_w).clamp(min=1).to(dt)
    # a box with no samples (inverted or empty) yields zeros, as in the kernel
    grid_h, grid_w = grid_h.clamp(min=0), grid_w.clamp(min=0)
    per_bin = grid_h * grid_w
    per_box = per_bin * (ph * pw)
    total = int(per_box.sum())
    # the box of each sample: count the box starts at or before it (an empty box's start
    # coincides with the next one's, so its id is skipped)
    starts = torch.cumsum(per_box, 0) - per_box
    marks = torch.zeros(total + 1, dtype=torch.long)
    marks.index_add_(0, starts[1:], torch.ones(len(rois) - 1, dtype=torch.long))
    box = marks[:total].cumsum(0)

    def take(t):  # index_select: ``t[box]`` is much slower here
        return t.index_select(0, box)

    j = torch.arange(total) - take(starts)
    gw, gh = take(grid_w), take(grid_h)
    ix, j = j % gw, j // gw
    iy, j = j % gh, j // gh
    bin_x, bin_y = j % pw, j // pw
    bh, bw = take(bin_h), take(bin_w)
    y = take(y1) + bin_y.to(dt) * bh + (iy.to(dt) + 0.5) * bh / gh.to(dt)
    x = take(x1) + bin_x.to(dt) * bw + (ix.to(dt) + 0.5) * bw / gw.to(dt)
    inside = (y >= -1.0) & (y <= height) & (x >= -1.0) & (x <= width)
    y, x = y.clamp(min=0), x.clamp(min=0)
    y_low, x_low = y.long(), x.long()
    y_edge, x_edge = y_low >= height - 1, x_low >= width - 1
    y_low = torch.where(y_edge, height - 1, y_low)
    x_low = torch.where(x_edge, width - 1, x_low)
    y_high = torch.where(y_edge, y_low, y_low + 1)
    x_high = torch.where(x_edge, x_low, x_low + 1)
    ly = torch.where(y_edge, 0.0, y - y_low)
    lx = torch.where(x_edge, 0.0, x - x_low)
    hy, hx = 1.0 - ly, 1.0 - lx
    base = take(rois[:, 0].long()) * (height * width)
    rows = torch.stack(
        [
            base + y_low * width + x_low,
            base + y_low * width + x_high,
            base + y_high * width + x_low,
            base + y_high * width + x_high,
        ],
        1,
    )
    weights = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], 1)
    weights = torch.where(inside[:, None], weights, 0.0)
    bag = (per_bin * 4)[:, None].expand(-1, ph * pw).reshape(-1)
    return rows.reshape(-1), weights.reshape(-1), torch.cumsum(bag, 0) - bag, count


def _gather_forward(
    input, rois, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool
):
    """ROIAlign as one weighted ``embedding_bag`` over the NHWC rows of ``input`` (free for
    a channels_last map, one copy otherwise); boxes in chunks of at most ``MAX_CORNERS``
    corners. Returns (K, C, PH, PW) with channels_last strides."""
    n, c, h, w = input.shape
    ph, pw = output_size
    # whole channel vectors per row: the gather then reads contiguous memory
    table = input.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    table = table.reshape(-1, c)
    scale = torch.full((1,), float(spatial_scale), dtype=torch.float64)
    corners = 4 * ph * pw * _box_costs(rois, scale, output_size, sampling_ratio, aligned)
    cum = torch.cumsum(corners, 0)
    parts = []
    for first, size in zip(*_runs((cum // MAX_CORNERS).long())):
        idx, wts, offsets, count = _sample_table_serial(
            rois[first : first + size],
            cum[first : first + size],
            spatial_scale,
            output_size,
            sampling_ratio,
            aligned,
            h,
            w,
        )
        sums = F.embedding_bag(idx, table, offsets, mode="sum", per_sample_weights=wts)
        # divided after summing, as the kernel does
        parts.append(sums.view(size, ph, pw, c).div_(count.view(-1, 1, 1, 1)))
    out = parts[0] if len(parts) == 1 else torch.cat(parts)
    return out.permute(0, 3, 1, 2)


def _sample_table_serial(rois, cum_corners, *args):
    """:func:`_sample_table` built in pieces small enough that each element-wise op runs
    on one thread: a few dozen ops, each its own parallel region otherwise, cost more in
    thread wake-ups than they save (by far on a busy machine)."""
    pieces = [
        _sample_table(rois[first : first + size], *args)
        for first, size in zip(*_runs((cum_corners // TABLE_CORNERS).long()))
    ]
    if len(pieces) == 1:
        return pieces[0]
    idx, wts, offsets, count = zip(*pieces)
    shift = torch.tensor([0] + [len(i) for i in idx[:-1]]).cumsum(0).tolist()
    offsets = [o + k for o, k in zip(offsets, shift)]
    return torch.cat(idx), torch.cat(wts), torch.cat(offsets), torch.cat(count)


def _runs(values):
    """(first index, length) of each run of equal consecutive ``values``."""
    _, counts = torch.unique_consecutive(values, return_counts=True)
    counts = counts.tolist()
    firsts = [0]
    for k in counts[:-1]:
        firsts.append(firsts[-1] + k)
    return firsts, counts


def _threaded_forward(
    input, rois, spatial_scale: float, output_size, sampling_ratio: int, aligned: bool
):
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
        return _threaded_forward(input, rois, spatial_scale, output_size, sampling_ratio, aligned)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        spatial_scale, (ph, pw), sampling_ratio, aligned, (n, c, h, w) = ctx.args
        grad_input = torch.ops.torchvision._roi_align_backward(
            grad, rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned
        )
        return grad_input, None, None, None, None, None


@torch.fx.wrap  # one call_function node under torch.fx, as torchvision's roi_align is
def roi_align(
    input: Tensor,
    boxes: Union[Tensor, List[Tensor]],
    output_size: BroadcastingList2[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """``torchvision.ops.roi_align``, same arguments and output, faster on a CPU: gathered
    through ``embedding_bag`` at inference (equal to float rounding), torchvision's kernel
    over a thread pool under autograd (bit-identical, torchvision's gradients). The modes
    it does not serve go to torchvision's op (see the module's docstring)."""
    if torch.jit.is_scripting():
        # TorchScript compiles only this branch (the rest is Python it cannot compile)
        return tv_roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    return _roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned)


def _roi_align(input, boxes, output_size, spatial_scale, sampling_ratio, aligned):
    args = (output_size, spatial_scale, sampling_ratio, aligned)
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        # a graph records torchvision's op, not the gather's data-dependent Python
        return tv_roi_align(input, boxes, *args)
    check_roi_boxes_shape(boxes)  # torchvision's asserts, whichever path runs
    rois = boxes if isinstance(boxes, Tensor) else convert_boxes_to_roi_format(boxes)
    if input.is_quantized or rois.is_quantized or input.device.type != "cpu" or len(rois) == 0:
        return tv_roi_align(input, rois, *args)
    if torch.is_autocast_enabled("cpu"):
        return _autocast_roi_align(input, rois, *args)
    if input.dtype not in (torch.float32, torch.float64) or rois.dtype != input.dtype:
        # half precision (torchvision's kernel computes in it), or a dtype mismatch
        # (torchvision's error)
        return tv_roi_align(input, rois, *args)
    fast = (float(spatial_scale), _pair(output_size), int(sampling_ratio), bool(aligned))
    if torch.is_grad_enabled() and (input.requires_grad or rois.requires_grad):
        if len(rois) < 2 or torch.get_num_threads() < 2:
            return tv_roi_align(input, rois, *args)
        return _ROIAlignFunction.apply(input, rois, *fast)
    return _gather_forward(input, rois, *fast).contiguous()


def _autocast_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """torchvision's CPU autocast rule for roi_align (its Autocast kernel): floating inputs
    other than float64 cast to float32, the op run with autocast off, the output cast to
    the input's dtype. Here the op is resdet's."""

    def to_f32(t):
        return t.float() if t.is_floating_point() and t.dtype != torch.float64 else t

    with torch.autocast("cpu", enabled=False):
        out = _roi_align(
            to_f32(input), to_f32(rois), output_size, spatial_scale, sampling_ratio, aligned
        )
    return out.to(input.dtype)


class ROIAlign(D2ROIAlign):
    """Detectron2's ``ROIAlign`` (same arguments and attributes) on :func:`roi_align`; it
    also takes torchvision's list-of-boxes form. Scripted, it is Detectron2's forward on
    torchvision's op."""

    def forward(self, input: Tensor, rois: Union[Tensor, List[Tensor]]) -> Tensor:
        if torch.jit.is_scripting():
            # Detectron2's forward; TorchScript compiles only this branch
            if not isinstance(rois, Tensor):
                rois = convert_boxes_to_roi_format(rois)
            assert rois.dim() == 2 and rois.size(1) == 5
            if input.is_quantized:
                input = input.dequantize()
            return tv_roi_align(
                input,
                rois.to(dtype=input.dtype),
                self.output_size,
                self.spatial_scale,
                self.sampling_ratio,
                self.aligned,
            )
        return _align_module_forward(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned
        )


@torch.fx.wrap  # torch.fx sees the module as one call, as it sees torchvision's RoIAlign
def _align_module_forward(input, rois, output_size, spatial_scale, sampling_ratio, aligned):
    """:class:`ROIAlign`'s eager forward: Detectron2's checks and casts, then :func:`roi_align`
    (a quantized map: Detectron2's dequantized map on torchvision's op)."""
    if not isinstance(rois, Tensor):
        rois = convert_boxes_to_roi_format(rois)
    assert rois.dim() == 2 and rois.size(1) == 5
    if input.is_quantized:
        input = input.dequantize()
        align = tv_roi_align
    else:
        align = roi_align
    args = (output_size, spatial_scale, sampling_ratio, aligned)
    return align(input, rois.to(dtype=input.dtype), *args)


def _renamed(fn, name: str):
    """A copy of function ``fn`` called ``name`` (same code, globals and source)."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, name, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = f"{fn.__qualname__.rpartition('.')[0]}.{name}"
    copy.__annotations__, copy.__doc__ = dict(fn.__annotations__), fn.__doc__
    copy.__module__ = fn.__module__
    return copy


class FastROIPooler(ROIPooler):
    """Detectron2's ``ROIPooler`` on resdet's ROIAlign: at inference each level's boxes are
    gathered straight into their rows of the output (no zero-filled buffer); with autograd
    it is Detectron2's forward over :class:`ROIAlign` levels (torchvision's kernel over the
    thread pool). Scripted, it is Detectron2's forward on torchvision's op. Build it with
    :meth:`from_pooler`."""

    # Detectron2's forward, for the modes resdet's pooling does not serve and for
    # TorchScript, which cannot compile ``super()`` but compiles this from Detectron2's
    # source (under another name: a second method called ``forward`` would clash).
    _detectron2_forward = _renamed(ROIPooler.forward, "_detectron2_forward")

    @classmethod
    def from_pooler(cls, pooler: ROIPooler) -> "FastROIPooler":
        fast = cls.__new__(cls)
        nn.Module.__init__(fast)
        fast.__dict__.update(
            {
                k: v
                for k, v in pooler.__dict__.items()
                if k not in ("_modules", "_parameters", "_buffers")
            }
        )
        fast.level_poolers = nn.ModuleList(_fast_align(p) for p in pooler.level_poolers)
        return fast

    def forward(self, x: List[Tensor], box_lists: List[Boxes]):
        if torch.jit.is_scripting():
            return self._detectron2_forward(x, box_lists)
        if (
            len(self.level_poolers) == 1
            or len(x) != len(self.level_poolers)
            or len(box_lists) == 0
            or len(box_lists) != len(x[0])
            or (torch.is_grad_enabled() and any(f.requires_grad for f in x))
            or x[0].is_quantized
            or not _cpu_ok(x[0])
            or sum(len(b) for b in box_lists) == 0
        ):
            return self._detectron2_forward(x, box_lists)
        rois = convert_boxes_to_pooler_format(box_lists).to(dtype=x[0].dtype)
        levels = assign_boxes_to_levels(
            box_lists, self.min_level, self.max_level, self.canonical_box_size, self.canonical_level
        )
        return _multilevel_forward(x, rois, levels, self.level_poolers)


def _multilevel_forward(features, rois, levels, poolers):
    """Each level's boxes gathered from its map and written into their rows of one
    output (Detectron2 zero-fills it first; every row is written here)."""
    out = rois.new_empty((len(rois), features[0].shape[1], *poolers[0].output_size))
    for lvl in levels.unique().tolist():
        idx = (levels == lvl).nonzero()[:, 0]
        p = poolers[lvl]
        out[idx] = _gather_forward(
            features[lvl], rois[idx], p.spatial_scale, p.output_size, p.sampling_ratio, p.aligned
        )
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
    for wanted, make in (
        (_is_plain_align_pooler, FastROIPooler.from_pooler),
        (lambda m: type(m) is D2ROIAlign, _fast_align),
    ):
        swaps = [
            (parent, name, make(child))
            for parent in model.modules()
            for name, child in parent.named_children()
            if wanted(child)
        ]
        for parent, name, new in swaps:
            setattr(parent, name, new)
    return model


def _fast_align(m: D2ROIAlign) -> ROIAlign:
    return ROIAlign(m.output_size, m.spatial_scale, m.sampling_ratio, m.aligned)

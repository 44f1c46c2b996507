"""Detectron2's Faster R-CNN inference steps as plain tensor functions for one image, written
so that ``torch.export`` can trace them with data-dependent sizes (boolean masks, NMS) and
the ONNX exporter maps them to standard ops (TopK, NonZero, NonMaxSuppression, RoiAlign).

Each function states the Detectron2 code it follows; the order of filtering, clipping and
NMS is theirs, since it decides which boxes survive. What differs is only how: no Python
branch on a tensor's value (an export cannot hold one), masks applied unconditionally
where Detectron2 applies them only when something is masked (the same result).
"""

import math

import torch
import torchvision
from torch import Tensor

__all__ = [
    "ONNX_TRANSLATIONS",
    "nms_per_group",
    "grid_anchors",
    "clip_boxes",
    "batched_nms",
    "top_proposals",
    "assign_levels",
    "roi_align",
    "roi_align_levels",
    "detections",
]


def grid_anchors(cell_anchors, stride, offset, height, width):
    """DefaultAnchorGenerator's anchors for one level of ``height x width`` cells, in its
    order (cell-major, then cell anchor): ``(height * width * A, 4)``. The shifts are
    ``i * stride + offset * stride``, the values ``torch.arange(offset * stride, ...,
    step=stride)`` gives, without arange's float length, which a symbolic size cannot
    take."""
    dtype = cell_anchors.dtype
    shift_x = torch.arange(width, dtype=dtype) * stride + offset * stride
    shift_y = torch.arange(height, dtype=dtype) * stride + offset * stride
    shift_y, shift_x = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
    shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
    return (shifts.view(-1, 1, 4) + cell_anchors.view(1, -1, 4)).reshape(-1, 4)


def clip_boxes(boxes, height, width):
    """``Boxes.clip``: x to [0, width], y to [0, height]."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(
        (x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)), -1
    )


def _nonempty(boxes, threshold):
    """``Boxes.nonempty(threshold)``: wider and higher than ``threshold``."""
    return ((boxes[:, 2] - boxes[:, 0]) > threshold) & ((boxes[:, 3] - boxes[:, 1]) > threshold)


def _finite_rows(t):
    return torch.isfinite(t).all(dim=1)


# torchvision's batched_nms on the CPU: one NMS per group above this many boxes, one NMS
# over boxes shifted apart by group at or below it (its `boxes.numel() > 4000`)
VANILLA_ABOVE = 1000


@torch.library.custom_op("resdet::nms_per_group", mutates_args=())
def nms_per_group(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """torchvision's ``_batched_nms_vanilla`` as one op: NMS within each group, the kept
    indices by score, highest first. One op, so that the export writes it as one ONNX
    NonMaxSuppression (:func:`nms_per_group_onnx`) instead of a loop over the groups."""
    from torchvision.ops.boxes import _batched_nms_vanilla

    return _batched_nms_vanilla(boxes, scores, idxs, iou_threshold)


@nms_per_group.register_fake
def _(boxes, scores, idxs, iou_threshold):
    return boxes.new_empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.int64)


def nms_per_group_onnx(boxes, scores, idxs, iou_threshold: float):
    """:func:`nms_per_group` in ONNX: NonMaxSuppression with one class per group, a box
    scoring -inf in the groups not its own, below the score threshold (about -FLT_MAX)
    that drops it whether a runtime keeps scores > or >= the threshold. The runtimes'
    IoU is torchvision's arithmetic, and they suppress above the IoU threshold as it
    does."""
    from onnxscript import opset18 as op

    last = op.ReduceMax(op.Concat(idxs, op.Constant(value_ints=[0]), axis=0), keepdims=0)
    groups = op.Range(op.Constant(value_int=0), op.Add(last, op.Constant(value_int=1)), 1)
    member = op.Equal(op.Unsqueeze(groups, [1]), op.Unsqueeze(idxs, [0]))
    per_group = op.Where(member, op.Unsqueeze(scores, [0]), op.Constant(value_float=-math.inf))
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]),
        op.Unsqueeze(per_group, [0]),
        op.Shape(scores),  # no limit: as many as there are boxes
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[-3.4e38]),
    )
    keep = op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])
    _, order = op.TopK(op.Gather(scores, keep), op.Shape(keep), largest=1, sorted=1)
    return op.Gather(keep, order)


def batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's ``batched_nms`` on the CPU, where Detectron2 calls it: NMS within each
    group of ``idxs``, the kept indices by score, highest first. Both of its strategies,
    chosen as it chooses by the number of boxes, for their float rounding differs near the
    IoU threshold: one NMS per group (:func:`nms_per_group`) above VANILLA_ABOVE boxes,
    else one NMS over the boxes shifted by ``idx * (max coordinate + 1)``. Both run and
    the count picks one: an export holds no branch on a value."""
    # the max of no boxes has no value: the 0 beside it, as the boxes are clipped to >= 0
    max_coordinate = torch.cat((boxes.reshape(-1), boxes.new_zeros(1))).max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    shifted = torchvision.ops.nms(boxes + offsets[:, None], scores, iou_threshold)
    per_group = nms_per_group(boxes, scores, idxs, iou_threshold)
    vanilla = torch.full((1,), boxes.shape[0]) > VANILLA_ABOVE
    return torch.cat(
        (per_group[vanilla.expand(per_group.shape[0])], shifted[~vanilla.expand(shifted.shape[0])])
    )


def top_proposals(
    anchors,
    logits,
    deltas,
    box2box_transform,
    height,
    width,
    *,
    nms_thresh,
    pre_nms_topk,
    post_nms_topk,
    min_box_size,
):
    """RPN proposals of one image, as RPN.predict_proposals + find_top_rpn_proposals at
    test time. Per level (lists of ``anchors (K, 4)``, ``logits (K,)``, ``deltas (K, 4)``
    in RPN.forward's layout): the ``pre_nms_topk`` highest logits, their anchors
    decoded (only those: decoding is per anchor, so decoding all first as Detectron2
    does gives the same boxes). Then, over all levels: non-finite boxes and scores
    dropped, boxes clipped to ``height x width``, boxes not larger than ``min_box_size``
    dropped, NMS within each level (:func:`batched_nms`), the ``post_nms_topk`` best.
    Returns ``(boxes (R, 4), logits (R,))`` sorted by logit, highest first."""
    all_boxes, all_scores, all_levels = [], [], []
    for level, (a, s, d) in enumerate(zip(anchors, logits, deltas)):
        s, idx = s.topk(torch.sym_min(s.shape[0], pre_nms_topk))
        all_boxes.append(box2box_transform.apply_deltas(d[idx], a[idx]))
        all_scores.append(s)
        all_levels.append(torch.full_like(idx, level))
    boxes, scores, levels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_levels)
    valid = _finite_rows(boxes) & torch.isfinite(scores)
    boxes = clip_boxes(boxes, height, width)
    # before NMS, as Detectron2: an empty box would also break OpenVINO's RoiAlign
    keep = valid & _nonempty(boxes, min_box_size)
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    keep = batched_nms(boxes, scores, levels, nms_thresh)[:post_nms_topk]
    return boxes[keep], scores[keep]


def assign_levels(boxes, min_level, max_level, canonical_box_size, canonical_level):
    """poolers.assign_boxes_to_levels: each box's level index, from ``min_level``."""
    sizes = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    levels = torch.floor(canonical_level + torch.log2(sizes / canonical_box_size + 1e-8))
    return torch.clamp(levels, min=min_level, max=max_level).to(torch.int64) - min_level


def roi_align(feature, boxes, align):
    """ROIAlign of ``boxes`` (R, 4) on the one image's ``feature``; ``align``:
    (spatial_scale, output_size, sampling_ratio, aligned) of a Detectron2 ROIAlign."""
    scale, size, ratio, aligned = align
    rois = torch.cat((torch.zeros_like(boxes[:, :1]), boxes), dim=1)
    return torchvision.ops.roi_align(feature, rois, size, scale, ratio, aligned)


def roi_align_levels(features, boxes, levels, aligns):
    """ROIPooler's multi-level ROIAlign, each box pooled on its level only: boxes grouped
    by level, one RoiAlign per level (``aligns``: one per level, as :func:`roi_align`).
    Returns the pooled features in level order and ``order``, the box index of each row
    (pooled row i is box ``order[i]``)."""
    pooled, order = [], []
    for level, (x, align) in enumerate(zip(features, aligns)):
        (idx,) = torch.nonzero(levels == level, as_tuple=True)
        pooled.append(roi_align(x, boxes[idx], align))
        order.append(idx)
    return torch.cat(pooled), torch.cat(order)


def detections(
    boxes, scores, height, width, *, score_thresh, nms_thresh, topk_per_image, num_classes
):
    """fast_rcnn_inference_single_image: ``boxes (R, K*4 or 4)`` decoded per class,
    ``scores (R, K+1)`` probabilities with the background last. Rows with a non-finite
    box or score dropped, boxes clipped, (box, class) pairs above ``score_thresh`` kept,
    per-class NMS (:func:`batched_nms`), the ``topk_per_image`` best (all if < 0).
    Returns ``(boxes (N, 4), scores (N,), classes (N,) int64)``, highest score first."""
    valid = _finite_rows(boxes) & _finite_rows(scores)
    scores = scores[:, :-1]
    boxes = clip_boxes(boxes.reshape(boxes.shape[0], -1, 4), height, width)
    # class-agnostic regression: one box for every class
    boxes = boxes.expand(-1, num_classes, 4)
    # one mask for the row filter and the threshold: Detectron2 drops the rows first,
    # which keeps the same (box, class) pairs in the same order
    rows, classes = torch.nonzero((scores > score_thresh) & valid[:, None], as_tuple=True)
    boxes, scores = boxes[rows, classes], scores[rows, classes]
    keep = batched_nms(boxes, scores, classes, nms_thresh)
    if topk_per_image >= 0:
        keep = keep[:topk_per_image]
    return boxes[keep], scores[keep], classes[keep]


# the graph's own ops and their ONNX form, for torch.onnx.export's custom_translation_table
ONNX_TRANSLATIONS = {torch.ops.resdet.nms_per_group.default: nms_per_group_onnx}

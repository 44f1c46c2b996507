"""Detectron2's Faster R-CNN inference steps as plain tensor functions for one image, written
so that ``torch.export`` can trace them with data-dependent sizes (boolean masks, NMS) and
the ONNX exporter maps them to standard ops (TopK, NonZero, NonMaxSuppression, RoiAlign).

Each function states the Detectron2 code it follows; the order of filtering, clipping and
NMS is theirs, since it decides which boxes survive. What differs is only how: no Python
branch on a tensor's value (an export cannot hold one), masks applied unconditionally
where Detectron2 applies them only when something is masked (the same result).
"""

import torch
import torchvision

__all__ = [
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


def batched_nms(boxes, scores, idxs, iou_threshold):
    """torchvision's ``batched_nms`` as it runs on up to 1000 CPU boxes (its coordinate
    trick): each group's boxes shifted by ``idx * (max coordinate + 1)`` so that groups
    never overlap, then one NMS. Its float rounding is theirs, so that NMS keeps the
    same boxes near the IoU threshold. (Above 1000 boxes torchvision runs one NMS per
    group, whose IoUs differ from these in the last bits.) The max over an empty tensor
    has no value: the 0 beside it, as the boxes are clipped to >= 0."""
    max_coordinate = torch.cat((boxes.reshape(-1), boxes.new_zeros(1))).max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return torchvision.ops.nms(boxes + offsets[:, None], scores, iou_threshold)


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
    does gives the same boxes), non-finite boxes and scores dropped, boxes clipped to
    ``height x width``, boxes not larger than ``min_box_size`` dropped, NMS. Then the
    ``post_nms_topk`` best of all levels by logit. Detectron2's batched_nms over levels
    runs one NMS per level above 1000 boxes, which an FPN's levels always hold at real
    sizes; a single level (C4) is the same either way. Returns ``(boxes (R, 4), logits
    (R,))`` sorted by logit, highest first."""
    all_boxes, all_scores = [], []
    for a, s, d in zip(anchors, logits, deltas):
        s, idx = s.topk(torch.sym_min(s.shape[0], pre_nms_topk))
        boxes = box2box_transform.apply_deltas(d[idx], a[idx])
        valid = _finite_rows(boxes) & torch.isfinite(s)
        boxes = clip_boxes(boxes, height, width)
        # before NMS, as Detectron2: an empty box would also break OpenVINO's RoiAlign
        keep = valid & _nonempty(boxes, min_box_size)
        boxes, s = boxes[keep], s[keep]
        keep = torchvision.ops.nms(boxes, s, nms_thresh)
        all_boxes.append(boxes[keep])
        all_scores.append(s[keep])
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    scores, order = scores.topk(torch.sym_min(scores.shape[0], post_nms_topk))
    return boxes[order], scores


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

"""PASCAL VOC detection AP, as the official devkit's VOCevaldet.m computes it.

Detectron2 ships a port (``pascal_voc_evaluation.voc_eval``) that reads ground truth from
the XML files unchecked and differs from the devkit in three details that this module
follows the devkit on:

- a detection is a match when IoU >= the threshold (the port: ``>``);
- detections of equal score keep their input order (MATLAB's ``sort`` is stable; numpy's
  default quicksort is not);
- the 11-point recall thresholds are exactly 0, 0.1, ..., 1 (the port's
  ``np.arange(0, 1.1, 0.1)`` overshoots 0.3, 0.6 and 0.7 by one ulp, so a recall of
  exactly 3/10, 6/10 or 7/10 misses its threshold).

Boxes are in devkit coordinates: 1-based, pixel-inclusive (width = xmax - xmin + 1).
"""

import logging
from collections import defaultdict

import numpy as np
from detectron2.structures import BoxMode

__all__ = ["voc_ap", "voc_eval", "evaluate_voc"]

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)


def voc_ap(rec, prec, use_07_metric=False):
    """AP from a precision/recall curve: VOC2007's 11-point mean of interpolated precision,
    or (VOC2010+) the area under the monotone precision envelope."""
    rec, prec = np.asarray(rec, dtype=float), np.asarray(prec, dtype=float)
    if use_07_metric:
        return float(
            sum(prec[rec >= t].max() if (rec >= t).any() else 0.0 for t in np.arange(11) / 10) / 11
        )
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _best_overlaps(gt, detections):
    """For each detection: (its best IoU with a ground-truth box of its image, that box's index)."""
    ovmax = np.full(len(detections), -np.inf)
    jmax = np.zeros(len(detections), dtype=int)
    by_image = defaultdict(list)
    for d, (image_id, _, _) in enumerate(detections):
        by_image[image_id].append(d)
    for image_id, idx in by_image.items():
        gt_boxes = gt[image_id][0] if image_id in gt else np.zeros((0, 4))
        if not len(gt_boxes):
            continue
        bb = np.array([detections[d][2] for d in idx], dtype=float)[:, None, :]
        g = gt_boxes[None, :, :]
        iw = np.minimum(bb[..., 2], g[..., 2]) - np.maximum(bb[..., 0], g[..., 0]) + 1.0
        ih = np.minimum(bb[..., 3], g[..., 3]) - np.maximum(bb[..., 1], g[..., 1]) + 1.0
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        union = (
            (bb[..., 2] - bb[..., 0] + 1.0) * (bb[..., 3] - bb[..., 1] + 1.0)
            + (g[..., 2] - g[..., 0] + 1.0) * (g[..., 3] - g[..., 1] + 1.0)
            - inter
        )
        ov = np.where(inter > 0, inter / np.where(inter > 0, union, 1.0), -np.inf)
        jmax[idx] = ov.argmax(axis=1)  # first of equal maxima, as the devkit's strict '>'
        ovmax[idx] = ov.max(axis=1)
    return ovmax, jmax


def voc_eval(gt, detections, iou_thresholds=(0.5,), use_07_metric=False):
    """Devkit AP of one class at each IoU threshold.

    Args:
        gt: {image_id: (boxes [N, 4] devkit coordinates, difficult [N] bool)}, every test image.
        detections: [(image_id, score, [xmin, ymin, xmax, ymax] devkit coordinates)].

    Returns:
        list of (rec, prec, ap), one per threshold. A detection whose best match is a
        difficult object is neither a true nor a false positive; difficult objects do not
        count towards recall. ``ap`` is NaN when the class has no non-difficult object.
    """
    npos = int(sum((~np.asarray(d, bool)).sum() for _, d in gt.values()))
    order = np.argsort(-np.array([s for _, s, _ in detections], dtype=float), kind="stable")
    detections = [detections[d] for d in order]
    ovmax, jmax = _best_overlaps(gt, detections)
    out = []
    for thr in iou_thresholds:
        seen = {image_id: np.zeros(len(b), bool) for image_id, (b, _) in gt.items()}
        tp, fp = np.zeros(len(detections)), np.zeros(len(detections))
        for d, (image_id, _, _) in enumerate(detections):
            if ovmax[d] >= thr:
                j = jmax[d]
                if gt[image_id][1][j]:
                    continue  # difficult: ignored
                if seen[image_id][j]:
                    fp[d] = 1.0  # duplicate detection
                else:
                    tp[d], seen[image_id][j] = 1.0, True
            else:
                fp[d] = 1.0
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        rec = tp / npos if npos else np.full_like(tp, np.nan)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        out.append((rec, prec, voc_ap(rec, prec, use_07_metric) if npos else float("nan")))
    return out


def evaluate_voc(records, predictions, class_names, use_07_metric=False):
    """VOC metrics in Detectron2's shape and scale (percent).

    Args:
        records: ground truth as resdet/Detectron2 dataset dicts (0-based boxes in any BoxMode,
            optional "difficult" flag per object); every record is a test image.
        predictions: [{"image_id", "category_id" (contiguous), "bbox" (0-based XYXY_ABS), "score"}].

    Returns:
        {"bbox": {"AP50", "AP50-<class>", "AP" (mean over IoU .50:.05:.95), "AP75"}}. Classes
        with no non-difficult object are NaN and left out of the means.
    """

    def devkit(box):  # the inverse of the loader's 1-based -> 0-based shift
        return [box[0] + 1.0, box[1] + 1.0, box[2], box[3]]

    aps = np.full((len(class_names), len(IOU_THRESHOLDS)), np.nan)
    dets = defaultdict(list)
    for p in predictions:
        dets[p["category_id"]].append((p["image_id"], p["score"], devkit(p["bbox"])))
    for c, name in enumerate(class_names):
        gt = {}
        for r in records:
            objs = [a for a in r["annotations"] if a["category_id"] == c]
            boxes = [
                devkit(BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)) for a in objs
            ]
            gt[r["image_id"]] = (
                np.array(boxes, dtype=float).reshape(-1, 4),
                np.array([bool(a.get("difficult", False)) for a in objs], dtype=bool),
            )
        aps[c] = [ap for _, _, ap in voc_eval(gt, dets[c], IOU_THRESHOLDS, use_07_metric)]
    missing = [n for n, a in zip(class_names, aps[:, 0]) if np.isnan(a)]
    if missing:
        logger.warning("no ground-truth objects of %s: their AP is NaN and not averaged", missing)
    with np.errstate(invalid="ignore"):
        mean = (
            np.nanmean(aps, axis=0) * 100
            if len(missing) < len(class_names)
            else np.full(aps.shape[1], np.nan)
        )
    res = {"AP50": float(mean[0]), "AP": float(mean.mean()), "AP75": float(mean[5])}
    res.update({f"AP50-{n}": float(a * 100) for n, a in zip(class_names, aps[:, 0])})
    return {"bbox": res}

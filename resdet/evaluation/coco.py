"""COCO box AP with faster-coco-eval (pycocotools' COCOeval semantics, C++ speed)."""

import logging

import numpy as np
from detectron2.structures import BoxMode
from faster_coco_eval import COCO, COCOeval_faster

__all__ = ["evaluate_coco", "records_to_coco", "coco_image_ids"]

logger = logging.getLogger(__name__)

_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def coco_image_ids(records):
    """The COCO image id of each record: its own ``image_id`` when those are distinct
    integers (COCO data: a results file in the dataset's ids scores as it is), else its
    index (VOC ids are file names)."""
    ids = [r["image_id"] for r in records]
    if all(isinstance(i, int) and not isinstance(i, bool) for i in ids) and len(set(ids)) == len(
        ids
    ):
        return ids
    return list(range(len(records)))


def records_to_coco(records, class_names, category_ids=None):
    """COCO ground truth from dataset dicts: what the COCO metric scores, for every dataset
    (resdet's checked records, never the raw file, whose duplicate ids or missing areas
    would change the score).

    Image ids are :func:`coco_image_ids`, category ids ``category_ids`` (one per class of
    ``class_names``, e.g. the dataset's own; default 1..K), annotation ids 1..N. ``area``
    is the record's (COCO's segment area, kept by the loader) or else the box area;
    "difficult" (VOC) objects become crowd regions, which COCOeval ignores.
    """
    category_ids = list(category_ids or range(1, len(class_names) + 1))
    image_ids = coco_image_ids(records)
    anns = []
    for image_id, r in zip(image_ids, records):
        for a in r["annotations"]:
            x0, y0, x1, y1 = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[a["category_id"]],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": a.get("area", (x1 - x0) * (y1 - y0)),
                    "iscrowd": int(a.get("iscrowd", 0) or a.get("difficult", False)),
                }
            )
    return {
        "images": [
            {"id": i, "width": r["width"], "height": r["height"]}
            for i, r in zip(image_ids, records)
        ],
        "categories": [{"id": c, "name": n} for c, n in zip(category_ids, class_names)],
        "annotations": anns,
    }


# COCOeval's area ranges for APs, APm, APl
_AREAS = {"APs": (0, 32**2), "APm": (32**2, 96**2), "APl": (96**2, float("inf"))}


def _no_predictions(gt, class_names):
    """What COCOeval would give for an empty result list (loadRes refuses one): AP 0 where
    there is something to find, NaN where there is nothing (no object of that class or size)."""
    anns = [a for a in gt.dataset["annotations"] if not a.get("iscrowd", 0)]
    cat_ids = sorted(c["id"] for c in gt.dataset["categories"])
    zero_or_nan = lambda found: 0.0 if found else float("nan")  # noqa: E731
    res = {k: zero_or_nan(anns) for k in ("AP", "AP50", "AP75")}
    res.update(
        {
            k: zero_or_nan([a for a in anns if lo <= a["area"] <= hi])
            for k, (lo, hi) in _AREAS.items()
        }
    )
    res.update(
        {
            f"AP-{name}": zero_or_nan([a for a in anns if a["category_id"] == cid])
            for cid, name in zip(cat_ids, class_names)
        }
    )
    logger.warning("no predictions at all: AP is 0 for every class with ground truth")
    return res


def evaluate_coco(coco_gt, results, class_names):
    """AP, AP50, AP75, APs/m/l and per-class AP (percent) of COCO-format ``results``.

    Args:
        coco_gt: a COCO JSON path or dict; its sorted category ids are ``class_names``' order.
        results: COCO results [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}].

    Returns:
        {"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>"}}, like Detectron2's
        COCOEvaluator (NaN where COCOeval has nothing to measure).
    """
    gt = COCO(coco_gt, print_function=logger.debug)
    if not results:
        return {"bbox": _no_predictions(gt, class_names)}
    # loadRes adds keys to the dicts it gets; give it copies
    dt = gt.loadRes([dict(r) for r in results])
    ev = COCOeval_faster(gt, dt, "bbox", print_function=logger.debug)
    ev.run()
    res = {
        k: float(ev.stats[i] * 100) if ev.stats[i] >= 0 else float("nan")
        for i, k in enumerate(_STATS)
    }
    precision = ev.eval["precision"]  # [iou, recall, class, area range, max dets]
    for k, name in enumerate(class_names):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        res[f"AP-{name}"] = float(np.mean(p) * 100) if p.size else float("nan")
    return {"bbox": res}

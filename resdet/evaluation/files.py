"""Scoring a predictions file (or list) against ground truth given as a path or a dataset
spec, with no model: what ``resdet.evaluate_predictions`` and tools/evaluate.py do."""

import json
from pathlib import Path

from ..errors import ConfigError

__all__ = ["evaluate_predictions"]


def _ground_truth(gt, split=None):
    """resdet.evaluation.GroundTruth for a dataset given as documented above."""
    from detectron2.data import DatasetCatalog

    from ..data import load_voc_folder
    from .evaluator import GroundTruth

    if isinstance(gt, (tuple, list)):
        gt = {"json": gt[0], "images": gt[1]}
    if isinstance(gt, dict):
        if "json" in gt:
            return GroundTruth.from_path(gt["json"])
        if "voc" not in gt:
            raise ConfigError(f"gt {gt!r}: a dict needs 'json' or 'voc'")
        # the test side of the folder (its held-out part with "holdout"): what was predicted
        records, meta = load_voc_folder(
            gt["voc"],
            gt.get("split") or None,
            holdout=float(gt.get("holdout") or 0),
            part="test",
            check_images=False,
        )
        classes = meta["thing_classes"]
        return GroundTruth(records, classes, "voc", list(range(1, len(classes) + 1)))
    if str(gt) in DatasetCatalog.list():
        return GroundTruth.from_dataset(str(gt))
    return GroundTruth.from_path(gt, split)


def evaluate_predictions(gt, pred, metric="auto", *, split=None, output=None) -> dict:
    """Score a predictions file against ground truth with no model (tools/evaluate.py).

    ``gt``: a COCO JSON, a VOC folder (``split``: an ImageSets/Main name; default test.txt
    when present, else every annotated image), a registered dataset name, or a dataset
    dict as in this module's docstring. ``pred``: a COCO results JSON, or for VOC ground
    truth a folder of devkit files. ``metric``: auto, coco, voc07 or voc. Returns
    ``{"bbox": {...}}`` in percent, written to ``output`` (JSON) when given."""
    from ..io import atomic_write
    from .evaluator import CATEGORIES_FILE, categories, load_predictions, write_metrics
    from .evaluator import evaluate_predictions as score

    truth = _ground_truth(gt, split)
    results = score(truth, load_predictions(pred, truth), metric)
    if output:
        write_metrics(results, output)
        # which class each category id of the predictions was scored as (VOC ids are positions)
        with atomic_write(Path(output).parent / CATEGORIES_FILE, "w") as f:
            json.dump(categories(truth), f, indent=1)
    return results

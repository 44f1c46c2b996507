"""Scoring predictions against ground truth with no model: what ``tools/evaluate.py`` and
``resdet.evaluate_predictions`` do."""

import os

from detectron2.data import DatasetCatalog

from ..data.datasets import load_voc_folder
from ..errors import ConfigError, OutputError
from .evaluator import (
    GroundTruth,
    categories_file,
    evaluate_predictions,
    load_predictions,
    write_metrics,
)

__all__ = ["ground_truth", "evaluate_files"]


def ground_truth(gt, split=None) -> GroundTruth:
    """The :class:`GroundTruth` of a dataset given as in ``resdet.api``'s docstring: a COCO
    JSON, a VOC folder (``split``: an ImageSets/Main name; default test.txt when present,
    else every annotated image), a registered dataset name, ``(json, images)``,
    ``{"json": ..., "images": ...}`` or ``{"voc": folder, "split"/"holdout": ...}`` (the
    held-out part: what a model trained on the rest predicted). No images are needed."""
    if isinstance(gt, GroundTruth):
        return gt
    if split is not None and not (isinstance(gt, (str, os.PathLike)) and os.path.isdir(gt)):
        # a split names ImageSets/Main/<split>.txt; anything else would evaluate on all
        # images without a word
        raise ConfigError(
            f"split {split!r}: applies to a VOC folder's ImageSets/Main, and {gt} is not one;"
            f" leave the split out (for a VOC dataset given as a dict: {{'voc': ..., "
            f"'split': ...}})"
        )
    if isinstance(gt, (tuple, list)):
        if len(gt) != 2:
            raise ConfigError(f"gt {gt!r}: a COCO dataset is (json_file, image_folder)")
        gt = {"json": gt[0], "images": gt[1]}
    if isinstance(gt, dict):
        if "json" in gt:
            return GroundTruth.from_path(gt["json"])
        if "voc" not in gt:
            raise ConfigError(f"gt {gt!r}: a dict needs 'json' or 'voc'")
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


def _check_output_is_no_input(output, gt, pred):
    """The metrics must not be written over a file the evaluation reads (a predictions
    file given as --output too, by a slip of the shell history): it would be lost."""
    inputs = [x for x in (gt, pred) if isinstance(x, (str, os.PathLike))]
    inputs += [categories_file(x) for x in list(inputs) if str(x).endswith(".json")]
    out = os.path.realpath(output)
    for path in inputs:
        if os.path.realpath(path) == out:
            raise OutputError(
                f"{output}: is also an input of this evaluation ({path}); write the metrics "
                f"to another file"
            )


def evaluate_files(gt, pred, metric="auto", split=None, *, output=None) -> dict:
    """Score predictions against ground truth, with no model.

    Args:
        gt: a dataset as :func:`ground_truth` takes it.
        pred: a COCO results JSON (a list, or the COCO dict form with class names and file
            names inside), the same as a list/dict in memory, or for VOC ground truth a
            folder of devkit files (:func:`~resdet.evaluation.load_predictions`).
        metric: auto, coco, voc07 or voc.
        output: write the metrics here as JSON (their per-class keys name the classes).

    Returns:
        ``{"bbox": {...}}`` in percent.
    """
    if output:
        _check_output_is_no_input(output, gt, pred)
    truth = ground_truth(gt, split)
    results = evaluate_predictions(truth, load_predictions(pred, truth), metric)
    if output:
        write_metrics(results, os.fspath(output))
    return results

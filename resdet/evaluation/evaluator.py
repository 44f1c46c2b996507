"""One evaluation path for the trainer (a Detectron2 DatasetEvaluator) and for files.

Both end in :func:`evaluate_predictions` over the same two inputs: ground truth
(:class:`GroundTruth`, from a registered dataset or from a COCO JSON / VOC folder) and
predictions as ``{"image_id", "category_id" (contiguous), "bbox" (0-based XYXY_ABS),
"score"}`` dicts (from model outputs, a COCO results JSON or devkit result files).
"""

import itertools
import json
import logging
import math
import os
import re
from dataclasses import dataclass
from typing import List, Optional

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table
from tabulate import tabulate

from ..data.datasets import DatasetError, is_finite_number, load_coco_json, load_voc_folder
from ..io import atomic_write
from .coco import evaluate_coco, records_to_coco
from .voc import evaluate_voc

__all__ = [
    "METRICS",
    "CATEGORIES_FILE",
    "categories",
    "GroundTruth",
    "DetectionEvaluator",
    "build_evaluator",
    "evaluate_files",
    "evaluate_predictions",
    "load_predictions",
    "resolve_metric",
    "format_results",
    "write_metrics",
]

logger = logging.getLogger(__name__)

METRICS = ("coco", "voc07", "voc")
_DEVKIT_FILE = re.compile(r"comp\d+_det_[^_]+_(.+)\.txt")


@dataclass
class GroundTruth:
    """What evaluation needs to know about a test set."""

    records: List[dict]
    class_names: List[str]
    kind: str  # "coco" or "voc": which layout the data came in
    # category id in prediction files for each contiguous class (COCO: the dataset's ids; VOC: 1..K)
    file_category_ids: List[int]
    json_file: Optional[str] = (
        None  # the COCO file itself, the official ground truth for the coco metric
    )

    @classmethod
    def from_dataset(cls, name):
        meta = MetadataCatalog.get(name)
        classes = list(meta.thing_classes)
        if meta.get("evaluator_type") == "pascal_voc":
            return cls(DatasetCatalog.get(name), classes, "voc", list(range(1, len(classes) + 1)))
        id_map = meta.get("thing_dataset_id_to_contiguous_id") or {
            c + 1: c for c in range(len(classes))
        }
        return cls(
            DatasetCatalog.get(name),
            classes,
            "coco",
            sorted(id_map, key=id_map.get),
            meta.get("json_file"),
        )

    @classmethod
    def from_path(cls, path, split=None):
        """A COCO JSON file, or a VOC folder (``split``: an ImageSets/Main name; default
        "test" when that file exists, else every annotated image). No images needed."""
        path = str(path)
        if os.path.isdir(path):
            if split is None and os.path.isfile(
                os.path.join(path, "ImageSets", "Main", "test.txt")
            ):
                split = "test"
            records, meta = load_voc_folder(path, split, check_images=False)
            logger.info(
                "%s: evaluating on %s",
                path,
                f"split '{split}'" if split else "every annotated image",
            )
            return cls(
                records,
                meta["thing_classes"],
                "voc",
                list(range(1, len(meta["thing_classes"]) + 1)),
            )
        records, meta = load_coco_json(path)
        id_map = meta["thing_dataset_id_to_contiguous_id"]
        return cls(records, meta["thing_classes"], "coco", list(id_map), path)


def _check_metric(metric):
    if metric not in ("auto",) + METRICS:
        raise ValueError(f"unknown metric '{metric}'; allowed: auto, {', '.join(METRICS)}")
    return metric


def resolve_metric(metric, kind):
    """The metric "auto" stands for: voc07 for VOC-layout data (``kind`` "voc", the
    paper's PASCAL VOC 2007 protocol), coco otherwise."""
    if _check_metric(metric) == "auto":
        return "voc07" if kind == "voc" else "coco"
    return metric


def evaluate_predictions(gt: GroundTruth, predictions, metric="auto"):
    """Metrics of ``predictions`` against ``gt`` in Detectron2's shape, in percent."""
    metric = resolve_metric(metric, gt.kind)
    if metric != "coco":
        return evaluate_voc(
            gt.records, predictions, gt.class_names, use_07_metric=metric == "voc07"
        )
    if gt.json_file:
        return evaluate_coco(gt.json_file, to_coco_results(predictions, gt), gt.class_names)
    index = {r["image_id"]: i for i, r in enumerate(gt.records)}
    results = [dict(r, image_id=index[r["image_id"]]) for r in to_coco_results(predictions, gt)]
    return evaluate_coco(records_to_coco(gt.records, gt.class_names), results, gt.class_names)


def to_coco_results(predictions, gt):
    """Predictions as a COCO results list in the ground truth's own image and category ids."""
    return [
        {
            "image_id": p["image_id"],
            "category_id": gt.file_category_ids[p["category_id"]],
            "bbox": [
                p["bbox"][0],
                p["bbox"][1],
                p["bbox"][2] - p["bbox"][0],
                p["bbox"][3] - p["bbox"][1],
            ],
            "score": p["score"],
        }
        for p in predictions
    ]


def load_predictions(path, gt: GroundTruth):
    """Read a COCO results JSON, or (VOC ground truth) a folder of devkit result files
    ``comp<N>_det_<set>_<class>.txt`` with lines ``image_id score xmin ymin xmax ymax``.
    Every entry is checked against ``gt``; the first bad one is a one-line DatasetError."""
    path = str(path)
    image_ids = {r["image_id"] for r in gt.records}
    if os.path.isdir(path):
        return _load_devkit_results(path, gt, image_ids)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such predictions file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: malformed JSON: {e}") from None
    if not isinstance(data, list):
        raise DatasetError(
            f"{path}: a COCO results file is a list of detections, got {type(data).__name__}"
        )
    _check_categories(path, gt)
    contiguous = {cid: c for c, cid in enumerate(gt.file_category_ids)}
    out = []
    for i, p in enumerate(data):
        if not isinstance(p, dict):
            raise DatasetError(f"{path}: entry {i}: not an object")
        if p.get("image_id") not in image_ids:
            raise DatasetError(
                f"{path}: entry {i}: image_id {p.get('image_id')!r} is not in the ground truth"
            )
        if p.get("category_id") not in contiguous:
            raise DatasetError(
                f"{path}: entry {i}: category_id {p.get('category_id')!r} is not a ground-truth "
                f"category (ids {min(contiguous)}..{max(contiguous)})"
            )
        box, score = p.get("bbox"), p.get("score")
        if not (
            isinstance(box, list) and len(box) == 4 and all(map(is_finite_number, box + [score]))
        ):
            raise DatasetError(
                f"{path}: entry {i}: needs 'bbox' [x, y, w, h] and 'score' as numbers"
            )
        if box[2] <= 0 or box[3] <= 0:
            raise DatasetError(
                f"{path}: entry {i}: box {box} has width or height <= 0 ([x, y, w, h] "
                "is expected; a box given as [x0, y0, x1, y1] must be converted)"
            )
        out.append(
            {
                "image_id": p["image_id"],
                "category_id": contiguous[p["category_id"]],
                "bbox": [box[0], box[1], box[0] + box[2], box[1] + box[3]],
                "score": score,
            }
        )
    return out


CATEGORIES_FILE = "categories.json"


def categories(gt: GroundTruth):
    """The category ids of prediction files and their class names, as a COCO
    ``categories`` list: written beside every predictions.json (for VOC data the ids are
    1..K in sorted class-name order, so one renamed or added class shifts them)."""
    return [{"id": cid, "name": name} for cid, name in zip(gt.file_category_ids, gt.class_names)]


def _check_categories(path, gt):
    """When ``categories.json`` stands beside a predictions file, its ids must mean the
    ground truth's classes: otherwise every score would silently go to the wrong class."""
    side = os.path.join(os.path.dirname(os.path.abspath(path)), CATEGORIES_FILE)
    if not os.path.isfile(side):
        return
    try:
        with open(side, encoding="utf-8") as f:
            theirs = {c["id"]: c["name"] for c in json.load(f)}
    except (ValueError, TypeError, KeyError) as e:
        raise DatasetError(f"{side}: not a list of {{'id', 'name'}} categories: {e}") from None
    ours = {c["id"]: c["name"] for c in categories(gt)}
    diff = [
        f"id {i}: {theirs.get(i)!r} vs {ours.get(i)!r}"
        for i in sorted(set(theirs) | set(ours))
        if theirs.get(i) != ours.get(i)
    ]
    if diff:
        raise DatasetError(
            f"{path}: its category ids ({side}) mean other classes than the ground "
            f"truth's: {'; '.join(diff[:4])} (predictions vs ground truth); fix the "
            "class names so both sides have the same classes"
        )


def _load_devkit_results(folder, gt, image_ids):
    if gt.kind != "voc":
        raise DatasetError(
            f"{folder}: devkit result files need VOC ground truth; give a COCO results JSON"
        )
    classes = {n: c for c, n in enumerate(gt.class_names)}
    out = []
    for name in sorted(os.listdir(folder)):
        f = os.path.join(folder, name)
        m = _DEVKIT_FILE.fullmatch(name)
        if not m:
            raise DatasetError(
                f"{f}: not a devkit result file name (comp<N>_det_<set>_<class>.txt)"
            )
        if m.group(1) not in classes:
            raise DatasetError(f"{f}: class '{m.group(1)}' is not one of {gt.class_names}")
        with open(f) as fh:
            for n, line in enumerate(fh, 1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    values = [float(v) for v in fields[1:]]
                except ValueError:
                    values = []
                if len(values) != 5 or not all(map(math.isfinite, values)):
                    raise DatasetError(
                        f"{f}: line {n}: expected 'image_id score xmin ymin xmax ymax', "
                        f"got {line.strip()!r}"
                    )
                score, *box = values
                if box[2] < box[0] or box[3] < box[1]:
                    raise DatasetError(f"{f}: line {n}: box {box} has xmax < xmin or ymax < ymin")
                if fields[0] not in image_ids:
                    raise DatasetError(
                        f"{f}: line {n}: image '{fields[0]}' is not in the ground truth"
                    )
                out.append(
                    {
                        "image_id": fields[0],
                        "category_id": classes[m.group(1)],
                        "bbox": [box[0] - 1.0, box[1] - 1.0, box[2], box[3]],
                        "score": score,
                    }
                )
    return out


def format_results(results):
    """The headline metrics as one table, per-class AP as a second."""
    r = results["bbox"]
    head = {k: v for k, v in r.items() if "-" not in k}
    per_class = [(k.split("-", 1)[1], v) for k, v in r.items() if "-" in k]
    text = create_small_table(head)
    if per_class:
        ncol = min(6, 2 * len(per_class))
        flat = list(itertools.chain(*per_class))
        rows = itertools.zip_longest(*[flat[i::ncol] for i in range(ncol)])
        label = next(k for k in r if "-" in k).split("-", 1)[0]
        text += "\n\n" + tabulate(
            rows,
            headers=["category", label] * (ncol // 2),
            tablefmt="pipe",
            floatfmt=".3f",
            numalign="left",
        )
    return text


def write_metrics(results, path):
    """metrics.json, atomically; NaN (nothing to measure) is written as null."""
    clean = {
        task: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
        for task, m in results.items()
    }
    with atomic_write(path, "w") as f:
        json.dump(clean, f, indent=2)


class DetectionEvaluator(DatasetEvaluator):
    """COCO or VOC metrics for a registered dataset, for Detectron2's inference_on_dataset.

    Writes ``output_dir/metrics.json`` and ``output_dir/predictions.json`` (a COCO results
    file in the dataset's ids, which ``tools/evaluate.py`` re-evaluates exactly).
    """

    def __init__(self, dataset_name, metric="auto", output_dir=None, distributed=True):
        self._dataset_name = dataset_name
        self._metric = _check_metric(metric)
        self._output_dir = output_dir
        self._distributed = distributed
        self.reset()

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            for box, score, cls in zip(
                inst.pred_boxes.tensor.tolist(), inst.scores.tolist(), inst.pred_classes.tolist()
            ):
                self._predictions.append(
                    {"image_id": inp["image_id"], "category_id": cls, "bbox": box, "score": score}
                )

    def evaluate(self):
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        gt = GroundTruth.from_dataset(self._dataset_name)
        results = evaluate_predictions(gt, predictions, self._metric)
        logger.info(
            "Evaluation of %s (%s):\n%s",
            self._dataset_name,
            resolve_metric(self._metric, gt.kind),
            format_results(results),
        )
        if self._output_dir:
            with atomic_write(os.path.join(self._output_dir, "predictions.json"), "w") as f:
                json.dump(to_coco_results(predictions, gt), f)
            with atomic_write(os.path.join(self._output_dir, CATEGORIES_FILE), "w") as f:
                json.dump(categories(gt), f, indent=1)
            write_metrics(results, os.path.join(self._output_dir, "metrics.json"))
        return results


def build_evaluator(cfg, dataset_name, output_dir):
    """The evaluator for ``dataset_name`` with the metric of RESDET.EVAL.METRIC."""
    return DetectionEvaluator(dataset_name, cfg.RESDET.EVAL.METRIC, output_dir)


def evaluate_files(gt, pred, metric="auto", split=None):
    """Evaluate a predictions file/folder against a COCO JSON or VOC folder (no model)."""
    truth = GroundTruth.from_path(gt, split)
    return evaluate_predictions(truth, load_predictions(pred, truth), metric)

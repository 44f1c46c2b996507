"""One evaluation path for the trainer (a Detectron2 DatasetEvaluator) and for files.

Both end in :func:`evaluate_predictions` over the same two inputs: ground truth
(:class:`GroundTruth`, from a registered dataset or from a COCO JSON / VOC folder) and
predictions as ``{"image_id", "category_id" (contiguous), "bbox" (0-based XYXY_ABS),
"score"}`` dicts (from model outputs, a COCO results JSON or devkit result files).

The class names of a COCO results list ``X.json`` travel with it in ``X.categories.json``
(:func:`categories_file`), or inside it in the COCO dict form; never in a file per folder,
which another run's results in the same folder would overwrite or contradict.
"""

import itertools
import json
import logging
import math
import os
import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import List

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table
from tabulate import tabulate

from ..data.datasets import (
    DatasetError,
    is_finite_number,
    load_coco_json,
    load_voc_folder,
    read_json,
)
from ..errors import one_line
from ..io import atomic_write
from .coco import coco_image_ids, evaluate_coco, records_to_coco
from .voc import evaluate_voc

__all__ = [
    "METRICS",
    "categories",
    "categories_file",
    "GroundTruth",
    "DetectionEvaluator",
    "build_evaluator",
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

    @classmethod
    def from_dataset(cls, name):
        records = DatasetCatalog.get(name)  # first: Detectron2's loaders set thing_classes
        meta = MetadataCatalog.get(name)
        classes = list(meta.thing_classes)
        if meta.get("evaluator_type") == "pascal_voc":
            return cls(records, classes, "voc", list(range(1, len(classes) + 1)))
        id_map = meta.get("thing_dataset_id_to_contiguous_id") or {
            c + 1: c for c in range(len(classes))
        }
        no_area = sum("area" not in a for r in records for a in r["annotations"])
        if no_area:  # Detectron2's own COCO loader drops 'area'; resdet's keeps it
            logger.warning(
                "'%s': %d ground-truth objects have no COCO 'area' (registered with a"
                " loader that drops it?): their box areas decide APs/APm/APl",
                name,
                no_area,
            )
        return cls(records, classes, "coco", sorted(id_map, key=id_map.get))

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
        return cls(records, meta["thing_classes"], "coco", list(id_map))


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
    """Metrics of ``predictions`` against ``gt`` in Detectron2's shape, in percent. COCO AP
    is computed on ``gt.records`` (:func:`records_to_coco`), in the dataset's image and
    category ids."""
    metric = resolve_metric(metric, gt.kind)
    if metric != "coco":
        return evaluate_voc(
            gt.records, predictions, gt.class_names, use_07_metric=metric == "voc07"
        )
    index = dict(zip((r["image_id"] for r in gt.records), coco_image_ids(gt.records)))
    results = [dict(r, image_id=index[r["image_id"]]) for r in to_coco_results(predictions, gt)]
    truth = records_to_coco(gt.records, gt.class_names, gt.file_category_ids)
    return evaluate_coco(truth, results, gt.class_names)


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


def load_predictions(pred, gt: GroundTruth):
    """Predictions checked against ``gt``, in the form :func:`evaluate_predictions` takes.

    ``pred`` is one of:

    - a COCO results list ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``
      in the ground truth's image and category ids (a JSON file, or the list itself, as
      Detectron2's and pycocotools' users hold it); for a file ``X.json``,
      ``X.categories.json`` (:func:`categories_file`), when it exists, must give its
      category ids the ground truth's class names;
    - the COCO dict form ``{"images", "categories", "annotations"}`` (file or dict), the
      annotations being scored detections: classes are matched by name, images by
      ``file_name`` (else their ids must be the ground truth's);
    - (VOC ground truth) a folder of devkit result files ``comp<N>_det_<set>_<class>.txt``
      with lines ``image_id score xmin ymin xmax ymax``.

    Every entry is checked; the first bad one is a one-line DatasetError, and so are boxes
    that look like [x0, y0, x1, y1] instead of COCO's [x, y, w, h].
    """
    path = os.fspath(pred) if isinstance(pred, (str, os.PathLike)) else None
    if path is None:
        source, data = "the predictions (in memory)", pred
    elif os.path.isdir(path):
        return _load_devkit_results(path, gt, {r["image_id"] for r in gt.records})
    else:
        source, data = path, read_json(path, "predictions file")
    if isinstance(data, dict) and all(k in data for k in ("images", "categories", "annotations")):
        return _check_results(_from_coco_dict(data, source, gt), source, gt, "annotations[{}]")
    if not isinstance(data, (list, tuple)):
        raise DatasetError(
            f"{source}: a COCO results file is a list of detections (or a dict with 'images',"
            f" 'categories' and scored 'annotations'), got {type(data).__name__}"
        )
    if path is not None:
        _check_categories(path, gt)
    return _check_results(data, source, gt, "entry {}")


def _known(value, ids):
    """``value in ids``, False for a value that cannot be a key (a list from JSON)."""
    return isinstance(value, Hashable) and value in ids


def _has_id(entry):
    return "id" in entry and isinstance(entry["id"], Hashable)


def _check_results(data, source, gt, entry):
    """COCO results (the ground truth's ids, [x, y, w, h]) checked, in resdet's form."""
    image_ids = {r["image_id"] for r in gt.records}
    contiguous = {cid: c for c, cid in enumerate(gt.file_category_ids)}
    out = []
    for i, p in enumerate(data):
        where = f"{source}: {entry.format(i)}"
        if not isinstance(p, dict):
            raise DatasetError(f"{where}: not an object")
        if not _known(p.get("image_id"), image_ids):
            raise DatasetError(
                f"{where}: image_id {p.get('image_id')!r} is not in the ground truth"
            )
        if not _known(p.get("category_id"), contiguous):
            raise DatasetError(
                f"{where}: category_id {p.get('category_id')!r} is not a ground-truth "
                f"category (ids {min(contiguous)}..{max(contiguous)})"
            )
        box, score = p.get("bbox"), p.get("score")
        box = list(box) if isinstance(box, (list, tuple)) else box
        if not (
            isinstance(box, list) and len(box) == 4 and all(map(is_finite_number, box + [score]))
        ):
            raise DatasetError(f"{where}: needs 'bbox' [x, y, w, h] and 'score' as numbers")
        if box[2] <= 0 or box[3] <= 0:
            raise DatasetError(
                f"{where}: box {box} has width or height <= 0 ([x, y, w, h] "
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
    _check_not_xyxy(out, source, gt, entry)
    _check_not_normalized(out, source, gt, entry)
    return out


def _check_not_normalized(results, source, gt, entry):
    """Refuse boxes in [0, 1] image units (YOLO's labels and outputs, torchvision's
    ``normalize=True``): read as pixels they all fit in the image's top-left pixel and
    score 0, with no error. A detector's boxes on images larger than a few pixels never
    all do."""
    sizes = {r["image_id"]: (r["width"], r["height"]) for r in gt.records}
    if not results or any(
        p["bbox"][2] > 1.0 or p["bbox"][3] > 1.0 or min(sizes[p["image_id"]]) <= 4 for p in results
    ):
        return
    x, y, x1, y1 = results[0]["bbox"]
    width, height = sizes[results[0]["image_id"]]
    raise DatasetError(
        f"{source}: the boxes look normalized to [0, 1]: all {len(results)} end within the"
        f" top-left pixel of their image (first: {entry.format(0)}, bbox"
        f" {[x, y, x1 - x, y1 - y]} on a {width}x{height} image); COCO boxes are in pixels:"
        f" multiply x and w by the image width, y and h by its height"
    )


# how far (a share of the image's width or height) a box must reach past the image's right
# or bottom edge to be taken as an [x0, y0, x1, y1] box read as [x, y, w, h]
XYXY_MARGIN = 0.1


def _check_not_xyxy(results, source, gt, entry):
    """Refuse boxes given as [x0, y0, x1, y1]: read as [x, y, w, h] they score low, with no
    error. Such a file is told from the data: every box then has w >= x and h >= y (x1 >= x0),
    and a box of an object in the right or bottom part of its image reaches far outside
    it (x0 + x1 > width), which a detector's (clipped) box never does."""
    sizes = {r["image_id"]: (r["width"], r["height"]) for r in gt.records}
    far = []
    for i, p in enumerate(results):
        x, y, x1, y1 = p["bbox"]
        w, h = x1 - x, y1 - y
        if w < x or h < y:
            return  # impossible for [x0, y0, x1, y1] boxes
        width, height = sizes[p["image_id"]]
        if x1 > (1 + XYXY_MARGIN) * width or y1 > (1 + XYXY_MARGIN) * height:
            far.append(i)
    if far:
        i = far[0]
        x, y, x1, y1 = results[i]["bbox"]
        width, height = sizes[results[i]["image_id"]]
        raise DatasetError(
            f"{source}: the boxes look like [x0, y0, x1, y1], not COCO's [x, y, width,"
            f" height]: read as [x, y, w, h], {len(far)} of {len(results)} reach far outside"
            f" their image (first: {entry.format(i)}, bbox {[x, y, x1 - x, y1 - y]} on a"
            f" {width}x{height} image); convert each box to [x0, y0, x1 - x0, y1 - y0]"
        )


def _file_name_index(gt):
    """Ground-truth image id by file name: as recorded, and by base name where unique."""
    index = {r["file_name"]: r["image_id"] for r in gt.records}
    base = {}
    for r in gt.records:
        base.setdefault(os.path.basename(r["file_name"]), []).append(r["image_id"])
    index.update({name: ids[0] for name, ids in base.items() if len(ids) == 1})
    return index


def _from_coco_dict(data, source, gt):
    """The scored annotations of a COCO dict in the ground truth's image and category ids:
    categories matched by name, images by file_name (by id where an image has none)."""
    for key in ("images", "categories", "annotations"):
        if not isinstance(data[key], list):
            raise DatasetError(f"{source}: '{key}' must be a list")
    by_name = {n: cid for n, cid in zip(gt.class_names, gt.file_category_ids)}
    category = {}
    for i, c in enumerate(data["categories"]):
        if not (isinstance(c, dict) and _has_id(c) and isinstance(c.get("name"), str)):
            raise DatasetError(f"{source}: categories[{i}]: needs an 'id' and a string 'name'")
        if c["name"] not in by_name:
            raise DatasetError(
                f"{source}: categories[{i}]: class {c['name']!r} is not a ground-truth class"
                f" ({', '.join(gt.class_names[:8])}{', ...' if len(gt.class_names) > 8 else ''})"
            )
        category[c["id"]] = by_name[c["name"]]
    by_file, gt_ids = _file_name_index(gt), {r["image_id"] for r in gt.records}
    image = {}
    for i, im in enumerate(data["images"]):
        if not (isinstance(im, dict) and _has_id(im)):
            raise DatasetError(f"{source}: images[{i}]: needs an 'id'")
        name = im.get("file_name")
        if name is not None:
            name = str(name).replace("\\", "/")
            found = by_file.get(name, by_file.get(os.path.basename(name)))
            if found is None:
                raise DatasetError(
                    f"{source}: images[{i}]: file_name {name!r} is not an image of the ground truth"
                )
            image[im["id"]] = found
        elif im["id"] in gt_ids:
            image[im["id"]] = im["id"]
        else:
            raise DatasetError(
                f"{source}: images[{i}]: id {im['id']!r} is not a ground-truth image id, and"
                " no 'file_name' says which image it is"
            )
    out = []
    for i, a in enumerate(data["annotations"]):
        if not isinstance(a, dict):
            raise DatasetError(f"{source}: annotations[{i}]: not an object")
        if "score" not in a:
            raise DatasetError(
                f"{source}: annotations[{i}] has no 'score': this is ground truth, not"
                " predictions (each detection needs its score)"
            )
        if not _known(a.get("image_id"), image):
            raise DatasetError(
                f"{source}: annotations[{i}]: image_id {a.get('image_id')!r} is not in its 'images'"
            )
        if not _known(a.get("category_id"), category):
            raise DatasetError(
                f"{source}: annotations[{i}]: category_id {a.get('category_id')!r} is not in"
                " its 'categories'"
            )
        out.append(dict(a, image_id=image[a["image_id"]], category_id=category[a["category_id"]]))
    return out


def categories_file(predictions_file):
    """Where the class names of a COCO results list ``X.json`` are: ``X.categories.json``."""
    p = Path(predictions_file)
    stem = p.name[: -len(".json")] if p.name.endswith(".json") else p.name
    return p.with_name(stem + ".categories.json")


def categories(gt: GroundTruth):
    """The category ids of prediction files and their class names, as a COCO
    ``categories`` list: written beside every predictions.json (for VOC data the ids are
    1..K in sorted class-name order, so one renamed or added class shifts them)."""
    return [{"id": cid, "name": name} for cid, name in zip(gt.file_category_ids, gt.class_names)]


def _check_categories(path, gt):
    """When ``X.categories.json`` stands beside the predictions ``X.json``, its ids must
    mean the ground truth's classes: otherwise every score would silently go to the wrong
    class."""
    side = categories_file(path)
    if not side.is_file():
        return
    try:
        theirs = {c["id"]: c["name"] for c in read_json(side)}
    except (TypeError, KeyError) as e:
        raise DatasetError(
            f"{side}: not a list of {{'id', 'name'}} categories: {one_line(e)}"
        ) from None
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
    file in the dataset's ids, which ``tools/evaluate.py`` re-evaluates exactly) with its
    class names in ``predictions.categories.json``.
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
            path = os.path.join(self._output_dir, "predictions.json")
            with atomic_write(path, "w") as f:
                json.dump(to_coco_results(predictions, gt), f)
            with atomic_write(categories_file(path), "w") as f:
                json.dump(categories(gt), f, indent=1)
            write_metrics(results, os.path.join(self._output_dir, "metrics.json"))
        return results


def build_evaluator(cfg, dataset_name, output_dir):
    """The evaluator for ``dataset_name`` with the metric of RESDET.EVAL.METRIC."""
    return DetectionEvaluator(dataset_name, cfg.RESDET.EVAL.METRIC, output_dir)

"""Detection evaluation: COCO AP@[.5:.95] (faster-coco-eval) and PASCAL VOC AP50 (devkit
11-point and area), in Detectron2's result shape and scale (percent, under "bbox")."""

from .coco import coco_image_ids, evaluate_coco, records_to_coco  # noqa: F401
from .evaluator import (  # noqa: F401
    METRICS,
    DetectionEvaluator,
    GroundTruth,
    build_evaluator,
    categories,
    categories_file,
    evaluate_predictions,
    format_results,
    load_predictions,
    resolve_metric,
    write_metrics,
)
from .files import evaluate_files, ground_truth  # noqa: F401
from .voc import evaluate_voc, voc_ap, voc_eval  # noqa: F401

"""The datasets of a YAML detection config, checked before anything is built."""

import difflib

from ..errors import ConfigError, DatasetError
from ..evaluation import METRICS, resolve_metric

__all__ = ["check_datasets"]


def check_datasets(cfg, eval_only=False):
    """The datasets and evaluation settings of a run, checked before anything is built: every
    name registered, train and test of one class list, something to evaluate with
    --eval-only, a known metric and a best-checkpoint key that evaluation will write.
    Returns the class names of the data (None when no dataset names them)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    registered = DatasetCatalog.list()
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                close = difflib.get_close_matches(name, registered, n=3)
                raise ConfigError(
                    f"DATASETS.{key}: {name!r} is not a registered dataset"
                    f"{'; did you mean ' + ' or '.join(close) + '?' if close else ''} (your"
                    f" own data: "
                    f"set RESDET.DATA.{key} to a COCO .json or a VOC folder and DATASETS.{key} "
                    f"('resdet_{key.lower()}',))"
                )
    if eval_only and not cfg.DATASETS.TEST:
        raise ConfigError(
            "--eval-only with DATASETS.TEST empty: nothing to evaluate; set "
            "DATASETS.TEST (or RESDET.DATA.TEST)"
        )
    if cfg.RESDET.EVAL.METRIC not in ("auto",) + METRICS:
        raise ConfigError(
            f"RESDET.EVAL.METRIC {cfg.RESDET.EVAL.METRIC!r} is not a metric; use one "
            f"of auto, {', '.join(METRICS)}"
        )
    names = list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST)
    classes = {n: MetadataCatalog.get(n).get("thing_classes") for n in names}
    first = next((n for n in names if classes[n] is not None), None)

    def source(n):
        meta = MetadataCatalog.get(n)
        return f"{n!r} ({meta.get('json_file') or meta.get('dirname') or 'registered'})"

    for n in names:
        if classes[n] is not None and classes[n] != classes[first]:
            raise DatasetError(
                f"dataset {source(n)} has the classes {_few(classes[n])} but {source(first)} "
                f"has {_few(classes[first])}: train and test must share one class list"
            )
    best = cfg.RESDET.EVAL.BEST_METRIC
    if best != "auto" and cfg.DATASETS.TEST:
        test = cfg.DATASETS.TEST[0]
        kind = "voc" if MetadataCatalog.get(test).get("evaluator_type") == "pascal_voc" else "coco"
        metric = resolve_metric(cfg.RESDET.EVAL.METRIC, kind)
        heads = (
            ("AP", "AP50", "AP75", "APs", "APm", "APl")
            if metric == "coco"
            else ("AP", "AP50", "AP75")
        )
        per_class = "AP-" if metric == "coco" else "AP50-"
        known = [f"bbox/{h}" for h in heads] + [
            f"bbox/{per_class}{c}" for c in classes.get(test) or []
        ]
        if best not in known:
            raise ConfigError(
                f"RESDET.EVAL.BEST_METRIC {best!r} is not a key the {metric} evaluation "
                f"writes; use auto or one of {', '.join(known[: len(heads)])}, "
                f"bbox/{per_class}<class>"
            )
    return classes[first] if first is not None else None


def _few(names, n=5):
    return f"{list(names[:n])}{'...' if len(names) > n else ''}"

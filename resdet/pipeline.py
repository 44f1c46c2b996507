"""The whole system in one command: data -> pretrain -> convert -> detect -> evaluate -> report.

The stages are one visible list, :data:`PIPELINE_STAGES` (name, function, inputs,
outputs, settings). Each calls the library function behind the Python API a user would
call by hand (``resdet.pretrain``, ``resdet.convert_weights``, ``resdet.train_detector``,
``resdet.evaluate_predictions``), so the pipeline adds no second way of doing anything.
What it adds is bookkeeping: ``manifest.json`` records each stage's inputs and outputs
with SHA-256 checksums, the pipeline settings it depends on, its metrics, time and package
versions; a stage whose recorded outputs still exist with the same checksums, and whose
inputs and settings are unchanged, is skipped; a changed setting, or a deleted or
corrupted output, makes the stage and every stage after it run again.

The pipeline config (configs/pipeline/*.yaml) names the stage configs; the default
(configs/pipeline/demo.yaml) generates an offline dataset so ``make demo`` needs nothing
but the repository.
"""

import hashlib
import json
import logging
import platform
import time
from pathlib import Path
from typing import Callable, NamedTuple

from .config import (
    get_pipeline_cfg,  # noqa: F401  (the pipeline's keys, re-exported)
    load_config,
    override_pairs,
    resolve_config_file,
)
from .convert import LAYOUTS, convert_weights
from .data.synthetic import generate_dataset
from .detection import register_datasets, train_detector
from .engine import load
from .errors import ConfigError, DatasetError, cwd_hint
from .evaluation.files import evaluate_files
from .io import atomic_write
from .pretrain.run import pretrain
from .report import write_report
from .run_folder import RunFolder
from .weights import versions

__all__ = [
    "get_pipeline_cfg",
    "load_pipeline_cfg",
    "check_pipeline_cfg",
    "run_pipeline",
    "PIPELINE_STAGES",
    "RunPaths",
    "sha256",
    "package_versions",
    "background_boxes",
    "BACKGROUND",
]

logger = logging.getLogger("resdet.pipeline")

DEFAULT_CONFIG = "pipeline/demo.yaml"
BACKGROUND = "__background__"  # the crop classifier's class of crops that overlap no box


def load_pipeline_cfg(
    config=DEFAULT_CONFIG, *, data=None, images=None, output_dir=None, overrides=None
):
    """The pipeline config: defaults + ``config`` (a packaged name or a path) + KEY VALUE
    ``overrides`` + the arguments (one-line ConfigErrors for bad keys or values)."""
    given = {"DATA.ROOT": data, "DATA.IMAGES": images}
    opts = {**dict(override_pairs(overrides)), **{k: str(v) for k, v in given.items() if v}}
    return load(config, overrides=opts, output_dir=output_dir, kind="pipeline").cfg


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checksums(paths):
    out = {}
    for p in paths:
        p = Path(p)
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        if p.is_dir():  # a folder's checksum covers its file names and contents
            h = hashlib.sha256()
            for q in files:
                h.update(str(q.relative_to(p)).encode() + b"\0" + sha256(q).encode())
            out[str(p)] = h.hexdigest()
        elif p.is_file():
            out[str(p)] = sha256(p)
        else:
            out[str(p)] = None
    return out


def package_versions() -> dict:
    return dict(versions(), platform=platform.platform())


def _json_safe(x):
    """NaN (COCOeval's "nothing to measure") as null, so manifest.json is strict JSON."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


class _Manifest:
    """manifest.json: what each stage read and wrote, with checksums, metrics and versions."""

    def __init__(self, path):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.data.setdefault("stages", {})

    def valid(self, stage, inputs, settings):
        rec = self.data["stages"].get(stage)
        if not rec or rec.get("inputs") != _checksums(inputs):
            return False
        if rec.get("settings") != _json_safe(settings):
            logger.info(f"stage {stage}: its settings changed since it ran")
            return False
        now = _checksums(rec["outputs"])
        return all(v is not None for v in now.values()) and now == rec["outputs"]

    def record(self, stage, inputs, outputs, metrics, seconds, settings):
        self.data["stages"][stage] = {
            "inputs": _checksums(inputs),
            "settings": _json_safe(settings),
            "outputs": _checksums(outputs),
            "metrics": _json_safe(metrics),
            "seconds": round(seconds, 1),
            "versions": package_versions(),
        }
        self.save()

    def save(self):
        with atomic_write(self.path, "w") as f:
            json.dump(self.data, f, indent=1)


# ---------------------------------------------------------------------------- paths


class RunPaths:
    """Every file the stages hand each other, each defined once."""

    TEST_SET = "resdet_test"  # the registered name of the detector's test set

    def __init__(self, cfg):
        out = self.out = Path(cfg.OUTPUT_DIR)
        self.data_dir = out / "data"
        self.data_json = out / "data.json"
        self.classification = self.data_dir / "classification"
        self.pretrain_dir = out / "pretrain"
        self.pretrained = self.pretrain_dir / "model_final.pth"
        self.backbone = out / "convert" / f"backbone_{cfg.CONVERT.LAYOUT}.pth"
        self.detect_dir = out / "detect"
        self.detector = self.detect_dir / "model_final.pth"
        self.detect_metrics = self.detect_dir / "metrics.json"
        self.predictions = self.detect_dir / "inference" / self.TEST_SET / "predictions.json"
        self.evaluation = out / "evaluate" / "metrics.json"
        self.pretrain_config = resolve_config_file(cfg.PRETRAIN.CONFIG)
        self.detect_config = resolve_config_file(cfg.DETECT.CONFIG)

    def data(self):
        """data.json: the detection train/test datasets (resdet.api dataset specs), the
        ground truth of exactly the predicted split, and the classification folder."""
        return json.loads(self.data_json.read_text())


class Stage(NamedTuple):
    """One pipeline stage: ``run(cfg, paths, context) -> metrics``; ``inputs``/``outputs``
    (functions of cfg and paths) are what its manifest checksums cover, ``settings`` (the
    keys of the pipeline config it depends on) what its fingerprint covers besides."""

    name: str
    run: Callable
    inputs: Callable
    outputs: Callable
    settings: tuple = ()  # pipeline config keys: a change reruns the stage
    always: bool = False  # run even when its recorded outputs are still valid


def stage_settings(cfg, stage) -> dict:
    """The values of the config keys ``stage`` depends on."""
    out = {}
    for key in stage.settings:
        node = cfg
        for part in key.split("."):
            node = node[part]
        out[key] = json.loads(json.dumps(node))
    return out


# ---------------------------------------------------------------------------- stages


def _data(cfg, p, ctx):
    """Detection train/test (+ a classification set for pretraining) under out/data."""
    if not cfg.DATA.ROOT:
        g = cfg.DATA.GENERATE
        paths = generate_dataset(
            p.data_dir,
            num_train=g.NUM_TRAIN,
            num_test=g.NUM_TEST,
            image_size=(g.IMAGE_SIZE, g.IMAGE_SIZE),
            num_cls_per_class=g.CLS_PER_CLASS,
            cls_size=cfg.DATA.CROP_SIZE,
            seed=cfg.SEED,
        )
        voc = str(paths["voc"])
        det = {"train": {"voc": voc, "split": "train"}, "test": {"voc": voc, "split": "test"}}
    else:
        det = _user_data(cfg)
        _export_crops(det, p.classification, cfg.DATA.CROP_SIZE, cfg.SEED)
    # the ground truth the evaluate stage scores against: exactly the split predicted
    det["gt"] = det["test"] or dict(det["train"])
    with atomic_write(p.data_json, "w") as f:
        json.dump({"detection": det, "classification": str(p.classification)}, f, indent=1)
    return {"source": cfg.DATA.ROOT or "generated"}


def _data_outputs(cfg, p):
    return ([p.data_dir] if not cfg.DATA.ROOT else [p.classification]) + [p.data_json]


def _spec(path, images):
    """A resdet.api dataset spec for a COCO JSON (+ images) or a VOC folder."""
    return (
        {"json": str(path), "images": str(images)}
        if str(path).endswith(".json")
        else {"voc": str(path)}
    )


def _user_data(cfg):
    """Train/test dataset specs for the user's COCO JSON or VOC folder."""
    d = cfg.DATA
    root = Path(d.ROOT)
    if not root.exists():
        raise DatasetError(f"{root}: DATA.ROOT does not exist (a COCO .json file or a VOC folder)")
    train = _spec(root, d.IMAGES)
    if d.TEST:
        return {"train": train, "test": _spec(d.TEST, d.TEST_IMAGES or d.IMAGES)}
    if root.is_dir():
        main = root / "ImageSets" / "Main"
        if (main / "train.txt").is_file() and (main / "test.txt").is_file():
            return {"train": dict(train, split="train"), "test": dict(train, split="test")}
        # no splits: a deterministic held-out part is the test set (train gets the rest)
        return {"train": dict(train, holdout=float(d.HOLDOUT_FRACTION)), "test": None}
    # a single COCO file and no test set: evaluate on the training images, and say so
    logger.warning(f"{root}: no DATA.TEST given; the demo evaluates on its training images")
    return {"train": train, "test": dict(train)}


def background_boxes(boxes, width, height, side, count, rng, tries=20):
    """Up to ``count`` squares of ``side`` px inside the image that overlap none of
    ``boxes`` (XYXY): the crop classifier's background class, so that a dataset of one
    class still gives a classification problem."""
    side = min(side, width, height)
    found = []
    for _ in range(tries * count):
        if len(found) == count or side < 8:
            break
        x0, y0 = rng.uniform(0, width - side), rng.uniform(0, height - side)
        sq = (x0, y0, x0 + side, y0 + side)
        if not any(
            sq[0] < b[2] and b[0] < sq[2] and sq[1] < b[3] and b[1] < sq[3]
            for b in list(boxes) + found
        ):
            found.append(sq)
    return found


def _export_crops(det, out_dir, size, seed):
    """A classification set from the detection data: each box (with 10% context) resized
    to ``size``, train crops from the train split and val crops from the test split, plus
    a background class of crops that overlap no box (as many per image as its boxes per
    class). A set that still has one class is an error: its top-1 would mean nothing."""
    import zlib

    import numpy as np
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode
    from PIL import Image

    train_name, test_name = register_datasets(det["train"], det["test"])
    classes = MetadataCatalog.get(train_name).thing_classes
    if BACKGROUND in classes:
        raise DatasetError(
            f"{det['train']}: a class is named {BACKGROUND}, the crops' background class"
        )
    counts = {}
    for split, name in (("train", train_name), ("val", test_name)):
        for rec in DatasetCatalog.get(name):
            image, stem = None, Path(rec["file_name"]).stem
            boxes = [
                BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                for a in rec["annotations"]
            ]
            crops = []
            for k, (ann, (x0, y0, x1, y1)) in enumerate(zip(rec["annotations"], boxes)):
                if not ann.get("iscrowd", 0):
                    m = 0.1 * max(x1 - x0, y1 - y0)
                    crops.append(
                        (
                            classes[ann["category_id"]],
                            f"{stem}_{k}",
                            (x0 - m, y0 - m, x1 + m, y1 + m),
                        )
                    )
            if crops:
                sides = [c[2][2] - c[2][0] for c in crops]
                rng = np.random.RandomState([seed, zlib.crc32(stem.encode())])
                n_bg = -(-len(crops) // len(classes))
                for k, sq in enumerate(
                    background_boxes(
                        boxes, rec["width"], rec["height"], float(np.median(sides)), n_bg, rng
                    )
                ):
                    crops.append((BACKGROUND, f"{stem}_bg{k}", sq))
            for cls, file_stem, box in crops:
                if image is None:
                    image = Image.open(rec["file_name"]).convert("RGB")
                path = out_dir / split / cls / f"{file_stem}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path) as f:
                    image.crop(box).resize((size, size)).save(f, format="JPEG", quality=92)
                counts[split, cls] = counts.get((split, cls), 0) + 1
    found = sorted({cls for _, cls in counts})
    if len(found) < 2:
        raise DatasetError(
            f"{det['train']}: the crops for pretraining have one class ({found}) and no "
            f"background (every image is covered by boxes); nothing to pretrain on"
        )
    logger.info(
        "pretraining crops: %s", ", ".join(f"{s}/{c} {n}" for (s, c), n in sorted(counts.items()))
    )


def _pretrain(cfg, p, ctx):
    data = p.data()
    classes = sorted(
        q.name for q in (Path(data["classification"]) / "train").iterdir() if q.is_dir()
    )
    if len(classes) < 2:  # top-1 over one class is 1.0 whatever the net learned
        raise DatasetError(
            f"{data['classification']}: pretraining needs at least two classes, found {classes}"
        )
    metrics = pretrain(
        p.pretrain_config,
        data=data["classification"],
        output_dir=p.pretrain_dir,
        overwrite=True,  # the stage runs again: its outputs are out of date
        overrides=["SEED", cfg.SEED] + list(cfg.PRETRAIN.OPTS),
    )
    keep = {k: metrics[k] for k in ("top1", "top5", "bad_images") if k in metrics}
    return dict(keep, classes=len(classes))


def _convert(cfg, p, ctx):
    result = convert_weights(
        p.pretrained, p.backbone, layout=cfg.CONVERT.LAYOUT, verify=True, size=cfg.DATA.CROP_SIZE
    )
    worst = {stage: max(refs.values()) for stage, refs in result["diffs"].items()}
    return {"max_abs_diff_per_stage": worst}


def _detect(cfg, p, ctx):
    det = p.data()["detection"]
    return train_detector(
        p.detect_config,
        weights=p.backbone,
        train=det["train"],
        test=det["test"],
        output_dir=p.detect_dir,
        overwrite=True,  # the stage runs again: its outputs are out of date
        overrides=["SEED", cfg.SEED] + list(cfg.DETECT.OPTS),
    )


def _evaluate(cfg, p, ctx):
    """Re-score the detector's saved predictions with no model, on the ground truth of
    exactly the split that was predicted: COCO AP and (VOC data) VOC07 AP50."""
    gt = p.data()["detection"]["gt"]
    results = {}
    for metric in ("coco", "voc07") if "voc" in gt else ("coco",):
        results[metric] = evaluate_files(gt, p.predictions, metric)["bbox"]
    with atomic_write(p.evaluation, "w") as f:
        json.dump(_json_safe(results), f, indent=1)
    headline = {"AP": results["coco"].get("AP"), "AP50": results["coco"].get("AP50")}
    if "voc07" in results:
        headline["AP50_voc07"] = results["voc07"].get("AP50")
    return headline


def _report(cfg, p, ctx):
    ctx["report_files"] = write_report(
        p.out,
        ctx["manifest"].data,
        cfg,
        time.perf_counter() - ctx["start"],
        num_images=cfg.REPORT.NUM_IMAGES,
    )
    return {}


# The pipeline, in order: what each stage reads and writes is what its checksums cover.
PIPELINE_STAGES = (
    Stage(
        "data", _data, inputs=lambda cfg, p: [], outputs=_data_outputs, settings=("DATA", "SEED")
    ),
    Stage(
        "pretrain",
        _pretrain,
        inputs=lambda cfg, p: [p.data_json, p.pretrain_config],
        outputs=lambda cfg, p: [p.pretrained, p.pretrain_dir / "curves.png"],
        settings=("PRETRAIN", "SEED"),
    ),
    Stage(
        "convert",
        _convert,
        inputs=lambda cfg, p: [p.pretrained],
        outputs=lambda cfg, p: [p.backbone],
        settings=("CONVERT", "DATA.CROP_SIZE"),
    ),
    Stage(
        "detect",
        _detect,
        settings=("DETECT", "SEED"),
        inputs=lambda cfg, p: [p.data_json, p.backbone, p.detect_config],
        outputs=lambda cfg, p: [
            p.detector,
            p.detect_metrics,
            p.detect_dir / "curves.png",
            p.detect_dir / "predictions",
            p.predictions,
        ],
    ),
    Stage(
        "evaluate",
        _evaluate,
        inputs=lambda cfg, p: [p.data_json, p.predictions],
        outputs=lambda cfg, p: [p.evaluation],
    ),
    # the report always reflects the run that just happened
    Stage(
        "report",
        _report,
        inputs=lambda cfg, p: [],
        outputs=lambda cfg, p: [p.out / "report.md", p.out / "report.html"],
        settings=("REPORT",),
        always=True,
    ),
)


# ---------------------------------------------------------------------------- driver


def check_pipeline_cfg(cfg):
    """What would stop a stage, checked before any stage writes: the stage configs with
    their OPTS, the layout, the data settings (one-line ConfigErrors naming the key)."""
    p = RunPaths(cfg)
    load_config(p.pretrain_config, list(cfg.PRETRAIN.OPTS), kind="pretrain")
    load_config(p.detect_config, list(cfg.DETECT.OPTS), kind="detection")
    if cfg.CONVERT.LAYOUT not in LAYOUTS:
        raise ConfigError(f"CONVERT.LAYOUT {cfg.CONVERT.LAYOUT!r}: allowed {', '.join(LAYOUTS)}")
    d = cfg.DATA
    if not 0.0 < d.HOLDOUT_FRACTION < 1.0:
        raise ConfigError(f"DATA.HOLDOUT_FRACTION {d.HOLDOUT_FRACTION}: must be in (0, 1)")
    if not d.ROOT:
        for key in ("NUM_TRAIN", "NUM_TEST", "IMAGE_SIZE", "CLS_PER_CLASS"):
            if d.GENERATE[key] < 1:
                raise ConfigError(f"DATA.GENERATE.{key} {d.GENERATE[key]}: must be at least 1")
    elif str(d.ROOT).endswith(".json") and not d.IMAGES:
        raise ConfigError(
            f"{d.ROOT}: a COCO file needs its image folder: give --images (DATA.IMAGES)"
        )
    # named by the pipeline's own keys, not by the detection keys they are passed on as
    for key, folder in (("DATA.IMAGES (--images)", d.IMAGES), ("DATA.TEST_IMAGES", d.TEST_IMAGES)):
        if folder and not Path(folder).is_dir():
            what = "is a file, not a folder" if Path(folder).exists() else "no such folder"
            raise DatasetError(f"{key} {folder}: {what} of images{cwd_hint(folder)}")
    return cfg


def run_pipeline(cfg, stages=PIPELINE_STAGES, *, overwrite=False) -> dict:
    """Run (or skip, when its inputs, settings and outputs are unchanged) each stage; return
    the summary written to OUTPUT_DIR/summary.json: {"AP50": ..., "AP": ...,
    "elapsed_seconds": ..., "stages": {...}}. The output folder is a pipeline run folder
    (resdet.run_folder): a rerun continues it; ``overwrite`` starts it again."""
    check_pipeline_cfg(cfg)
    p = RunPaths(cfg)
    with RunFolder(p.out, "pipeline", resume=not overwrite, overwrite=overwrite) as run:
        return _run_stages(cfg, stages, p, run)


def _run_stages(cfg, stages, p, run):
    manifest = _Manifest(p.out / "manifest.json")
    ctx = {"manifest": manifest, "start": time.perf_counter()}
    ran = {}
    upstream_changed = False
    for stage in stages:
        inputs, settings = stage.inputs(cfg, p), stage_settings(cfg, stage)
        valid = manifest.valid(stage.name, inputs, settings)
        if not stage.always and not upstream_changed and valid:
            logger.info(f"stage {stage.name}: outputs valid (checksums match), skipped")
            ran[stage.name] = "skipped"
            run.started()
            continue
        upstream_changed = True
        logger.info(f"stage {stage.name}: running")
        t = time.perf_counter()
        metrics = stage.run(cfg, p, ctx)
        manifest.record(
            stage.name, inputs, stage.outputs(cfg, p), metrics, time.perf_counter() - t, settings
        )
        ran[stage.name] = "ran"
        run.started()  # a finished stage stays valid whatever fails later
    # the config the recorded stages ran with (a skipped stage ran with the same settings)
    manifest.data["pipeline_config"] = json.loads(json.dumps(cfg))
    manifest.save()
    elapsed = time.perf_counter() - ctx["start"]
    ev = manifest.data["stages"].get("evaluate", {}).get("metrics", {})
    summary = {
        "AP50": ev.get("AP50"),
        "AP": ev.get("AP"),
        "AP50_voc07": ev.get("AP50_voc07"),
        "elapsed_seconds": round(elapsed, 1),
        "stages": ran,
    }
    with atomic_write(p.out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary

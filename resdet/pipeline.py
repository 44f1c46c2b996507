"""The whole system in one command: data -> pretrain -> convert -> detect -> evaluate -> report.

Each stage calls the library entry point a user would call by hand
(``resdet.pretrain.train``, ``resdet.convert.convert``, ``resdet.detection.main``,
``resdet.evaluation.evaluate_files``), so the pipeline adds no second way of doing
anything. What it adds is bookkeeping: ``manifest.json`` records each stage's inputs and
outputs with SHA-256 checksums, its metrics, time and package versions; a stage whose
recorded outputs still exist with the same checksums, and whose inputs are unchanged, is
skipped; a deleted or corrupted output makes the stage, and every stage after it, run
again.

The pipeline config (configs/pipeline/*.yaml) names the stage configs; the default
(configs/pipeline/demo.yaml) generates an offline dataset so ``make demo`` needs nothing
but the repository.
"""
import argparse
import hashlib
import json
import logging
import platform
import sys
import time
from pathlib import Path

from fvcore.common.config import CfgNode as CN

from .io import atomic_write

__all__ = ["get_pipeline_cfg", "run_pipeline", "main", "STAGES", "sha256", "package_versions"]

logger = logging.getLogger("resdet.pipeline")

STAGES = ("data", "pretrain", "convert", "detect", "evaluate", "report")
REPO = Path(__file__).resolve().parents[1]


def get_pipeline_cfg():
    """The pipeline's keys and defaults (each stage's own settings live in its config)."""
    cfg = CN()
    cfg.OUTPUT_DIR = "output/demo"
    cfg.SEED = 0
    cfg.DATA = CN()
    # "" = generate the built-in shapes dataset; else a VOC-style folder or a COCO JSON
    cfg.DATA.ROOT = ""
    cfg.DATA.IMAGES = ""          # COCO JSON only: its image folder
    cfg.DATA.TEST = ""            # optional separate test set (COCO JSON or VOC folder)
    cfg.DATA.TEST_IMAGES = ""
    cfg.DATA.HOLDOUT_FRACTION = 0.2  # VOC folder without train/test splits: test share
    cfg.DATA.GENERATE = CN()
    cfg.DATA.GENERATE.NUM_TRAIN = 400
    cfg.DATA.GENERATE.NUM_TEST = 100
    cfg.DATA.GENERATE.IMAGE_SIZE = 192
    cfg.DATA.GENERATE.CLS_PER_CLASS = 120
    cfg.DATA.CROP_SIZE = 64       # classification crops cut from user detection data
    cfg.PRETRAIN = CN()
    cfg.PRETRAIN.CONFIG = "configs/demo/pretrain_r18.yaml"
    cfg.PRETRAIN.OPTS = []
    cfg.CONVERT = CN()
    cfg.CONVERT.LAYOUT = "fpn"
    cfg.DETECT = CN()
    cfg.DETECT.CONFIG = "configs/demo/det_r18_fpn.yaml"
    cfg.DETECT.OPTS = []
    cfg.REPORT = CN()
    cfg.REPORT.NUM_IMAGES = 8     # prediction images in the report's grid
    return cfg


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
    import detectron2
    import torch
    import torchvision

    import resdet

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "detectron2": detectron2.__version__,
            "resdet": resdet.__version__, "platform": platform.platform()}


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

    def valid(self, stage, inputs):
        rec = self.data["stages"].get(stage)
        if not rec or rec.get("inputs") != _checksums(inputs):
            return False
        now = _checksums(rec["outputs"])
        return all(v is not None for v in now.values()) and now == rec["outputs"]

    def record(self, stage, inputs, outputs, metrics, seconds, config=None):
        self.data["stages"][stage] = {"inputs": _checksums(inputs), "outputs": _checksums(outputs),
                                      "metrics": _json_safe(metrics), "seconds": round(seconds, 1),
                                      "config": config, "versions": package_versions()}
        self.save()

    def save(self):
        with atomic_write(self.path, "w") as f:
            json.dump(self.data, f, indent=1)


# ---------------------------------------------------------------------------- stages


def _stage_data(cfg, out):
    """Detection train/test (+ a classification set for pretraining) under out/data."""
    from .data.synthetic import generate_dataset

    root = out / "data"
    if not cfg.DATA.ROOT:
        g = cfg.DATA.GENERATE
        paths = generate_dataset(root, num_train=g.NUM_TRAIN, num_test=g.NUM_TEST,
                                 image_size=(g.IMAGE_SIZE, g.IMAGE_SIZE), num_cls_per_class=g.CLS_PER_CLASS,
                                 cls_size=cfg.DATA.CROP_SIZE, seed=cfg.SEED)
        det = {"TRAIN": str(paths["voc"]), "TRAIN_SPLIT": "train", "TEST": str(paths["voc"]), "TEST_SPLIT": "test"}
        outputs = [root]
    else:
        det = _user_data_keys(cfg)
        _export_crops(det, root / "classification", cfg.DATA.CROP_SIZE)
        outputs = [root / "classification"]
    with atomic_write(out / "data.json", "w") as f:
        json.dump({"detection": det, "classification": str(root / "classification")}, f, indent=1)
    return outputs + [out / "data.json"], {"source": cfg.DATA.ROOT or "generated"}


def _user_data_keys(cfg):
    """RESDET.DATA values for the user's COCO JSON or VOC folder."""
    d = cfg.DATA
    root = Path(d.ROOT)
    if not root.exists():
        raise FileNotFoundError(f"{root}: DATA.ROOT does not exist (a COCO .json file or a VOC folder)")
    keys = {"TRAIN": str(root), "TRAIN_IMAGES": d.IMAGES}
    if d.TEST:
        keys.update(TEST=d.TEST, TEST_IMAGES=d.TEST_IMAGES or d.IMAGES)
    elif root.is_dir():
        main = root / "ImageSets" / "Main"
        if (main / "train.txt").is_file() and (main / "test.txt").is_file():
            keys.update(TRAIN_SPLIT="train", TEST=str(root), TEST_SPLIT="test")
        else:
            keys.update(HOLDOUT_FRACTION=d.HOLDOUT_FRACTION)
    else:
        # a single COCO file and no test set: evaluate on the training images, and say so
        logger.warning(f"{root}: no DATA.TEST given; the demo evaluates on its training images")
        keys.update(TEST=str(root), TEST_IMAGES=d.IMAGES)
    return keys


def _register(det_keys):
    from .config import get_resdet_cfg
    from .data import register_user_datasets

    c = get_resdet_cfg()
    for k, v in det_keys.items():
        c.RESDET.DATA[k] = v
    register_user_datasets(c)


def _export_crops(det_keys, out_dir, size):
    """A classification set from the detection data: each box (with 10% context) resized
    to ``size``, train crops from the train split and val crops from the test split."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode
    from PIL import Image

    _register(det_keys)
    classes = MetadataCatalog.get("resdet_train").thing_classes
    for split, name in (("train", "resdet_train"), ("val", "resdet_test")):
        for rec in DatasetCatalog.get(name):
            image = None
            for k, ann in enumerate(rec["annotations"]):
                if ann.get("iscrowd", 0):
                    continue
                if image is None:
                    image = Image.open(rec["file_name"]).convert("RGB")
                x0, y0, x1, y1 = BoxMode.convert(ann["bbox"], ann["bbox_mode"], BoxMode.XYXY_ABS)
                m = 0.1 * max(x1 - x0, y1 - y0)
                crop = image.crop((x0 - m, y0 - m, x1 + m, y1 + m)).resize((size, size))
                path = out_dir / split / classes[ann["category_id"]] / f"{Path(rec['file_name']).stem}_{k}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                with atomic_write(path) as f:
                    crop.save(f, format="JPEG", quality=92)


def _stage_pretrain(cfg, out):
    from .pretrain import get_pretrain_cfg, train

    data = json.loads((out / "data.json").read_text())
    pcfg = get_pretrain_cfg()
    pcfg.merge_from_file(str(REPO / cfg.PRETRAIN.CONFIG))
    pcfg.merge_from_list(["PRETRAIN.DATA.ROOT", data["classification"], "OUTPUT_DIR", str(out / "pretrain"),
                          "SEED", cfg.SEED] + list(cfg.PRETRAIN.OPTS))
    metrics = train(pcfg)
    keep = {k: metrics[k] for k in ("top1", "top5", "bad_images") if k in metrics}
    return [out / "pretrain" / "model_final.pth", out / "pretrain" / "curves.png"], keep


def _stage_convert(cfg, out):
    from .convert import convert

    dst = out / "convert" / f"backbone_{cfg.CONVERT.LAYOUT}.pth"
    result = convert(out / "pretrain" / "model_final.pth", dst, layout=cfg.CONVERT.LAYOUT,
                     verify_features=True, size=cfg.DATA.CROP_SIZE)
    worst = {stage: max(refs.values()) for stage, refs in result.diffs.items()}
    return [dst, result.fragment], {"max_abs_diff_per_stage": worst}


def _stage_detect(cfg, out):
    from argparse import Namespace

    from .detection import main

    data = json.loads((out / "data.json").read_text())
    opts = ["MODEL.WEIGHTS", str(out / "convert" / f"backbone_{cfg.CONVERT.LAYOUT}.pth"),
            "OUTPUT_DIR", str(out / "detect"), "SEED", cfg.SEED,
            "DATASETS.TRAIN", "('resdet_train',)", "DATASETS.TEST", "('resdet_test',)"]
    for k, v in data["detection"].items():
        opts += [f"RESDET.DATA.{k}", v]
    args = Namespace(config_file=str(REPO / cfg.DETECT.CONFIG), opts=opts + list(cfg.DETECT.OPTS),
                     eval_only=False, resume=False, num_gpus=1, num_machines=1, machine_rank=0,
                     dist_url="auto")
    main(args)
    det = out / "detect"
    metrics = json.loads((det / "metrics.json").read_text())
    return [det / "model_final.pth", det / "metrics.json", det / "curves.png", det / "predictions",
            det / "inference" / "resdet_test" / "predictions.json"], metrics


def _stage_evaluate(cfg, out):
    """Re-score the detector's saved predictions with no model: COCO AP and VOC AP50."""
    from .evaluation import evaluate_files

    data = json.loads((out / "data.json").read_text())["detection"]
    gt = data.get("TEST") or data["TRAIN"]
    preds = out / "detect" / "inference" / "resdet_test" / "predictions.json"
    split = data.get("TEST_SPLIT") or None
    results = {}
    for metric in ("coco", "voc07") if Path(gt).is_dir() else ("coco",):
        kw = {"split": split} if Path(gt).is_dir() else {}
        results[metric] = evaluate_files(gt, str(preds), metric, **kw)["bbox"]
    with atomic_write(out / "evaluate" / "metrics.json", "w") as f:
        json.dump(_json_safe(results), f, indent=1)
    headline = {"AP": results["coco"].get("AP"), "AP50": results["coco"].get("AP50")}
    if "voc07" in results:
        headline["AP50_voc07"] = results["voc07"].get("AP50")
    return [out / "evaluate" / "metrics.json"], headline


def _stage_report(cfg, out, manifest, elapsed):
    from .report import write_report

    paths = write_report(out, manifest.data, cfg, elapsed, num_images=cfg.REPORT.NUM_IMAGES)
    return paths, {}


# ---------------------------------------------------------------------------- driver


def _stage_inputs(cfg, out, stage):
    cfgs = {"pretrain": [REPO / cfg.PRETRAIN.CONFIG], "detect": [REPO / cfg.DETECT.CONFIG]}
    prev = {"data": [], "pretrain": [out / "data.json"], "convert": [out / "pretrain" / "model_final.pth"],
            "detect": [out / "data.json", out / "convert" / f"backbone_{cfg.CONVERT.LAYOUT}.pth"],
            "evaluate": [out / "detect" / "inference" / "resdet_test" / "predictions.json"],
            "report": []}[stage]
    return prev + cfgs.get(stage, [])


def run_pipeline(cfg, stages=STAGES) -> dict:
    """Run (or skip, when still valid) each stage; return the summary written to
    OUTPUT_DIR/summary.json: {"AP50": ..., "AP": ..., "elapsed_seconds": ..., "stages": {...}}."""
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _Manifest(out / "manifest.json")
    manifest.data["pipeline_config"] = json.loads(json.dumps(cfg))
    start = time.perf_counter()
    ran = {}
    upstream_changed = False
    for stage in stages:
        inputs = _stage_inputs(cfg, out, stage)
        # the report always reflects the run that just happened
        if stage != "report" and not upstream_changed and manifest.valid(stage, inputs):
            logger.info(f"stage {stage}: outputs valid (checksums match), skipped")
            ran[stage] = "skipped"
            continue
        upstream_changed = True
        logger.info(f"stage {stage}: running")
        t = time.perf_counter()
        if stage == "report":
            elapsed = time.perf_counter() - start
            outputs, metrics = _stage_report(cfg, out, manifest, elapsed)
        else:
            outputs, metrics = globals()[f"_stage_{stage}"](cfg, out)
        manifest.record(stage, inputs, outputs, metrics, time.perf_counter() - t,
                        config={"pretrain": cfg.PRETRAIN.CONFIG, "detect": cfg.DETECT.CONFIG}.get(stage))
        ran[stage] = "ran"
    elapsed = time.perf_counter() - start
    ev = manifest.data["stages"].get("evaluate", {}).get("metrics", {})
    summary = {"AP50": ev.get("AP50"), "AP": ev.get("AP"), "AP50_voc07": ev.get("AP50_voc07"),
               "elapsed_seconds": round(elapsed, 1), "stages": ran}
    with atomic_write(out / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def main(argv=None, default_config="configs/pipeline/demo.yaml"):
    """Command line of tools/pipeline.py and tools/demo.py (``make demo``)."""
    ap = argparse.ArgumentParser(description="Run resdet end to end: data -> pretrain -> convert -> "
                                             "detect -> evaluate -> report; finished stages are skipped.")
    ap.add_argument("--config", default=default_config)
    ap.add_argument("--data", help="a COCO .json or a VOC-style folder instead of the generated data")
    ap.add_argument("--images", help="image folder of a COCO .json given with --data")
    ap.add_argument("--output", help="output folder (OUTPUT_DIR)")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE pairs overriding the config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s] %(message)s", datefmt="%H:%M:%S")
    cfg = get_pipeline_cfg()
    cfg.merge_from_file(args.config)
    opts = list(args.opts)
    for key, value in (("DATA.ROOT", args.data), ("DATA.IMAGES", args.images), ("OUTPUT_DIR", args.output)):
        if value:
            opts += [key, value]
    cfg.merge_from_list(opts)
    try:
        summary = run_pipeline(cfg)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")
    print(f"AP50 {summary['AP50']}, elapsed {summary['elapsed_seconds']} s; "
          f"report: {cfg.OUTPUT_DIR}/report.md and report.html")

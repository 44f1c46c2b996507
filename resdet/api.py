"""resdet's Python API: what each command does, as one call. A facade: every name here is
the library function that does the job, and nothing else.

    import resdet
    predictor = resdet.Predictor("coco_r50_fpn.yaml", "model_final.pth")
    outputs = predictor(["a.jpg", "b.jpg"])          # [{"instances": Instances}, ...]
    metrics = resdet.train_detector("coco_r50_fpn.yaml", weights="r50_fpn.pth",
                                    train=("train.json", "images/"), test="voc_folder/")
    resdet.evaluate_predictions("voc_folder/", "predictions.json")   # {"bbox": {...}}
    resdet.convert_weights("resnet50.pth", "r50_c4.pth", verify=True)
    resdet.pretrain("imagenet/r18.yaml", data="datasets/imagenet", output_dir="out/r18")
    resdet.export_model("coco_r50_fpn.yaml", "model_final.pth", "onnx", "exported/")
    resdet.predict("model_final.pth", source="photos/", output_dir="out/")  # drawn + COCO json

Configs: a shipped config name (``coco_r101.yaml``, see resdet.model_zoo), a YAML/.py
path, a CfgNode or a LazyConfig; overrides as a list (``KEY VALUE`` pairs for YAML,
``KEY=VALUE`` for a LazyConfig) or a dict. Every call loads its config through the one
setup layer (resdet.engine.load). Datasets (``train``/``test``/``gt``): a registered
Detectron2 name, a VOC folder (``{"voc": folder, "split"|"holdout": ...}``) or a COCO JSON
with its images (``("file.json", "images/")``); see resdet.detection.run. Functions
return what their command prints and writes; bad input raises a one-line
:class:`resdet.errors.ResdetError`.
"""

from .config import resolve_config_file
from .convert import convert_weights
from .detection.run import evaluate_detector, register_datasets, train_detector
from .evaluation.files import evaluate_files as evaluate_predictions
from .export import export_model
from .prediction import predict
from .predictor import RUNTIMES, Predictor
from .pretrain.run import pretrain

__all__ = [
    "Predictor",
    "predict",
    "train_detector",
    "evaluate_detector",
    "evaluate_predictions",
    "pretrain",
    "convert_weights",
    "export_model",
    "config_file",
    "register_datasets",
    "RUNTIMES",
]


def config_file(name) -> str:
    """The file of a config: an existing path as given, else a shipped config name
    (``coco_r101.yaml``, ``demo/det_r18_fpn.yaml``; ``configs/...`` works too)."""
    return str(resolve_config_file(name))

"""resdet's Python API: what each command in tools/ does, as one function call.

    import resdet
    predictor = resdet.Predictor("coco_r50_fpn.yaml", "model_final.pth")
    outputs = predictor(["a.jpg", "b.jpg"])          # [{"instances": Instances}, ...]
    metrics = resdet.train_detector("coco_r50_fpn.yaml", weights="r50_fpn.pth",
                                    train=("train.json", "images/"), test="voc_folder/")
    resdet.evaluate_predictions("voc_folder/", "predictions.json")   # {"bbox": {...}}
    resdet.convert_weights("resnet50.pth", "r50_c4.pth", verify=True)
    resdet.pretrain("imagenet/r18.yaml", data="datasets/imagenet", output_dir="out/r18")

Configs: a packaged config name (``coco_r101.yaml``, see resdet.model_zoo), a YAML/.py
path, a CfgNode or a LazyConfig. Datasets (``train``/``test``/``gt``), one of:

- a registered Detectron2 dataset name (``coco_2017_val``, ``voc_2007_test``, ...);
- a VOC-layout folder (every annotated image), or ``{"voc": folder, "split": "train"}``
  (an ImageSets/Main split), or ``{"voc": folder, "holdout": 0.2}`` (a deterministic
  held-out test share: ``train`` gets the rest, ``test`` (when not given) the held-out part);
- a COCO JSON with its image folder: ``("file.json", "images/")`` or
  ``{"json": "file.json", "images": "images/"}``.

Given ``train`` data and no ``test``, training runs without a test set (the config's own
test set would have other classes). Every function returns what its command prints and
writes (metrics as in metrics.json);
bad input raises a one-line :class:`resdet.errors.ResdetError`.
"""

import logging
import math
import os
from pathlib import Path

from .errors import CheckpointError, ConfigError

__all__ = [
    "Predictor",
    "train_detector",
    "evaluate_detector",
    "evaluate_predictions",
    "pretrain",
    "convert_weights",
    "config_file",
    "register_datasets",
    "RUNTIMES",
]

logger = logging.getLogger(__name__)

RUNTIMES = ("torch",)  # others come from resdet.export (pip install resdet[deploy])
DEPLOY_HINT = "pip install resdet[deploy]"


# ---------------------------------------------------------------------------- configs


def config_file(name) -> str:
    """The file of a config: an existing path as given, else a shipped config name
    (``coco_r101.yaml``, ``demo/det_r18_fpn.yaml``; ``configs/...`` works too)."""
    from .model_zoo import resolve_config_file

    return str(resolve_config_file(name))


def _is_lazy(config) -> bool:
    try:
        from omegaconf import DictConfig
    except ImportError:
        return False
    return isinstance(config, DictConfig)


def _load_config(config):
    """A CfgNode (resdet's keys, unfrozen copy) or a LazyConfig (DictConfig)."""
    from detectron2.config import CfgNode

    if _is_lazy(config):
        return config
    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.defrost()
        if "RESDET" not in cfg:
            from .config import add_resdet_config

            add_resdet_config(cfg)
        return cfg
    path = config_file(config)
    if path.endswith(".py"):
        from detectron2.config import LazyConfig

        return LazyConfig.load(path)
    from .config import get_resdet_cfg, merge_config_file

    return merge_config_file(get_resdet_cfg(), path)


# ---------------------------------------------------------------------------- Predictor


class Predictor:
    """Detectron2's DefaultPredictor for many images at once, with resdet's model.

    ``Predictor(config, weights)(images)`` returns, per image, ``{"instances": Instances}``
    in the image's original coordinates, exactly as ``DefaultPredictor`` does: the
    config's test-time ResizeShortestEdge (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST), the
    channel order flipped to the model's INPUT.FORMAT. The model is prepared for inference
    (frozen BN folded into the convs). Images: paths, HWC uint8 arrays in ``input_format``
    (grey HW arrays too), or uint8 tensors (CHW or HWC). A single image (not in a list)
    gives a single dict, so code written for DefaultPredictor keeps working.

    Images whose resized, padded shapes are equal run as one batch of up to ``batch_size``
    (padding is then the same as one at a time, so batching changes no detection).
    ``runtime``: "torch", or a back-end of resdet.export (``pip install resdet[deploy]``).
    ``precision``: "fp32", "bf16" (openvino, torch) or "int8" (onnxruntime, openvino;
    calibrated on ``int8_calibration``, a folder of images like the ones to detect on).
    """

    def __init__(
        self,
        config,
        weights,
        *,
        input_format="RGB",
        device=None,
        runtime="torch",
        precision="fp32",
        int8_calibration=None,
        overrides=None,
        batch_size=8,
    ):
        import torch

        if input_format not in ("RGB", "BGR"):
            raise ConfigError(f"input_format {input_format!r}: must be 'RGB' or 'BGR'")
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size {batch_size}: must be at least 1")
        weights = str(weights)
        if not Path(weights).is_file():
            raise CheckpointError(f"{weights}: no such weights file")
        self.input_format, self.batch_size = input_format, int(batch_size)
        cfg = _load_config(config)
        if _is_lazy(cfg):
            model, aug, self.cfg = self._build_lazy(cfg, weights, device, overrides)
        else:
            model, aug, self.cfg = self._build(cfg, weights, device, overrides)
        from detectron2.data import MetadataCatalog

        from .modeling import prepare_for_inference

        with torch.no_grad():
            model = prepare_for_inference(model)
        self.aug = aug
        # as DefaultPredictor: the test set's class names and colours, for drawing
        tests = self.cfg.DATASETS.TEST if hasattr(self.cfg, "DATASETS") else ()
        self.metadata = MetadataCatalog.get(tests[0]) if len(tests) else None
        self.model_format = getattr(model, "input_format", "BGR")
        backbone = getattr(model, "backbone", None)
        self._divisibility = getattr(backbone, "size_divisibility", 0)
        self._square = (getattr(backbone, "padding_constraints", None) or {}).get("square_size", 0)
        self.runtime = runtime
        if runtime == "torch" and precision == "fp32":
            self.model = model
        else:
            self.model = _runtime_model(model, self.cfg, runtime, precision, int8_calibration)

    @staticmethod
    def _build(cfg, weights, device, overrides):
        import torch
        from detectron2.data import transforms as T
        from detectron2.modeling import build_model

        from .config import merge_overrides
        from .detection.checkpoint import load_detector_weights, merge_weights_fragment

        merge_overrides(cfg, overrides or [])
        cfg.MODEL.WEIGHTS = weights
        for msg in merge_weights_fragment(cfg, explicit=set((overrides or [])[0::2])):
            logger.warning(msg)
        if device:
            cfg.MODEL.DEVICE = str(device)
        elif cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
        model = build_model(cfg)
        load_detector_weights(model, weights)
        aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        return model, aug, cfg

    @staticmethod
    def _build_lazy(cfg, weights, device, overrides):
        import torch
        from detectron2.config import LazyConfig, instantiate
        from detectron2.data import transforms as T

        from .detection.checkpoint import load_detector_weights

        if overrides:
            cfg = LazyConfig.apply_overrides(cfg, list(overrides))
        if "model" not in cfg:
            raise ConfigError("the LazyConfig has no 'model' to build")
        model = instantiate(cfg.model)
        want = str(device or cfg.get("train", {}).get("device", "cpu"))
        if want.startswith("cuda") and not torch.cuda.is_available():
            want = "cpu"
        model.to(want)
        load_detector_weights(model, weights)
        test = cfg.get("dataloader", {}).get("test", {})
        augs = test.get("mapper", {}).get("augmentations") if hasattr(test, "get") else None
        aug = (
            T.AugmentationList(instantiate(augs))
            if augs
            else T.ResizeShortestEdge([800, 800], 1333)
        )
        return model, aug, cfg

    @property
    def device(self):
        return getattr(self.model, "device", "cpu")

    def _as_array(self, image, index):
        """HWC uint8 numpy array in the model's channel order."""
        import numpy as np
        import torch
        from detectron2.data.detection_utils import read_image

        if isinstance(image, (str, os.PathLike)):
            if not Path(image).is_file():
                raise ConfigError(f"{image}: no such image file")
            try:
                return read_image(str(image), format=self.model_format)
            except OSError as e:
                raise ConfigError(f"{image}: not a readable image ({e})") from None
        if isinstance(image, torch.Tensor):
            if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
                image = image.permute(1, 2, 0)  # CHW -> HWC
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            raise ConfigError(
                f"image {index}: a path, a numpy array or a tensor, got {type(image).__name__}"
            )
        if image.dtype != np.uint8:
            raise ConfigError(f"image {index}: dtype {image.dtype}; give uint8 pixels (0-255)")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3) or min(image.shape[:2]) < 1:
            raise ConfigError(
                f"image {index}: shape {tuple(image.shape)}; expected HxWx3 (or HxW grey)"
            )
        if image.shape[2] == 1:
            return np.repeat(image, 3, axis=2)
        return image[:, :, ::-1] if self.input_format != self.model_format else image

    def _padded(self, h, w):
        if self._square:
            return self._square, self._square
        d = self._divisibility
        return (math.ceil(h / d) * d, math.ceil(w / d) * d) if d > 1 else (h, w)

    def __call__(self, images):
        import numpy as np
        import torch
        from detectron2.data import transforms as T

        single = not isinstance(images, (list, tuple))
        images = [images] if single else list(images)
        inputs = []
        for i, image in enumerate(images):
            array = self._as_array(image, i)
            height, width = array.shape[:2]
            aug_input = T.AugInput(array)
            self.aug(aug_input)  # what DefaultPredictor does: get_transform, then apply_image
            resized = aug_input.image
            tensor = torch.as_tensor(
                np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1))
            )
            inputs.append({"image": tensor, "height": height, "width": width})
        groups = {}
        for i, inp in enumerate(inputs):
            groups.setdefault(self._padded(*inp["image"].shape[1:]), []).append(i)
        outputs = [None] * len(inputs)
        with torch.no_grad():
            for members in groups.values():
                for k in range(0, len(members), self.batch_size):
                    chunk = members[k : k + self.batch_size]
                    for i, out in zip(chunk, self.model([inputs[i] for i in chunk])):
                        outputs[i] = out
        return outputs[0] if single else outputs


def _runtime_model(model, cfg, runtime, precision="fp32", int8_calibration=None):
    """The model run by another runtime (resdet.export), or a one-line ConfigError."""
    try:
        from .export import runtime_model
    except ImportError as e:
        raise ConfigError(
            f"runtime {runtime!r} needs resdet's deploy extras ({e}); {DEPLOY_HINT}"
        ) from None
    try:
        return runtime_model(model, cfg, runtime, precision, int8_calibration=int8_calibration)
    except ImportError as e:
        raise ConfigError(f"runtime {runtime!r}: {e}; {DEPLOY_HINT}") from None
    except (KeyError, ValueError) as e:  # an unknown runtime name
        if DEPLOY_HINT in str(e):
            raise
        msg = (e.args[0] if isinstance(e, KeyError) and e.args else str(e)).strip().splitlines()
        raise ConfigError(
            f"runtime {runtime!r}: {msg[0] if msg else type(e).__name__} "
            f"(torch, or the back-ends of {DEPLOY_HINT})"
        ) from None


# ---------------------------------------------------------------------------- datasets


def _dataset(spec, part):
    """(RESDET.DATA overrides, dataset name) for a dataset given as documented above."""
    from detectron2.data import DatasetCatalog

    if spec is None:
        return [], None
    key, name = f"RESDET.DATA.{part}", f"resdet_{part.lower()}"
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise ConfigError(
                f"{part.lower()} {spec!r}: a COCO dataset is (json_file, image_folder)"
            )
        spec = {"json": spec[0], "images": spec[1]}
    if isinstance(spec, dict):
        if "json" in spec:
            return [key, str(spec["json"]), f"{key}_IMAGES", str(spec.get("images", ""))], name
        if "voc" in spec:
            opts = [key, str(spec["voc"]), f"{key}_SPLIT", str(spec.get("split") or "")]
            if spec.get("holdout"):
                opts += ["RESDET.DATA.HOLDOUT_FRACTION", float(spec["holdout"])]
            return opts, name
        raise ConfigError(f"{part.lower()} {spec!r}: a dict needs 'json' (+ 'images') or 'voc'")
    spec = str(spec)
    if spec in DatasetCatalog.list():
        return [], spec
    if spec.endswith(".json"):
        raise ConfigError(f'{spec}: a COCO file needs its image folder: give ("{spec}", "images/")')
    if os.path.isdir(spec):
        return [key, spec], name
    raise ConfigError(
        f"{spec}: neither a registered dataset name, a VOC folder nor a COCO (json, images) pair"
    )


def _data_opts(train=None, test=None):
    train_opts, train_name = _dataset(train, "TRAIN")
    test_opts, test_name = _dataset(test, "TEST")
    if test is None and "RESDET.DATA.HOLDOUT_FRACTION" in train_opts:
        test_name = "resdet_test"  # the held-out part of the training folder
    opts = train_opts + test_opts
    if train_name:
        opts += ["DATASETS.TRAIN", (train_name,)]
    if test_name:
        opts += ["DATASETS.TEST", (test_name,)]
    elif train_name:  # the config's own test set has other classes than the given data
        opts += ["DATASETS.TEST", ()]
    return opts


def register_datasets(train=None, test=None):
    """Register datasets given as in this module's docstring with Detectron2; returns
    their names ``(train, test)`` (None where not given): registered names stay as they
    are, the others become "resdet_train"/"resdet_test" (resdet.data.register_user_datasets)."""
    from .config import get_resdet_cfg, merge_overrides
    from .data import register_user_datasets

    cfg = merge_overrides(get_resdet_cfg(), _data_opts(train, test))
    register_user_datasets(cfg)
    return (
        cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None,
        cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else None,
    )


def _yaml_config(config):
    """A path or CfgNode for resdet.detection.setup_cfg."""
    if _is_lazy(config):
        raise ConfigError("a LazyConfig object: give its .py file (resdet.lazy.train_lazy)")
    return config if hasattr(config, "clone") else config_file(config)


def _is_lazy_file(config) -> bool:
    return not hasattr(config, "clone") and not _is_lazy(config) and str(config).endswith(".py")


def _run_lazy(config, weights, train, test, output_dir, resume, overrides, eval_only, dist):
    """A LazyConfig .py run (resdet.lazy.train_lazy): ``overrides`` are KEY=VALUE strings;
    its datasets are the config's own."""
    import functools

    from .lazy import train_lazy

    if train is not None or test is not None:
        raise ConfigError(
            f"{config}: a LazyConfig names its datasets (dataloader.train/test); "
            f"set them there or with KEY=VALUE overrides, not train=/test="
        )
    opts = list(overrides or []) + ([f"train.init_checkpoint={weights}"] if weights else [])
    fn = functools.partial(train_lazy, resume=resume, eval_only=eval_only, output_dir=output_dir)
    result = _launch(fn, (str(config), opts), *dist, cuda_only=True)
    return result if result is not None else _read_metrics(output_dir) if output_dir else {}


def _launch(fn, args, num_gpus, num_machines, machine_rank, dist_url, cuda_only):
    """``fn(*args)`` here, or in num_gpus x num_machines processes (None: read the files)."""
    world = num_gpus * num_machines
    if world <= 1:
        return fn(*args)
    import torch
    from detectron2.engine import launch

    if cuda_only and not torch.cuda.is_available():
        raise ConfigError(
            "--num-gpus/--num-machines above 1 need CUDA (Detectron2 runs "
            "DistributedDataParallel on GPUs only); this machine has none"
        )
    launch(
        fn,
        num_gpus,
        num_machines=num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
        args=args,
    )
    return None


def _read_metrics(output_dir):
    import json

    path = Path(output_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


# ---------------------------------------------------------------------------- detection


def train_detector(
    config,
    *,
    weights=None,
    train=None,
    test=None,
    output_dir=None,
    resume=False,
    overrides=None,
    num_gpus=1,
    num_machines=1,
    machine_rank=0,
    dist_url="auto",
) -> dict:
    """Fine-tune Faster R-CNN (tools/train_det.py); the final evaluation as in
    OUTPUT_DIR/metrics.json (``{"bbox": {"AP": ..., ...}}``; {} without a test set).

    ``weights``: MODEL.WEIGHTS (converted weights bring their YAML fragment);
    ``train``/``test``: datasets as in this module's docstring; ``overrides``: KEY VALUE
    pairs, applied after the arguments above. A LazyConfig ``.py`` runs through
    resdet.lazy.train_lazy (Detectron2's lazyconfig_train_net: ``KEY=VALUE`` overrides)."""
    dist = (num_gpus, num_machines, machine_rank, dist_url)
    if _is_lazy_file(config):
        return _run_lazy(config, weights, train, test, output_dir, resume, overrides, False, dist)
    opts = (["MODEL.WEIGHTS", str(weights)] if weights else []) + _data_opts(train, test)
    return _run_yaml(config, opts, output_dir, overrides, False, resume, dist)


def evaluate_detector(
    config,
    weights=None,
    *,
    test=None,
    output_dir=None,
    resume=False,
    overrides=None,
    num_gpus=1,
    num_machines=1,
    machine_rank=0,
    dist_url="auto",
) -> dict:
    """Evaluate detector ``weights`` on ``test`` (default: the config's DATASETS.TEST), as
    ``tools/train_det.py --eval-only``; what OUTPUT_DIR/metrics.json holds."""
    dist = (num_gpus, num_machines, machine_rank, dist_url)
    if _is_lazy_file(config):
        return _run_lazy(config, weights, None, test, output_dir, resume, overrides, True, dist)
    opts = ["MODEL.WEIGHTS", str(weights)] if weights else []
    if test is not None:  # the classes come from the test set, not the config's training set
        opts += _data_opts(None, test) + ["DATASETS.TRAIN", ()]
    return _run_yaml(config, opts, output_dir, overrides, True, resume, dist)


def _run_yaml(config, opts, output_dir, overrides, eval_only, resume, dist):
    """train_net on every process of ``dist``; the results (read back from metrics.json
    when several processes ran)."""
    from .detection.train import train_net

    opts = opts + (["OUTPUT_DIR", str(output_dir)] if output_dir else []) + list(overrides or [])
    result = _launch(
        train_net, (_yaml_config(config), opts, eval_only, resume), *dist, cuda_only=True
    )
    return result if result is not None else _read_metrics(_output_dir_of(config, opts))


def _output_dir_of(config, opts):
    values = dict(zip(opts[0::2], opts[1::2]))
    if "OUTPUT_DIR" in values:
        return values["OUTPUT_DIR"]
    return _load_config(config).OUTPUT_DIR


def _ground_truth(gt, split=None):
    """resdet.evaluation.GroundTruth for a dataset given as documented above."""
    from .evaluation import ground_truth

    return ground_truth(gt, split)


def evaluate_predictions(gt, pred, metric="auto", *, split=None, output=None) -> dict:
    """Score a predictions file against ground truth with no model (tools/evaluate.py).

    ``gt``: a COCO JSON, a VOC folder (``split``: an ImageSets/Main name; default test.txt
    when present, else every annotated image), a registered dataset name, or a dataset
    dict as in this module's docstring. ``pred``: a COCO results JSON, or for VOC ground
    truth a folder of devkit files. ``metric``: auto, coco, voc07 or voc. Returns
    ``{"bbox": {...}}`` in percent, written to ``output`` (JSON) when given."""
    from .evaluation import evaluate_files

    return evaluate_files(gt, pred, metric, split, output=output)


# ---------------------------------------------------------------------------- pretraining


def pretrain(
    config,
    *,
    data=None,
    output_dir=None,
    resume=False,
    overrides=None,
    eval_only=False,
    num_gpus=1,
    num_machines=1,
    machine_rank=0,
    dist_url="auto",
) -> dict:
    """Pretrain a resdet classifier (tools/pretrain_imagenet.py): ``data`` is the
    class-folder root (PRETRAIN.DATA.ROOT). Returns the final metrics (``top1``, ``top5``,
    ...; with ``eval_only`` what eval.json holds). Several processes (``num_gpus``) use
    gloo on a CPU; their result is read back from OUTPUT_DIR/eval.json."""
    import json

    from .config import merge_config_file, merge_overrides
    from .pretrain import get_pretrain_cfg, load_splits
    from .pretrain.engine import check_cfg

    cfg = get_pretrain_cfg()
    if hasattr(config, "clone"):  # a CfgNode
        cfg.merge_from_other_cfg(config)
    else:
        merge_config_file(cfg, config_file(config))
    if data is not None:
        cfg.PRETRAIN.DATA.ROOT = str(data)
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    merge_overrides(cfg, overrides or [])
    cfg.freeze()
    check_cfg(cfg)  # bad values and a bad dataset fail here, once, before any process starts
    load_splits(cfg)
    result = _launch(
        _pretrain_worker,
        (cfg, resume, eval_only),
        num_gpus,
        num_machines,
        machine_rank,
        dist_url,
        cuda_only=False,
    )
    if result is None:
        path = Path(cfg.OUTPUT_DIR) / "eval.json"
        result = json.loads(path.read_text()) if path.is_file() else {}
    return result


def _pretrain_worker(cfg, resume, eval_only):
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from .io import atomic_write
    from .pretrain import evaluate_checkpoint, train
    from .run_folder import discard_unstarted_run, listing

    before = listing(cfg.OUTPUT_DIR)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="resdet")
    if comm.is_main_process():
        with atomic_write(Path(cfg.OUTPUT_DIR) / "config.yaml", "w") as f:
            f.write(cfg.dump())
    if not eval_only:
        return train(cfg, resume=resume)
    try:
        return evaluate_checkpoint(cfg)
    except Exception:  # nothing was evaluated: leave only the log
        if comm.is_main_process():
            discard_unstarted_run(cfg.OUTPUT_DIR, before)
        raise


# ---------------------------------------------------------------------------- conversion


def convert_weights(
    src, out, *, layout="c4", verify=False, kind="auto", depth=None, size=224
) -> dict:
    """Convert ResNet weights (resdet, torchvision, timm, Detectron2/MSRA) to a Detectron2
    checkpoint ``out`` (.pth) plus its YAML fragment (tools/convert_weights.py).

    ``verify``: False, True (a fixed input) or an image path: compare the features of every
    stage with the source network at ``size`` px; above 1e-4 nothing is written. Returns what
    was found and written: format, depth, shortcut, input format, stride_in_1x1, the files, and
    ``diffs`` (stage -> reference -> max abs difference; {} without verify).
    """
    from .convert import convert

    image = str(verify) if isinstance(verify, (str, os.PathLike)) else None
    result = convert(
        src,
        out,
        kind=kind,
        layout=layout,
        depth=depth,
        verify_features=bool(verify),
        image=image,
        size=size,
    )
    s = result.source
    diffs = result.diffs or {}
    return {
        "format": s.kind,
        "depth": s.depth,
        "shortcut": s.shortcut,
        "residual": s.residual,
        "input_format": s.input_format,
        "stride_in_1x1": s.stride_in_1x1,
        "pixel_mean": list(s.pixel_mean),
        "pixel_std": list(s.pixel_std),
        "layout": layout,
        "out": str(result.out),
        "fragment": str(result.fragment),
        "diffs": diffs,
        "max_abs_diff": max((d for refs in diffs.values() for d in refs.values()), default=None),
    }

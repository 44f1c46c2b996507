"""Tiny fixtures of the bad-input corpus (tests/test_bad_inputs.py), each built once per
session on first use: good inputs (a converted R18 checkpoint, a 2-image COCO subset of
coco128, a 3-image VOC folder from bccd, a class-folder set from cifar10-mini, a tiny
detection run) and the bad files a hostile but realistic user hands the tools.

Real images stay in the shared data: folders here hold symlinks to them.
"""

import contextlib
import json
import logging
import os
import pickle
import shutil
import xml.etree.ElementTree as ET
from functools import cached_property
from pathlib import Path

import torch
from conftest import REPO, CodeOnLoad

COCO_IDS = 2  # images of the COCO subset (both annotated)
VOC_IDS = ("BloodImage_00007", "BloodImage_00011", "BloodImage_00015")
CIFAR_CLASSES = ("airplane", "bird")
TV_MEAN, TV_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


@contextlib.contextmanager
def quiet_logging():
    """Remove the logging handlers a call adds (tools call basicConfig, Detectron2 adds
    stream and file handlers): left behind, they keep writing to a closed capture
    stream, and Python prints a '--- Logging error ---' traceback in a later test."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    before = {id(lg): list(lg.handlers) for lg in loggers}
    try:
        yield
    finally:
        for lg in [logging.getLogger()] + [
            lg
            for lg in logging.Logger.manager.loggerDict.values()
            if isinstance(lg, logging.Logger)
        ]:
            for h in list(lg.handlers):
                if h not in before.get(id(lg), []):
                    lg.removeHandler(h)
                    with contextlib.suppress(Exception):
                        h.close()


def _write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _link_or_copy(src, dst):
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def _without_meta(src, dst):
    """``src`` as a checkpoint from before weights carried their settings (no ``meta``)."""
    data = torch.load(src, weights_only=True)
    data.pop("meta", None)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, dst)
    return dst


def _classifier(path, depth=18, dataset="imagenet", num_classes=10, **meta):
    """A resdet pretraining checkpoint in contract-1 form (random weights)."""
    from resdet.io import atomic_save
    from resdet.modeling import build_resnet

    torch.manual_seed(0)
    shortcut = "A" if dataset == "cifar" else "B"
    net = build_resnet(depth, dataset=dataset, shortcut=shortcut, num_classes=num_classes)
    full = dict(
        format="resdet-classifier",
        depth=depth,
        dataset=dataset,
        shortcut=shortcut,
        residual=True,
        stride_in_1x1=False,
        num_classes=num_classes,
        norm="BN",
        input_format="RGB",
        pixel_mean=TV_MEAN,
        pixel_std=TV_STD,
        recipe="test",
        classes=[str(i) for i in range(num_classes)],
        metrics={},
    )
    full.update(meta)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"model": net.state_dict(), "meta": full}, path)
    return path


class Corpus:
    """Paths of the corpus fixtures; each group is built the first time it is used.

    Attribute names are the ``{placeholders}`` of the corpus' argument lines."""

    def __init__(self, root: Path, shared: Path):
        self.root, self.shared = Path(root), Path(shared)
        self.repo = REPO
        self.marker = self.root / "PWNED"  # what the malicious checkpoints would create
        self._built = {}

    def get(self, name):
        """The fixture ``name``: an attribute of this class or an entry of ``BUILD``."""
        if name in self._built:
            return self._built[name]
        if name in BUILD:
            self._built[name] = value = BUILD[name](self)
            return value
        if isinstance(getattr(type(self), name, None), cached_property):
            return getattr(self, name)
        raise KeyError(f"no corpus fixture {{{name}}}")

    @property
    def built(self):
        return set(self._built) | set(vars(self))

    # ---- good inputs -------------------------------------------------------------------
    @cached_property
    def coco_img(self) -> Path:
        return self.shared / "coco128" / "train2017"

    @cached_property
    def coco(self) -> Path:
        """The first COCO_IDS coco128 images with their annotations (all 80 categories)."""
        ann = self.shared / "coco128" / "annotations" / "instances_train2017.json"
        full = json.loads(ann.read_text())
        images = full["images"][:COCO_IDS]
        ids = {im["id"] for im in images}
        anns = [a for a in full["annotations"] if a["image_id"] in ids]
        sub = dict(full, images=images, annotations=anns)
        return _write(self.root / "coco" / "tiny.json", json.dumps(sub))

    def coco_data(self):
        return json.loads(self.coco.read_text())

    @cached_property
    def voc(self) -> Path:
        """3 bccd images in VOC layout, no ImageSets (every annotated image is used)."""
        return self.voc_variant("voc")

    def voc_variant(self, name, rename=None, break_xml=False, split=None):
        """A VOC folder of VOC_IDS; ``rename`` {old: new} changes object names in the first
        annotation (a user's typo); ``split`` writes ImageSets/Main/<split>.txt."""
        root = self.root / name
        src = self.shared / "bccd"
        for k, i in enumerate(VOC_IDS):
            tree = ET.parse(src / "Annotations" / f"{i}.xml")
            if rename and k == 0:
                for obj in tree.findall("object"):
                    n = obj.find("name")
                    n.text = rename.get(n.text, n.text)
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            tree.write(root / "Annotations" / f"{i}.xml")
            if break_xml and k == 0:
                text = (root / "Annotations" / f"{i}.xml").read_text()
                (root / "Annotations" / f"{i}.xml").write_text(text[: len(text) // 2])
            (root / "JPEGImages").mkdir(exist_ok=True)
            (root / "JPEGImages" / f"{i}.jpg").symlink_to(src / "JPEGImages" / f"{i}.jpg")
        if split:
            _write(root / "ImageSets" / "Main" / f"{split}.txt", "\n".join(VOC_IDS) + "\n")
        return root

    def voc_objects(self, root=None):
        """[(image_id, class, [xmin, ymin, xmax, ymax])] of a VOC folder's annotations."""
        root = Path(root or self.voc)
        out = []
        for i in VOC_IDS:
            for obj in ET.parse(root / "Annotations" / f"{i}.xml").findall("object"):
                box = [float(obj.findtext(f"bndbox/{c}")) for c in ("xmin", "ymin", "xmax", "ymax")]
                out.append((i, obj.findtext("name").strip(), box))
        return out

    @cached_property
    def cf(self) -> Path:
        """Class folders train/<class>/ (3 images) and test/<class>/ (2) from cifar10-mini."""
        root = self.root / "cf"
        for split, n in (("train", 3), ("test", 2)):
            for c in CIFAR_CLASSES:
                (root / split / c).mkdir(parents=True)
                for f in sorted((self.shared / "cifar10-mini" / split / c).iterdir())[:n]:
                    (root / split / c / f.name).symlink_to(f)
        return root

    @cached_property
    def c8(self) -> Path:
        """A CIFAR ResNet-8 classifier checkpoint (layer_responses input)."""
        return _classifier(
            self.root / "c8" / "model_final.pth",
            depth=8,
            dataset="cifar",
            pixel_mean=[125.3, 123.0, 113.9],
            pixel_std=[63.0, 62.1, 66.7],
        )

    @cached_property
    def cls(self) -> Path:
        """An unconverted ResNet-18 classifier: what pretraining writes."""
        return _classifier(self.root / "pretrain" / "model_final.pth")

    @cached_property
    def r18(self) -> Path:
        """The classifier converted for FPN: r18_fpn.pth + its r18_fpn.yaml fragment."""
        from resdet.convert import convert

        out = self.root / "weights" / "r18_fpn.pth"
        with quiet_logging():
            convert(self.cls, out, layout="fpn")
        return out

    @cached_property
    def nofrag(self) -> Path:
        """r18_fpn.pth as an old conversion, with neither meta nor a fragment: its settings
        are unknown, so an R50 config keeps its depth."""
        return _without_meta(self.r18, self.root / "nofrag" / "r18_fpn.pth")

    @cached_property
    def tv18(self) -> Path:
        """An unconverted torchvision ResNet-18 state dict (random weights)."""
        import torchvision

        torch.manual_seed(0)
        path = self.root / "tv" / "resnet18.pth"
        path.parent.mkdir(parents=True)
        torch.save(torchvision.models.resnet18().state_dict(), path)
        return path

    # ---- configs -----------------------------------------------------------------------
    def _det_yaml(self, name, base, extra=""):
        return _write(
            self.root / "configs" / name,
            f"""\
_BASE_: "{base}"
MODEL:
  DEVICE: "cpu"
{extra}  FPN:
    OUT_CHANNELS: 32
  RPN:
    BATCH_SIZE_PER_IMAGE: 32
    PRE_NMS_TOPK_TRAIN: 200
    PRE_NMS_TOPK_TEST: 100
    POST_NMS_TOPK_TRAIN: 50
    POST_NMS_TOPK_TEST: 20
  ROI_HEADS:
    BATCH_SIZE_PER_IMAGE: 32
  ROI_BOX_HEAD:
    FC_DIM: 64
INPUT:
  MIN_SIZE_TRAIN: (64,)
  MAX_SIZE_TRAIN: 96
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 96
DATASETS:
  TRAIN: ("resdet_train",)
  TEST: ("resdet_test",)
RESDET:
  DATA:
    TRAIN: "{self.coco}"
    TRAIN_IMAGES: "{self.coco_img}"
    TEST: "{self.coco}"
    TEST_IMAGES: "{self.coco_img}"
  EVAL:
    NUM_VIS: 0
SOLVER:
  IMS_PER_BATCH: 1
  BASE_LR: 0.001
  MAX_ITER: 2
  STEPS: ()
  WARMUP_ITERS: 0
  CHECKPOINT_PERIOD: 1000
TEST:
  EVAL_PERIOD: 0
DATALOADER:
  NUM_WORKERS: 0
SEED: 0
OUTPUT_DIR: "{self.root / "det_default_out"}"
""",
        )

    @cached_property
    def det(self) -> Path:
        """Tiny R18-FPN fine-tuning on the COCO subset from the converted weights: 2 iterations
        at 64 px; a bad-input case changes one thing."""
        extra = f'  WEIGHTS: "{self.r18}"\n  RESNETS:\n    DEPTH: 18\n    RES2_OUT_CHANNELS: 64\n'
        return self._det_yaml("det.yaml", REPO / "configs" / "Base-RCNN-FPN.yaml", extra)

    @cached_property
    def det50(self) -> Path:
        """The shipped R50-FPN config with the tiny data and sizes, no weights set."""
        return self._det_yaml("det50.yaml", REPO / "configs" / "coco_r50_fpn.yaml")

    @cached_property
    def pre(self) -> Path:
        """Tiny CIFAR ResNet-8 pretraining on ``cf``: 2 iterations of batch 4."""
        return _write(
            self.root / "configs" / "pre.yaml",
            f"""\
_BASE_: "{REPO / "configs" / "cifar" / "resnet20.yaml"}"
PRETRAIN:
  DATA:
    ROOT: "{self.cf}"
    VAL_SPLIT: "test"
  TEST:
    IMS_PER_BATCH: 8
  LOG_PERIOD: 1
MODEL:
  DEVICE: "cpu"
  RESNETS:
    DEPTH: 8
SOLVER:
  IMS_PER_BATCH: 4
  MAX_ITER: 2
  STEPS: (1,)
  CHECKPOINT_PERIOD: 2
TEST:
  EVAL_PERIOD: 0
DATALOADER:
  NUM_WORKERS: 0
SEED: 0
OUTPUT_DIR: "{self.root / "pt_default_out"}"
""",
        )

    @cached_property
    def pipe(self) -> Path:
        """The demo pipeline shrunk to seconds (as tests/test_pipeline.py shrinks it)."""
        pre_opts = [
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.IMS_PER_BATCH",
            "8",
            "TEST.EVAL_PERIOD",
            "0",
            "SOLVER.STEPS",
            "(1,)",
            "SOLVER.WARMUP_ITERS",
            "1",
            "INPUT.CROP_SIZE",
            "32",
            "INPUT.TEST_SIZE",
            "32",
        ]
        det_opts = [
            "SOLVER.MAX_ITER",
            "2",
            "SOLVER.WARMUP_ITERS",
            "1",
            "SOLVER.STEPS",
            "(1,)",
            "SOLVER.IMS_PER_BATCH",
            "1",
            "INPUT.MIN_SIZE_TRAIN",
            "(96,)",
            "INPUT.MIN_SIZE_TEST",
            "96",
            "RESDET.EVAL.NUM_VIS",
            "1",
        ]
        return _write(
            self.root / "configs" / "pipe.yaml",
            f"""\
OUTPUT_DIR: "{self.root / "pp_default_out"}"
SEED: 0
DATA:
  GENERATE:
    NUM_TRAIN: 8
    NUM_TEST: 4
    IMAGE_SIZE: 96
    CLS_PER_CLASS: 4
  CROP_SIZE: 32
PRETRAIN:
  CONFIG: "{REPO / "configs" / "demo" / "pretrain_r18.yaml"}"
  OPTS: {json.dumps(pre_opts)}
DETECT:
  CONFIG: "{REPO / "configs" / "demo" / "det_r18_fpn.yaml"}"
  OPTS: {json.dumps(det_opts)}
REPORT:
  NUM_IMAGES: 1
""",
        )

    # ---- a tiny detection run ----------------------------------------------------------
    @cached_property
    def run(self) -> Path:
        """A finished 2-iteration run of ``det`` with a checkpoint at every iteration
        (model_0000000.pth, model_final.pth, config.yaml beside them)."""
        from resdet.detection import train
        from resdet.engine import load

        out = self.root / "run"
        opts = ["OUTPUT_DIR", str(out), "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()"]
        with quiet_logging():
            train(load(str(self.det), overrides=opts, datasets=True))
        assert (out / "model_0000000.pth").is_file() and (out / "config.yaml").is_file()
        return out

    # ---- bad inputs --------------------------------------------------------------------
    @cached_property
    def bad(self) -> Path:
        """Bad files and folders, built together (all small)."""
        b = self.root / "bad"
        b.mkdir()
        self._bad_weights(b)
        self._bad_configs(b)
        self._bad_outputs(b)
        return b

    def _bad_weights(self, b):
        _write(b / "notes.pth", "my notes: resnet18 fine-tuned on the blood cells, lr 0.02\n")
        _write(b / "notes.pkl", "my notes: resnet18 fine-tuned on the blood cells, lr 0.02\n")
        # what `wget` of a GitHub "blob" page saves instead of the weights
        _write(
            b / "page.pth",
            '<!DOCTYPE html>\n<html lang="en"><head><title>R-50.pkl</title></head></html>\n',
        )
        _write(b / "weights.json", json.dumps({"conv1.weight": [[0.1, 0.2]]}))
        (b / "empty.pth").write_bytes(b"")
        (b / "empty.pkl").write_bytes(b"")
        (b / "truncated.pth").write_bytes(self.tv18.read_bytes()[:4096])
        (b / "truncated.pkl").write_bytes(pickle.dumps({"conv1_w": list(range(2000))})[:1000])
        torch.save({"model": {"conv1.weight": CodeOnLoad(self.marker)}}, b / "evil.pth")
        (b / "evil.pkl").write_bytes(pickle.dumps({"model": {"conv1_w": CodeOnLoad(self.marker)}}))
        torch.save({"foo": torch.zeros(2)}, b / "foo_keys.pth")
        (b / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
        # .pth files that hold no named weights: a list, a bare tensor, a dict of numbers
        torch.save([torch.zeros(2)], b / "list.pth")
        torch.save(torch.zeros(3), b / "tensor.pth")
        torch.save({"epoch": 3, "lr": 0.1}, b / "no_tensors.pth")
        # a torchvision classifier saved from a DataParallel wrapper (names under module.)
        tv = torch.load(self.tv18, weights_only=True)
        torch.save({f"module.{k}": v for k, v in tv.items()}, b / "module_resnet18.pth")
        # a Lightning checkpoint: the ResNet is the LightningModule's attribute "model"
        lightning = {f"model.{k}": v for k, v in tv.items()}
        torch.save({"state_dict": lightning, "epoch": 3, "global_step": 9}, b / "lightning.ckpt")
        sd = torch.load(self.tv18, weights_only=True)
        sd["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
        torch.save(sd, b / "nan_resnet18.pth")
        # a classifier whose meta does not describe its weights
        c8 = torch.load(self.c8, weights_only=True)
        torch.save({"model": c8["model"], "meta": {}}, b / "meta_empty.pth")
        wrong = dict(c8["meta"], depth=20)
        torch.save({"model": c8["model"], "meta": wrong}, b / "meta_depth20.pth")
        # old conversions (no meta) whose YAML fragment is broken / names an unknown key
        for name, frag in (
            ("frag_broken", "MODEL:\n  RESNETS:\n    DEPTH: 18\n   STRIDE: [\n"),
            ("frag_unknown", "MODEL:\n  RESNETS:\n    DEPTH: 18\n    DEPTHS: 18\n"),
        ):
            _without_meta(self.r18, b / name / "r18_fpn.pth")
            _write(b / name / "r18_fpn.yaml", frag)

    def _bad_configs(self, b):
        _write(b / "broken.yaml", "SOLVER:\n  MAX_ITER: 10\n   BASE_LR: 0.1\n")  # bad indentation
        _write(b / "list.yaml", "- SOLVER.MAX_ITER\n- 10\n")
        _write(b / "missing_base.yaml", '_BASE_: "Base-Not-There.yaml"\nSEED: 1\n')
        _write(b / "det_max_iters.yaml", f'_BASE_: "{self.det}"\nSOLVER:\n  MAX_ITERS: 10\n')
        _write(b / "pre_max_iters.yaml", f'_BASE_: "{self.pre}"\nSOLVER:\n  MAX_ITERS: 10\n')
        _write(b / "pipe_unknown.yaml", f'_BASE_: "{self.pipe}"\nDATA:\n  HOLDOUT: 0.3\n')
        (b / "binary.yaml").write_bytes(self.tv18.read_bytes()[:2048])
        # a key written twice (PyYAML keeps the last silently), a _BASE_ cycle
        _write(
            b / "det_twice.yaml", f'_BASE_: "{self.det}"\nSOLVER:\n  MAX_ITER: 5\n  MAX_ITER: 7\n'
        )
        _write(
            b / "pre_twice.yaml", f'_BASE_: "{self.pre}"\nSOLVER:\n  MAX_ITER: 5\n  MAX_ITER: 7\n'
        )
        _write(b / "cycle_a.yaml", '_BASE_: "cycle_b.yaml"\nSEED: 1\n')
        _write(b / "cycle_b.yaml", '_BASE_: "cycle_a.yaml"\nSEED: 2\n')
        # an empty YAML value (null), a dotted key where YAML nests
        _write(b / "det_null.yaml", f'_BASE_: "{self.det}"\nSOLVER:\n  MAX_ITER:\n')
        _write(b / "pre_null.yaml", f'_BASE_: "{self.pre}"\nSOLVER:\n  MAX_ITER:\n')
        _write(b / "det_dotted.yaml", f'_BASE_: "{self.det}"\nSOLVER.BASE_LR: 0.01\n')

    def _bad_outputs(self, b):
        _write(b / "plain.txt", "a file where a folder is expected\n")
        (b / "adir").mkdir()
        (b / "adir.pth").mkdir()

    # detection data
    def _coco_images(self, name, content):
        """A COCO file of one coco128 image whose file (under name/images) holds ``content``."""
        data = self.coco_data()
        image = data["images"][0]
        root = self.root / "bad_data" / name
        (root / "images").mkdir(parents=True)
        name = image["file_name"]
        (root / "images" / name).write_bytes(content(self.coco_img / name))
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        _write(root / "train.json", json.dumps(dict(data, images=[image], annotations=anns)))
        return root

    @cached_property
    def coco_zero(self) -> Path:
        return self._coco_images("coco_zero", lambda p: b"")

    @cached_property
    def coco_text(self) -> Path:
        return self._coco_images("coco_text", lambda p: b"not an image, a text file renamed .jpg\n")

    @cached_property
    def coco_trunc(self) -> Path:
        return self._coco_images("coco_trunc", lambda p: p.read_bytes()[:3000])

    @cached_property
    def coco_onebad(self) -> Path:
        """Both subset images, the second one 0 bytes."""
        data = self.coco_data()
        root = self.root / "bad_data" / "coco_onebad"
        (root / "images").mkdir(parents=True)
        for k, im in enumerate(data["images"]):
            dst = root / "images" / im["file_name"]
            dst.symlink_to(self.coco_img / im["file_name"]) if k == 0 else dst.write_bytes(b"")
        _write(root / "train.json", json.dumps(data))
        return root

    def coco_boxes(self, name, box):
        """The subset with every box replaced by ``box(x, y, w, h)``."""
        data = self.coco_data()
        for a in data["annotations"]:
            a["bbox"] = box(*a["bbox"])
        return _write(self.root / "bad_data" / f"{name}.json", json.dumps(data))

    def no_annotations(self):
        data = dict(self.coco_data(), annotations=[])
        return _write(self.root / "bad_data" / "no_annotations.json", json.dumps(data))

    @cached_property
    def d2ds(self) -> Path:
        """$DETECTRON2_DATASETS with VOC2007/ (trainval) whose first annotation misspells
        'person' as 'persn': the VOC class list is fixed, so that is an error."""
        root = self.root / "d2ds"
        voc = self.voc_variant("d2ds/VOC2007", split="trainval")
        # make the bccd objects VOC classes, then one typo
        for k, i in enumerate(VOC_IDS):
            path = voc / "Annotations" / f"{i}.xml"
            tree = ET.parse(path)
            for j, obj in enumerate(tree.findall("object")):
                obj.find("name").text = "persn" if (k == 0 and j == 0) else "person"
            tree.write(path)
        return root

    # prediction files
    def predictions(self, name, edit=None):
        """Perfect COCO predictions of the subset (its ground truth), edited by ``edit``."""
        data = self.coco_data()
        preds = [
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": a["bbox"],
                "score": 1.0,
            }
            for a in data["annotations"]
            if not a["iscrowd"]
        ]
        if edit is not None:
            preds = edit(preds)
        path = self.root / "preds" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(preds if isinstance(preds, str) else json.dumps(preds))
        return path

    def voc_json_predictions(self, name, voc=None, classes=None):
        """Perfect predictions for a VOC folder as COCO results, ids 1..K over ``classes``."""
        objs = self.voc_objects(voc)
        classes = classes or sorted({c for _, c, _ in objs})
        preds = [
            {
                "image_id": i,
                "category_id": classes.index(c) + 1,
                "bbox": [b[0] - 1, b[1] - 1, b[2] - b[0] + 1, b[3] - b[1] + 1],
                "score": 1.0,
            }
            for i, c, b in objs
        ]
        return _write(self.root / "preds" / name, json.dumps(preds))

    def devkit(self, name, lines_per_class=None, voc=None):
        """A folder of devkit result files; default: perfect detections of ``voc``."""
        folder = self.root / "preds" / name
        folder.mkdir(parents=True)
        if lines_per_class is None:
            lines_per_class = {}
            for i, c, b in self.voc_objects(voc):
                line = f"{i} 1.0 {b[0]:g} {b[1]:g} {b[2]:g} {b[3]:g}"
                lines_per_class.setdefault(c, []).append(line)
        for file_name, lines in lines_per_class.items():
            name = file_name if file_name.endswith(".txt") else f"comp4_det_test_{file_name}.txt"
            _write(folder / name, "".join(line + "\n" for line in lines))
        return folder

    # class-folder data
    def class_folders(self, name, train="good", test="good", flat=False):
        """train/ and test/ class folders; "good" links cifar images, "zero" writes 0-byte
        .jpg files, "bomb" links a decompression bomb (as .png), None leaves the split out;
        ``flat`` puts train images in no class folder."""
        root = self.root / "bad_data" / name
        for split, kind in (("train", train), ("test", test)):
            if kind is None:
                continue
            for c in CIFAR_CLASSES:
                d = root / split if (flat and split == "train") else root / split / c
                d.mkdir(parents=True, exist_ok=True)
                src = sorted((self.shared / "cifar10-mini" / split / c).iterdir())[:3]
                for f in src:
                    dst = d / f"{c}_{f.name}"
                    if kind == "zero":
                        dst.write_bytes(b"")
                    elif kind == "bomb":
                        dst.with_suffix(".png").symlink_to(self.bomb("refused"))
                    else:
                        dst.symlink_to(f)
        return root

    def bomb(self, kind):
        """A genuine decompression bomb, a few kB of PNG: black 1-bit pixels, more than
        twice PIL.Image.MAX_IMAGE_PIXELS ("refused": PIL raises) or more than it ("warned":
        PIL only warns)."""
        from PIL import Image

        path = self.root / "bombs" / f"{kind}.png"
        if not path.exists():
            side = {"refused": 15000, "warned": 10000}[kind]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("1", (side, side)).save(path)
        return path

    def coco_bomb(self, kind):
        """A COCO file of one image (coco128's first, boxes kept) whose file is a bomb."""
        data = self.coco_data()
        image = dict(data["images"][0], file_name=f"{kind}_bomb.png")
        image["width"] = image["height"] = {"refused": 15000, "warned": 10000}[kind]
        root = self.root / "bad_data" / f"coco_{kind}_bomb"
        (root / "images").mkdir(parents=True)
        (root / "images" / image["file_name"]).symlink_to(self.bomb(kind))
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        _write(root / "train.json", json.dumps(dict(data, images=[image], annotations=anns)))
        return root

    def coco_dict_predictions(self, name, edit):
        """Perfect predictions of the subset in the COCO dict form (class and file names
        inside), edited by ``edit``."""
        data = self.coco_data()
        anns = [dict(a, score=1.0) for a in data["annotations"] if not a["iscrowd"]]
        pred = {"images": data["images"], "categories": data["categories"], "annotations": anns}
        edit(pred)
        return _write(self.root / "preds" / name, json.dumps(pred))

    def pretrain_resume_dir(self, name, truncated=True):
        """An output folder whose last_checkpoint names a truncated (or missing) checkpoint."""
        d = self.root / "bad_data" / name
        d.mkdir(parents=True)
        (d / "last_checkpoint").write_text("model_0000002.pth")
        if truncated:
            (d / "model_0000002.pth").write_bytes(self.c8.read_bytes()[:5000])
        return d


def _first(preds, **changes):
    """The predictions with the first one changed (bbox entries as bbox0..bbox3)."""
    first = dict(preds[0])
    box = list(first["bbox"])
    for k, v in changes.items():
        if k.startswith("bbox") and k != "bbox":
            box[int(k[4:])] = v
        elif v is None:
            first.pop(k)
        else:
            first[k] = v
    first["bbox"] = changes.get("bbox", box)
    return [first] + preds[1:]


def _csv(preds):
    rows = [[p["image_id"], p["category_id"], *p["bbox"], p["score"]] for p in preds]
    lines = ["image_id,category_id,x,y,w,h,score"] + [",".join(map(str, r)) for r in rows]
    return "\n".join(lines) + "\n"


def _voc_cat4(c):
    path = c.voc_json_predictions("voc_cat4.json")
    preds = json.loads(path.read_text())
    preds[0]["category_id"] = 4
    path.write_text(json.dumps(preds))
    return path


def _gt_string_ids(c, name, key):
    """The subset with one id a string: the first image's (key "images") or the first
    category's (key "categories"), everywhere it is used."""
    data = c.coco_data()
    old = data[key][0]["id"]
    data[key][0]["id"] = str(old)
    field = "image_id" if key == "images" else "category_id"
    for a in data["annotations"]:
        if a[field] == old:
            a[field] = str(old)
    return _write(c.root / "bad_data" / name, json.dumps(data))


def _normalized(c):
    """Perfect predictions with every box divided by its image's size (YOLO's units)."""
    sizes = {im["id"]: (im["width"], im["height"]) for im in c.coco_data()["images"]}

    def scale(preds):
        out = []
        for q in preds:
            w, h = sizes[q["image_id"]]
            x, y, bw, bh = q["bbox"]
            out.append(dict(q, bbox=[x / w, y / h, bw / w, bh / h]))
        return out

    return c.predictions("normalized.json", scale)


def _sidecar_other_classes(c):
    """Perfect predictions whose X.categories.json gives their ids other class names."""
    path = c.predictions("sidecar.json")
    cats = [dict(k, name=k["name"].upper()) for k in c.coco_data()["categories"]]
    _write(path.with_name("sidecar.categories.json"), json.dumps(cats))
    return path


def _voc_split_binary(c):
    """A VOC folder whose ImageSets/Main/train.txt holds the bytes of a JPEG."""
    root = c.voc_variant("voc_split_binary")
    jpg = c.shared / "bccd" / "JPEGImages" / f"{VOC_IDS[0]}.jpg"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_bytes(jpg.read_bytes()[:3000])
    return root


def _cf_link_loop(c):
    """Class folders where a training class folder holds a link to its own parent."""
    root = c.class_folders("cf_link_loop")
    (root / "train" / CIFAR_CLASSES[0] / "loop").symlink_to("..")
    return root


def _tv_reference(c):
    """What torchvision's references/classification/train.py saves: the weights under
    "model" beside the optimizer, the scheduler, the epoch and its argparse.Namespace."""
    import argparse

    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    net.load_state_dict(torch.load(c.tv18, weights_only=True))
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=30)
    path = c.root / "tv_reference" / "checkpoint.pth"
    path.parent.mkdir(parents=True)
    torch.save(
        {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "lr_scheduler": sched.state_dict(),
            "epoch": 89,
            "args": argparse.Namespace(model="resnet18", lr=0.1, epochs=90),
        },
        path,
    )
    return path


def _run_noconfig(c):
    """A Detectron2 training checkpoint that carries no settings (what Detectron2's own
    trainer writes), with no config given for it."""
    _without_meta(c.run / "model_0000000.pth", c.root / "run_noconfig" / "model_0000000.pth")
    return c.root / "run_noconfig"


def _td_resume_trunc(c):
    d = c.root / "bad_data" / "td_resume_trunc"
    d.mkdir(parents=True)
    (d / "last_checkpoint").write_text("model_0000001.pth")
    (d / "model_0000001.pth").write_bytes(c.r18.read_bytes()[:5000])
    return d


GOOD_LINE = "BloodImage_00007 0.9 10 10 50 50"


def _pred(name, edit=None):
    return lambda c: c.predictions(name, edit)


def _dk(name, lines=None):
    return lambda c: c.devkit(name, lines)


def _neg(k):
    return lambda p: _first(p, **{f"bbox{k}": -p[0]["bbox"][k]})


# The named bad inputs of the corpus, built on first use: {name} in a case's argv.
BUILD = {
    # COCO results files (the subset's ground truth as perfect predictions, then broken)
    "p_perfect": _pred("perfect.json"),
    "p_empty_list": _pred("empty_list.json", lambda p: []),
    "p_empty_file": _pred("empty_file.json", lambda p: ""),
    "p_csv": _pred("csv.json", _csv),
    "p_truncated": _pred("truncated.json", lambda p: json.dumps(p)[: len(json.dumps(p)) // 2]),
    "p_wrapped": _pred("wrapped.json", lambda p: json.dumps({"annotations": p})),
    "p_lists": _pred(
        "lists.json",
        lambda p: [[q["image_id"], q["category_id"], *q["bbox"], q["score"]] for q in p],
    ),
    "p_neg_width": _pred("neg_width.json", _neg(2)),
    "p_neg_height": _pred("neg_height.json", _neg(3)),
    "p_zero_width": _pred("zero_width.json", lambda p: _first(p, bbox2=0)),
    "p_nan_score": _pred("nan_score.json", lambda p: _first(p, score=float("nan"))),
    "p_inf_box": _pred("inf_box.json", lambda p: _first(p, bbox0=float("inf"))),
    "p_str_score": _pred("str_score.json", lambda p: _first(p, score="0.9")),
    "p_no_score": _pred("no_score.json", lambda p: _first(p, score=None)),
    "p_bbox3": _pred("bbox3.json", lambda p: _first(p, bbox=p[0]["bbox"][:3])),
    "p_unknown_image": _pred("unknown_image.json", lambda p: _first(p, image_id=999999)),
    "p_file_name_id": _pred("file_name_id.json", lambda p: _first(p, image_id="000000000009.jpg")),
    "p_unknown_cat": _pred("unknown_cat.json", lambda p: _first(p, category_id=999)),
    "gt_empty": lambda c: _write(c.root / "preds" / "gt_empty.json", "{}"),
    "gt_str_image_id": lambda c: _gt_string_ids(c, "gt_str_image_id.json", "images"),
    "gt_str_category_id": lambda c: _gt_string_ids(c, "gt_str_category_id.json", "categories"),
    # boxes as [x0, y0, x1, y1]
    "p_normalized": _normalized,
    # a copy of the perfect predictions that --output names too (must stay intact)
    "p_self": _pred("self.json"),
    "p_xyxy": _pred(
        "xyxy.json",
        lambda p: [dict(q, bbox=[x, y, x + w, y + h]) for q in p for x, y, w, h in [q["bbox"]]],
    ),
    # the COCO dict form (class and file names inside) and X.categories.json
    "p_dict_unknown_class": lambda c: c.coco_dict_predictions(
        "dict_unknown_class.json", lambda p: p["categories"][0].update(name="persn")
    ),
    "p_dict_unknown_file": lambda c: c.coco_dict_predictions(
        "dict_unknown_file.json", lambda p: p["images"][0].update(file_name="holiday.jpg")
    ),
    "p_sidecar": _sidecar_other_classes,
    # VOC: JSON predictions (ids 1..K over the sorted classes) and devkit result folders
    "p_voc_perfect": lambda c: c.voc_json_predictions("voc_perfect.json"),
    "p_voc_cat4": _voc_cat4,
    "dk_perfect": _dk("dk_perfect"),
    "dk_empty": _dk("dk_empty", {}),
    "dk_typo": _dk("dk_typo", {"RBCs": [GOOD_LINE]}),
    "dk_badname": _dk("dk_badname", {"results.txt": [GOOD_LINE]}),
    "dk_short": _dk("dk_short", {"RBC": ["BloodImage_00007 0.9 10 10 50"]}),
    "dk_negw": _dk("dk_negw", {"RBC": ["BloodImage_00007 0.9 50 10 10 50"]}),
    "dk_nan": _dk("dk_nan", {"RBC": ["BloodImage_00007 nan 10 10 50 50"]}),
    "dk_unknown_img": _dk("dk_unknown_img", {"RBC": ["BloodImage_99999 0.9 10 10 50 50"]}),
    # VOC ground truth with a user's mistakes
    "voc_badxml": lambda c: c.voc_variant("voc_badxml", break_xml=True),
    "voc_space": lambda c: c.voc_variant("voc_space", rename={"RBC": "RBC "}),
    "voc_typo": lambda c: c.voc_variant("voc_typo", rename={"RBC": "RBc"}),
    # detection training data
    "coco_zero_boxes": lambda c: c.coco_boxes("zero_boxes", lambda x, y, w, h: [x, y, 0, 0]),
    "coco_neg_boxes": lambda c: c.coco_boxes(
        "negative_boxes", lambda x, y, w, h: [x + w, y + h, -w, -h]
    ),
    "coco_no_annotations": lambda c: c.no_annotations(),
    "coco_bomb": lambda c: c.coco_bomb("refused"),
    "coco_over_limit": lambda c: c.coco_bomb("warned"),
    "voc_split_binary": _voc_split_binary,
    # class folders
    "cf_notest": lambda c: c.class_folders("cf_notest", test=None),
    "cf_flat": lambda c: c.class_folders("cf_flat", flat=True),
    "cf_test_zero": lambda c: c.class_folders("cf_test_zero", test="zero"),
    "cf_train_zero": lambda c: c.class_folders("cf_train_zero", train="zero"),
    "cf_train_bombs": lambda c: c.class_folders("cf_train_bombs", train="bomb"),
    "cf_link_loop": _cf_link_loop,
    # checkpoints and run folders
    "tv_reference": _tv_reference,
    "run_noconfig": _run_noconfig,
    # a classifier only the "output is the source" case uses (it may be overwritten)
    "cls_copy": lambda c: _classifier(c.root / "cls_copy" / "model_final.pth"),
    "td_resume": _td_resume_trunc,
    "pt_resume_trunc": lambda c: c.pretrain_resume_dir("pt_resume_trunc"),
    "pt_resume_dangling": lambda c: c.pretrain_resume_dir("pt_resume_dangling", truncated=False),
}

"""The Python API (resdet/api.py) on real data: Predictor equals Detectron2's
DefaultPredictor on coco128, evaluate_predictions and convert_weights return what their
commands print and write, and every tool follows one convention."""

import ast
import json

import numpy as np
import pytest
import torch
from conftest import REPO, give_detections, load_tool
from test_train_det import _pretrained

import resdet
from resdet.errors import CheckpointError, ConfigError, DatasetError, ResdetError

TOOLS = [
    "convert_weights",
    "evaluate",
    "train_det",
    "pretrain_imagenet",
    "pipeline",
    "demo",
    "layer_responses",
    "degradation_study",
    "predict",
    "export",
]


def _detector_cfg():
    """A small R18-FPN detector config at 160 px (the test-time resize under test)."""
    from resdet.config import get_resdet_cfg

    cfg = get_resdet_cfg()
    cfg.merge_from_file(str(REPO / "configs" / "coco_r50_fpn.yaml"))
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.DEPTH",
            18,
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64,
            "MODEL.FPN.OUT_CHANNELS",
            64,
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            128,
            "MODEL.DEVICE",
            "cpu",
            "INPUT.MIN_SIZE_TEST",
            160,
            "INPUT.MAX_SIZE_TEST",
            256,
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            100,
        ]
    )
    return cfg


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """Detector weights with random frozen-BN statistics (so folding them changes the
    convs) and a box classifier that finds objects in photos but none in a grey image."""
    from detectron2.modeling import build_model

    torch.manual_seed(0)
    cfg = _detector_cfg()
    model = give_detections(build_model(cfg), std=0.03, background=3.0, cls_seed=1)
    path = tmp_path_factory.mktemp("det") / "detector.pth"
    torch.save({"model": model.state_dict()}, path)
    cfg.MODEL.WEIGHTS = str(path)
    return cfg, path


def _same(a, b):
    assert a.image_size == b.image_size and len(a) == len(b)
    torch.testing.assert_close(b.scores, a.scores, rtol=0, atol=1e-4)
    torch.testing.assert_close(b.pred_boxes.tensor, a.pred_boxes.tensor, rtol=1e-4, atol=1e-4)
    assert torch.equal(a.pred_classes, b.pred_classes)


def test_predictor_equals_default_predictor_on_coco128(detector, shared_data):
    from detectron2.data.detection_utils import read_image
    from detectron2.engine import DefaultPredictor

    cfg, weights = detector
    paths = sorted((shared_data / "coco128" / "train2017").glob("*.jpg"))[:4]
    bgr = [read_image(str(p), format="BGR") for p in paths]
    grey = np.full((300, 200, 3), 127, np.uint8)
    portrait = np.ascontiguousarray(bgr[1].transpose(1, 0, 2)[:, :300])  # another size and aspect
    reference = DefaultPredictor(cfg)
    want = [reference(im)["instances"] for im in bgr + [grey, portrait]]

    predictor = resdet.Predictor(
        "coco_r50_fpn.yaml",
        weights,
        overrides=[
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "64",
            "MODEL.FPN.OUT_CHANNELS",
            "64",
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            "128",
            "INPUT.MIN_SIZE_TEST",
            "160",
            "INPUT.MAX_SIZE_TEST",
            "256",
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            "100",
        ],
        batch_size=3,
    )
    # the BN of the prepared model is folded: no FrozenBatchNorm2d left
    assert not any(type(m).__name__ == "FrozenBatchNorm2d" for m in predictor.model.modules())
    from PIL import Image

    images = [
        str(paths[0]),
        bgr[1],
        torch.from_numpy(bgr[2].copy()).permute(2, 0, 1),
        Image.fromarray(bgr[3][:, :, ::-1].copy()),
        grey,
        portrait,
    ]  # a path, BGR arrays (OpenCV's order, as DefaultPredictor), a CHW tensor, a PIL image
    got = predictor(images)
    assert len(got) == len(images)
    for w, g in zip(want, got):
        _same(w, g["instances"])
    assert [len(w) > 0 for w in want] == [True, True, True, True, False, True]
    assert got[4]["instances"].pred_boxes.tensor.shape == (0, 4)  # no detections, still Instances
    assert got[5]["instances"].image_size == portrait.shape[:2]  # original coordinates
    # DefaultPredictor's own call: one BGR image in, one dict out, with the class names
    single = predictor(bgr[0])
    _same(want[0], single["instances"])
    assert (
        single["class_names"] == predictor.metadata.thing_classes
        and len(single["class_names"]) == 80
    )
    # arrays in RGB when told so
    rgb = resdet.Predictor(cfg, weights, input_format="RGB")(bgr[0][:, :, ::-1].copy())
    _same(want[0], rgb["instances"])


def test_predictor_refuses_what_would_predict_garbage(detector, tmp_path):
    cfg, weights = detector
    with pytest.raises(ResdetError, match="none.pth: no such file"):
        resdet.Predictor(cfg, tmp_path / "none.pth")
    state = torch.load(weights, weights_only=True)["model"]
    k0 = next(iter(state))
    partial = tmp_path / "partial.pth"
    torch.save({"model": {k: v for k, v in state.items() if "box_predictor" not in k}}, partial)
    with pytest.raises(CheckpointError, match="not in the file"):
        resdet.Predictor(cfg, partial)
    # beyond the trunk (whose extra keys resdet.detection.weights refuses already): a
    # Mask R-CNN's mask head, a cascade's stages: weights of another model
    extra = tmp_path / "extra.pth"
    torch.save({"model": {**state, "roi_heads.mask_head.predictor.weight": state[k0]}}, extra)
    with pytest.raises(CheckpointError, match="not in the model.*another model"):
        resdet.Predictor(cfg, extra)
    with pytest.raises(ConfigError, match="input_format"):
        resdet.Predictor(cfg, weights, input_format="RGBA")
    with pytest.raises(ConfigError, match=r"runtime 'nope': choose one of"):
        resdet.Predictor(cfg, weights, runtime="nope")
    predictor = resdet.Predictor(cfg, weights)
    with pytest.raises(ConfigError, match="uint8"):
        predictor([np.zeros((20, 20, 3), np.float32)])


def test_predictor_names_an_image_file_it_cannot_read(detector, tmp_path):
    """A text file, a folder, a bad batch size: one line naming them, not PIL's
    UnidentifiedImageError (an "unexpected" line in a command) or int()'s ValueError."""
    cfg, weights = detector
    predictor = resdet.Predictor(cfg, weights)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image\n")
    with pytest.raises(DatasetError, match=r"notes.jpg: not a readable image \(Unidentified"):
        predictor([notes])
    with pytest.raises(ConfigError, match=f"{tmp_path}: is a folder; give image files"):
        predictor(tmp_path)
    with pytest.raises(ConfigError, match="batch_size 'x': must be a whole number"):
        resdet.Predictor(cfg, weights, batch_size="x")


def _coco_subset(shared_data, path, n=6):
    full = json.loads((shared_data / "coco128/annotations/instances_train2017.json").read_text())
    ids = {im["id"] for im in full["images"][:n]}
    sub = dict(
        full,
        images=full["images"][:n],
        annotations=[a for a in full["annotations"] if a["image_id"] in ids],
    )
    path.write_text(json.dumps(sub))
    return path, sub


def test_evaluate_predictions_equals_the_command(shared_data, tmp_path, capsys):
    gt, data = _coco_subset(shared_data, tmp_path / "gt.json")
    # the ground truth as predictions, one box per object shifted by 20%: a known AP50 of
    # 100 for boxes that keep IoU >= 0.5, AP below 100
    preds = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "score": 0.9,
            "bbox": [a["bbox"][0] + 0.1 * a["bbox"][2], a["bbox"][1], a["bbox"][2], a["bbox"][3]],
        }
        for a in data["annotations"]
        if not a.get("iscrowd")
    ]
    (tmp_path / "pred.json").write_text(json.dumps(preds))
    results = resdet.evaluate_predictions(
        str(gt), str(tmp_path / "pred.json"), output=tmp_path / "m.json"
    )
    assert results["bbox"]["AP50"] == pytest.approx(100.0) and results["bbox"]["AP"] < 100.0
    assert json.loads((tmp_path / "m.json").read_text())["bbox"]["AP"] == pytest.approx(
        results["bbox"]["AP"]
    )
    capsys.readouterr()
    assert (
        load_tool("evaluate").main(
            [
                "--gt",
                str(gt),
                "--pred",
                str(tmp_path / "pred.json"),
                "--output",
                str(tmp_path / "cli.json"),
            ]
        )
        == 0
    )
    assert f"{results['bbox']['AP']:.3f}" in capsys.readouterr().out
    assert json.loads((tmp_path / "cli.json").read_text()) == json.loads(
        (tmp_path / "m.json").read_text()
    )


def test_evaluate_predictions_scores_only_the_held_out_split(shared_data, tmp_path):
    """A VOC folder's held-out part ({"voc", "holdout"}) is its own ground truth: perfect
    predictions on it score 100, while the whole folder would count the rest as missed."""
    from resdet.data import load_voc_folder

    voc = shared_data / "bccd"
    held, meta = load_voc_folder(voc, "test", holdout=0.2, part="test")
    classes = meta["thing_classes"]
    preds = [
        {
            "image_id": r["image_id"],
            "category_id": a["category_id"] + 1,
            "score": 1.0,
            "bbox": [
                a["bbox"][0],
                a["bbox"][1],
                a["bbox"][2] - a["bbox"][0],
                a["bbox"][3] - a["bbox"][1],
            ],
        }
        for r in held
        for a in r["annotations"]
    ]
    (tmp_path / "p.json").write_text(json.dumps(preds))
    part = resdet.evaluate_predictions(
        {"voc": str(voc), "split": "test", "holdout": 0.2}, tmp_path / "p.json"
    )
    whole = resdet.evaluate_predictions(str(voc), tmp_path / "p.json", split="test")
    assert len(classes) == 3 and part["bbox"]["AP50"] == pytest.approx(100.0)
    assert whole["bbox"]["AP50"] < 50.0


def test_convert_weights_reports_what_it_found(tmp_path, capsys):
    src = _pretrained(tmp_path / "cls.pth")
    r = resdet.convert_weights(src, tmp_path / "r18.pth", layout="fpn", verify=True, size=64)
    assert (r["format"], r["depth"], r["shortcut"], r["input_format"], r["layout"]) == (
        "resdet",
        18,
        "B",
        "RGB",
        "fpn",
    )
    assert set(r["diffs"]) == {"res2", "res3", "res4", "res5"} and r["max_abs_diff"] < 1e-4
    # the settings travel inside the checkpoint; nothing is written beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls.pth", "r18.pth"]
    meta = torch.load(tmp_path / "r18.pth", weights_only=True)["meta"]
    assert (meta["format"], meta["depth"], meta["layout"], meta["input_format"]) == (
        "resdet-backbone",
        18,
        "fpn",
        "RGB",
    )
    assert r["config_keys"]["MODEL.RESNETS.DEPTH"] == 18
    tool = load_tool("convert_weights")
    capsys.readouterr()
    assert tool.main([str(src), str(tmp_path / "c4.pth")]) == 0
    printed = capsys.readouterr().out
    assert "MODEL.RESNETS.DEPTH 18" in printed and 'INPUT.FORMAT "RGB"' in printed
    assert tool.main([str(tmp_path / "missing.pth"), str(tmp_path / "x.pth")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "missing.pth" in err[0]


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_is_main_argv_returning_an_exit_code(name):
    """One convention: ``def main(argv=None) -> int`` in resdet/tools/<name>.py, and
    tools/<name>.py a shim that runs it: ``sys.exit(main())``."""
    tree = ast.parse((REPO / "resdet" / "tools" / f"{name}.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    assert main.args.args[0].arg == "argv" and main.args.defaults[0].value is None
    assert ast.unparse(main.returns) == "int"
    shim = ast.parse((REPO / "tools" / f"{name}.py").read_text())
    assert f"from resdet.tools.{name} import main" in [ast.unparse(n) for n in shim.body]
    guard = shim.body[-1]
    assert isinstance(guard, ast.If) and ast.unparse(guard.body[0]) == "sys.exit(main())"


@pytest.mark.parametrize(
    "name, argv, message",
    [
        (
            "train_det",
            ["--config", "configs/coco_r50.yaml", "SOLVER.MAX_ITER"],
            "overrides are KEY VALUE pairs; 'SOLVER.MAX_ITER' has no value",
        ),
        (
            "train_det",
            ["--config", "configs/coco_r50.yaml", "SOLVER.MAX_ITERS", "3"],
            "unknown config key SOLVER.MAX_ITERS; did you mean SOLVER.MAX_ITER",
        ),
        ("train_det", ["--config", "x.py"], "x.py: no such file"),
        # a LazyConfig .py takes KEY=VALUE overrides, checked as YAML ones
        (
            "train_det",
            ["--config", "lazy/faster_rcnn_r50_c4.py", "train.max_iter"],
            "'train.max_iter' is not KEY=VALUE",
        ),
        (
            "train_det",
            ["--config", "lazy/faster_rcnn_r50_c4.py", "train.max_iters=2"],
            "unknown config key train.max_iters; did you mean train.max_iter",
        ),
        (
            "pipeline",
            ["--output", "{tmp}/p", "SEED", "abc"],
            "SEED must be a whole number (like its default 0), got 'abc'",
        ),
        (
            "pretrain_imagenet",
            ["--config", "configs/imagenet/r18.yaml", "--data", "{tmp}/none"],
            "no such folder",
        ),
    ],
)
def test_bad_arguments_are_one_error_line(name, argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert load_tool(name).main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert not any("Traceback" in line for line in err)


def test_negative_max_images_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        load_tool("layer_responses").main(["--checkpoints", "x.pth", "--max-images", "-3"])
    assert e.value.code == 2
    assert (
        "--max-images: -3: must be at least 1" in capsys.readouterr().err.strip().splitlines()[-1]
    )


def test_predictor_takes_a_detectron2_lazyconfig(shared_data, tmp_path):
    """A LazyConfig from Detectron2's zoo (its Faster R-CNN R50-FPN: mask_rcnn_fpn.py without
    the mask head) predicts what DefaultPredictor does with the equal yacs config."""
    from detectron2 import model_zoo
    from detectron2.config import LazyCall as L
    from detectron2.config import get_cfg
    from detectron2.data import transforms as T
    from detectron2.data.detection_utils import read_image
    from detectron2.engine import DefaultPredictor
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 192]
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.3)
    cfg.MODEL.WEIGHTS = str(tmp_path / "r50.pth")
    torch.save({"model": model.state_dict()}, cfg.MODEL.WEIGHTS)
    lazy = model_zoo.get_config("common/models/mask_rcnn_fpn.py")
    lazy.model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
    lazy.dataloader = {
        "test": {
            "mapper": {
                "augmentations": [L(T.ResizeShortestEdge)(short_edge_length=128, max_size=192)]
            }
        }
    }
    paths = sorted((shared_data / "coco128" / "train2017").glob("*.jpg"))[:3]
    want = [DefaultPredictor(cfg)(read_image(str(p), "BGR"))["instances"] for p in paths]
    got = resdet.Predictor(lazy, cfg.MODEL.WEIGHTS)([str(p) for p in paths])
    assert sum(len(w) for w in want) > 0
    for w, g in zip(want, got):
        _same(w, g["instances"])


def test_resdet_pretrain_is_the_api_and_the_package(tmp_path):
    """``resdet.pretrain(...)`` is the API call and ``resdet.pretrain.train`` the package's
    function: neither name shadows the other, in any import order."""
    from resdet.errors import DatasetError
    from resdet.pretrain import train

    assert resdet.pretrain.train is train
    with pytest.raises(DatasetError, match="no such folder"):
        resdet.pretrain("imagenet/r18.yaml", data=tmp_path / "none", output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()

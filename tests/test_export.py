"""resdet.export: the dense part exported to ONNX, OpenVINO IR and TorchScript matches
PyTorch on real coco128 images, at several sizes and batches through one export, and the
hybrid runtime detector gives PyTorch's detections.

Two R18 detectors (FPN and C4) are built once per session; their norms take the
statistics of their input (as training would leave them: with identity statistics the
activations blow up and the RPN yields degenerate boxes) and the classifier is drawn wide
enough that real detections pass the score threshold. Each is exported once per format.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO
from torch import nn

sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tools"))
from bench_detection import calibrate_norms  # noqa: E402

import resdet  # noqa: E402,F401
from resdet.engine import load  # noqa: E402
from resdet.errors import ConfigError  # noqa: E402

FORMATS = ("onnx", "openvino", "torchscript")
RUNTIME_OF = {"onnx": "onnxruntime", "openvino": "openvino", "torchscript": "torchscript"}
IMAGES = (
    "000000000009.jpg",
    "000000000036.jpg",
    "000000000025.jpg",
)  # landscape, portrait, landscape
COMMON = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RESNETS.DEPTH",
    "18",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "64",
    "INPUT.MIN_SIZE_TEST",
    "224",
    "INPUT.MAX_SIZE_TEST",
    "320",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.1",
    "DATASETS.TEST",
    "('coco_2017_val',)",
]
# the C4 head runs res5 on every proposal (about 1 GFLOP each for R18): fewer proposals
KINDS = {
    "FPN": COMMON
    + [
        "MODEL.FPN.OUT_CHANNELS",
        "64",
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        "256",
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        "300",
    ],
    "C4": COMMON + ["MODEL.RPN.POST_NMS_TOPK_TEST", "40"],
}


def _inputs(cfg, root):
    from detectron2.data import detection_utils, transforms

    resize = transforms.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    out = []
    for name in IMAGES:
        image = detection_utils.read_image(
            str(root / "coco128" / "train2017" / name), format=cfg.INPUT.FORMAT
        )
        h, w = image.shape[:2]
        image = resize.get_transform(image).apply_image(image)
        out.append(
            {
                "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "height": h,
                "width": w,
            }
        )
    return out


def _detector(kind, root):
    from detectron2.modeling import build_model

    cfg = resdet.get_resdet_cfg()
    cfg.merge_from_file(str(REPO / "configs" / f"Base-RCNN-{kind}.yaml"))
    cfg.merge_from_list(KINDS[kind])
    model = build_model(cfg).eval()
    inputs = _inputs(cfg, root)
    calibrate_norms(model, lambda: model(inputs[:1]))
    with torch.no_grad():  # confident, varied class scores: real detections to compare
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.05)
    return cfg, model, inputs


@pytest.fixture(scope="session")
def exported(shared_data, tmp_path_factory):
    """(coco128 inputs, {kind: (cfg, model, {format: export folder})}), exported once."""
    import export as export_tool

    from resdet.export import export_dense, export_model

    torch.manual_seed(0)
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("export")
    out = {}
    for kind in KINDS:
        cfg, model, inputs = _detector(kind, shared_data)
        weights, config = root / f"{kind}.pth", root / f"{kind}_config.yaml"
        torch.save({"model": model.state_dict()}, weights)
        config.write_text(cfg.dump())
        dirs = {f: root / kind / f for f in FORMATS}
        if kind == "FPN":  # once through the command line
            assert (
                export_tool.main(
                    [
                        "--config",
                        str(config),
                        "--weights",
                        str(weights),
                        "--format",
                        "onnx",
                        "--output",
                        str(dirs["onnx"]),
                    ]
                )
                == 0
            )
        else:
            export_model(str(config), weights, "onnx", dirs["onnx"])
        # the IR from the same ONNX graph: the graph export is most of the time
        export_dense(model, load(cfg), "openvino", dirs["openvino"], onnx_export=dirs["onnx"])
        export_model(cfg, weights, "torchscript", dirs["torchscript"])
        out[kind] = (cfg, model, dirs, _pytorch_results(model, inputs))
    return inputs, out


def _pytorch_results(model, inputs):
    """What PyTorch gives, per batch: the dense outputs and the detections."""
    from resdet.export import DenseRCNN

    dense = DenseRCNN(model)
    with torch.no_grad():
        return {
            "batches": [(x, dense(x)) for x in _batches(model, inputs)],
            "detections": [model(b) for b in _detection_batches(inputs)],
        }


def _detection_batches(inputs):
    return [[inputs[0]], [inputs[1]], [inputs[0], inputs[2]]]


def _batches(model, inputs):
    """Batch 1 at two sizes and a padded batch of 2, through the model's own preprocessing."""
    return [model.preprocess_image(b).tensor for b in _detection_batches(inputs)]


def _rel(got, want):
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_exported_features_match_pytorch(exported, kind, fmt):
    from resdet.export import load_dense

    _, models = exported
    _, _, dirs, pytorch = models[kind]
    dense = load_dense(dirs[fmt])
    assert len({tuple(x.shape) for x, _ in pytorch["batches"]}) == 3  # sizes and batches differ
    meta = json.loads((dirs[fmt] / "export.json").read_text())
    for x, want in pytorch["batches"]:
        got = dense(x)
        for out, w in zip(meta["outputs"], want):
            g = got[out["name"]]
            assert g.shape == w.shape, (out["name"], x.shape)
            assert _rel(g, w) < 1e-4, (out["name"], x.shape, _rel(g, w))


def _assert_same_detections(want, got):
    """Boxes within 0.01 px after matching (same class, nearest box), scores within 1e-4."""
    assert len(want) == len(got) > 0
    wb, gb = want.pred_boxes.tensor, got.pred_boxes.tensor
    dist = (wb[:, None] - gb[None]).abs().amax(-1)
    dist[want.pred_classes[:, None] != got.pred_classes[None]] = float("inf")
    used = set()
    for i in range(len(want)):
        order = [j for j in dist[i].argsort().tolist() if j not in used]
        j = order[0]
        used.add(j)
        assert dist[i, j] < 0.01, (i, float(dist[i, j]))
        assert abs(float(want.scores[i] - got.scores[j])) < 1e-4


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_runtime_detector_gives_pytorch_detections(exported, kind, fmt):
    from resdet.export import runtime_model

    inputs, models = exported
    cfg, model, dirs, pytorch = models[kind]
    hybrid = runtime_model(model, load(cfg), RUNTIME_OF[fmt], export_dir=dirs[fmt])
    for batch, want in zip(_detection_batches(inputs), pytorch["detections"]):
        with torch.no_grad():
            got = hybrid(batch)
        assert len(want) == len(got) == len(batch)
        for w, g, inp in zip(want, got, batch):
            assert g["instances"].image_size == (inp["height"], inp["width"])
            _assert_same_detections(w["instances"], g["instances"])


def test_openvino_bf16_stays_close(exported):
    """The reduced-precision path computes in bf16 (8 mantissa bits): percent-level feature
    error (relative L2), not the 1e-6 of fp32; its detections are compared in bench/README.md."""
    from resdet.export import load_dense

    _, models = exported
    _, _, dirs, pytorch = models["FPN"]
    x, want = pytorch["batches"][2]
    got = load_dense(dirs["openvino"], precision="bf16")(x)
    errors = {o: float((got[o] - w).norm() / w.norm()) for o, w in zip(got, want)}
    assert max(errors.values()) < 0.1, errors
    assert max(errors[f] for f in ("p2", "p3", "p4", "p5")) < 0.05, errors


def test_openvino_bf16_detector_agrees_with_fp32(exported):
    """The bf16 path (dense part on OpenVINO bf16, box head in bf16) finds the fp32
    detections: the same class and IoU >= 0.5 for most of them."""
    from resdet.export import runtime_model

    inputs, models = exported
    cfg, model, dirs, pytorch = models["FPN"]
    low = runtime_model(model, load(cfg), "openvino", "bf16", export_dir=dirs["openvino"])
    with torch.no_grad():
        got = [low(batch) for batch in _detection_batches(inputs)]
    assert _found(pytorch["detections"], got) >= 0.8


def _found(want, got):
    """The share of ``want``'s detections that ``got`` has too (same class, IoU >= 0.5);
    both are lists (per batch) of lists (per image) of ``{"instances": ...}``."""
    from detectron2.structures import pairwise_iou

    matched = total = 0
    for wb, gb in zip(want, got):
        for w, g in zip(wb, gb):
            w, g = w["instances"], g["instances"]
            iou = pairwise_iou(w.pred_boxes, g.pred_boxes)
            iou[w.pred_classes[:, None] != g.pred_classes[None]] = 0
            matched += int((iou.max(1).values >= 0.5).sum()) if len(g) else 0
            total += len(w)
    assert total > 0
    return matched / total


def test_export_json_describes_the_graph(exported):
    _, models = exported
    for kind, (cfg, model, dirs, _) in models.items():
        for fmt, folder in dirs.items():
            meta = json.loads((folder / "export.json").read_text())
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                meta["files"] + ["export.json"]
            )
            assert meta["format"] == fmt and meta["model"] in meta["files"]
            assert meta["input"]["format"] == "RGB"
            assert meta["input"]["pixel_mean"] == pytest.approx(list(cfg.MODEL.PIXEL_MEAN))
            assert meta["input"]["pixel_std"] == pytest.approx(list(cfg.MODEL.PIXEL_STD))
            assert meta["input"]["size_divisibility"] == (32 if kind == "FPN" else 0)
            assert meta["test_resize"]["min_size"] == 224 and meta["test_resize"]["max_size"] == 320
            assert len(meta["class_names"]) == 80 and meta["class_names"][0] == "person"
            strides = {o["name"]: o["stride"] for o in meta["outputs"]}
            if kind == "FPN":
                assert strides == {
                    **{f"p{i}": 2**i for i in range(2, 6)},
                    **{f"rpn_{k}_p{i}": 2**i for k in ("logits", "deltas") for i in range(2, 7)},
                }
            else:
                assert strides == {"res4": 16, "rpn_logits_res4": 16, "rpn_deltas_res4": 16}
            assert {"resdet", "torch"} <= set(meta["versions"])
            assert {"onnx": "onnxruntime", "openvino": "openvino"}.get(fmt, "torch") in meta[
                "versions"
            ]
        # nothing half-written left beside the exports
        assert sorted(p.name for p in dirs["onnx"].parent.iterdir()) == sorted(FORMATS)


def test_export_of_other_weights_is_refused(exported):
    import copy

    from resdet.export import runtime_model

    _, models = exported
    cfg, model, dirs, _ = models["FPN"]
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.backbone.bottom_up.stem.conv1.weight.mul_(1.01)
    with pytest.raises(ConfigError, match="other weights"):
        runtime_model(other, load(cfg), "onnxruntime", export_dir=dirs["onnx"])


@pytest.mark.parametrize("case", ["format", "weights", "output"])
def test_cli_errors_are_one_line_and_write_nothing(exported, tmp_path, capsys, case):
    import export as export_tool

    _, models = exported
    root = models["FPN"][2]["onnx"].parent.parent
    config, weights = root / "FPN_config.yaml", root / "FPN.pth"
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    args = {
        "format": ["--format", "tflite", "--output", str(tmp_path / "out")],
        "weights": ["--format", "onnx", "--output", str(tmp_path / "out")],
        "output": ["--format", "onnx", "--output", str(blocker / "out")],
    }[case]
    if case == "weights":
        weights = tmp_path / "missing.pth"
    assert export_tool.main(["--config", str(config), "--weights", str(weights)] + args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert {"format": "onnx, openvino, torchscript", "weights": "missing.pth", "output": "a_file"}[
        case
    ] in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_import_works_without_the_runtimes(exported):
    """The runtimes are an optional extra: resdet and resdet.export import without them,
    and using one says how to install it."""
    _, models = exported
    folder = models["FPN"][2]["onnx"]
    code = (
        "import sys\n"
        "for m in ('onnx', 'onnxruntime', 'openvino', 'onnxscript'): sys.modules[m] = None\n"
        "import resdet, resdet.export\n"
        "try:\n"
        f"    resdet.export.load_dense({str(folder)!r})\n"
        "except resdet.errors.ConfigError as e:\n"
        "    print(e)\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pip install onnxruntime" in run.stdout and "-e '.[deploy]'" in run.stdout


# R18-FPN with narrow heads, as a LazyConfig (KEY=VALUE); the test resize is read from
# dataloader.test.mapper, the class names from dataloader.test.dataset.names
LAZY_OVERRIDES = [
    "model.backbone.bottom_up.depth=18",
    "model.backbone.out_channels=64",
    "model.proposal_generator.head.in_channels=64",
    "model.proposal_generator.post_nms_topk=[200,300]",
    "model.roi_heads.box_head.input_shape.channels=64",
    "model.roi_heads.box_head.fc_dims=[256,256]",
    "model.roi_heads.box_predictor.input_shape.channels=256",
    "model.roi_heads.box_predictor.test_score_thresh=0.1",
    "dataloader.test.dataset.names=coco_2017_val",
    "dataloader.test.mapper.augmentations.0.short_edge_length=224",
    "dataloader.test.mapper.augmentations.0.max_size=320",
]


def test_lazyconfig_detector_exports_and_runs_as_pytorch(shared_data, tmp_path):
    """A LazyConfig detector exports through the command line like a YAML one (overrides
    as KEY=VALUE), its export.json is read from the LazyConfig, and Predictor(...,
    runtime="onnxruntime") on that config gives the PyTorch Predictor's detections."""
    import export as export_tool
    from detectron2.config import instantiate
    from detectron2.data import detection_utils

    from resdet import model_zoo
    from resdet.config import load_config
    from resdet.export import RuntimeRCNN

    config = model_zoo.get_config_file("lazy/faster_rcnn_r50_fpn.py")
    cfg = load_config(config, LAZY_OVERRIDES).cfg
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    images = [str(shared_data / "coco128" / "train2017" / name) for name in IMAGES]
    first = torch.as_tensor(
        np.ascontiguousarray(detection_utils.read_image(images[0], "RGB").transpose(2, 0, 1))
    )
    calibrate_norms(model, lambda: model([{"image": first}]))
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.05)
    weights = tmp_path / "lazy_r18_fpn.pth"
    torch.save({"model": model.state_dict()}, weights)
    out = tmp_path / "onnx"
    argv = ["--config", config, "--weights", str(weights), "--format", "onnx", "--output", str(out)]
    assert export_tool.main(argv + LAZY_OVERRIDES) == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["test_resize"]["min_size"] == 224 and meta["test_resize"]["max_size"] == 320
    assert meta["input"]["format"] == "RGB" and meta["input"]["size_divisibility"] == 32
    assert meta["input"]["pixel_mean"] == pytest.approx([123.675, 116.28, 103.53])
    assert len(meta["class_names"]) == 80 and meta["class_names"][0] == "person"
    assert meta["architecture"]["depth"] == 18 and meta["weights"] == str(weights)

    cfg = load_config(config, LAZY_OVERRIDES).cfg
    torch_pred = resdet.Predictor(cfg, weights)
    onnx_pred = resdet.Predictor(cfg, weights, runtime="onnxruntime")
    assert isinstance(onnx_pred.model, RuntimeRCNN)
    want, got = torch_pred(images), onnx_pred(images)
    for w, g in zip(want, got):
        _assert_same_detections(w["instances"], g["instances"])


@pytest.fixture(scope="session")
def int8_exports(exported, shared_data, tmp_path_factory):
    """The FPN detector quantized to int8 from its fp32 ONNX export, calibrated on four
    coco128 images: once as ONNX (through the command line), once as OpenVINO IR."""
    import export as export_tool

    from resdet.export import export_dense

    _, models = exported
    cfg, model, dirs, _ = models["FPN"]
    root = tmp_path_factory.mktemp("int8")
    calibration = shared_data / "coco128" / "train2017"
    fp32 = dirs["onnx"].parent.parent
    argv = ["--config", str(fp32 / "FPN_config.yaml"), "--weights", str(fp32 / "FPN.pth")]
    argv += ["--format", "onnx", "--output", str(root / "onnx")]
    argv += ["--int8", str(calibration), "--calibration-images", "4"]
    # from an empty working folder: the quantizer's temporary files must not land in it
    cwd, before = root / "cwd", os.getcwd()
    cwd.mkdir()
    os.chdir(cwd)
    try:
        assert export_tool.main(argv) == 0
    finally:
        os.chdir(before)
    assert list(cwd.iterdir()) == []
    export_dense(
        model,
        load(cfg),
        "openvino",
        root / "openvino",
        onnx_export=dirs["onnx"],
        int8_calibration=calibration,
        calibration_images=4,
    )
    return {"onnx": root / "onnx", "openvino": root / "openvino"}


def test_int8_export_is_quantized_and_close_to_pytorch(exported, int8_exports):
    """The int8 graph holds int8 weights and quantize/dequantize pairs, keeps the RPN's
    output convs fp32, and gives PyTorch's features up to 8-bit noise on both runtimes
    (which round differently: they differ from each other about as much). The bound is
    loose because these weights are random: per-layer rounding noise adds up over the ~20
    layers (about 10-25% relative L2 seen); a graph fed the wrong scale or layout is off
    by about 100%."""
    import onnx

    from resdet.export import load_dense

    _, models = exported
    _, _, _, pytorch = models["FPN"]
    meta = json.loads((int8_exports["onnx"] / "export.json").read_text())
    assert meta["precision"] == "int8"
    assert meta["quantization"]["calibration_images"] == 4
    assert len(meta["quantization"]["fp32_nodes"]) == 10  # logits and deltas, 5 levels
    graph = onnx.load(str(int8_exports["onnx"] / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 20 and ops.count("DequantizeLinear") > 20
    assert sum(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer) >= 20
    x, want = pytorch["batches"][2]
    got = {rt: load_dense(d, precision="int8")(x) for rt, d in int8_exports.items()}
    for rt, out in got.items():
        errors = {o: float((out[o] - w).norm() / w.norm()) for o, w in zip(out, want)}
        assert max(errors.values()) < 0.35, (rt, errors)


def test_int8_detector_agrees_with_fp32(exported, int8_exports):
    """The hybrid detector on each int8 export finds most of the fp32 detections (same
    class, IoU >= 0.5); its AP change on trained models is in bench/README.md."""
    from resdet.export import runtime_model

    inputs, models = exported
    cfg, model, _, pytorch = models["FPN"]
    for rt, fmt in (("onnxruntime", "onnx"), ("openvino", "openvino")):
        low = runtime_model(model, load(cfg), rt, "int8", export_dir=int8_exports[fmt])
        with torch.no_grad():
            got = [low(batch) for batch in _detection_batches(inputs)]
        assert _found(pytorch["detections"], got) >= 0.7, rt


def test_int8_misuse_is_one_line(exported, int8_exports, tmp_path):
    from resdet.errors import DatasetError
    from resdet.export import export_dense, load_dense, runtime_model

    _, models = exported
    cfg, model, dirs, _ = models["FPN"]
    with pytest.raises(ConfigError, match="an int8 export; precision fp32"):
        load_dense(int8_exports["onnx"], precision="fp32")
    with pytest.raises(ConfigError, match="needs an int8 export"):
        load_dense(dirs["onnx"], precision="int8")
    with pytest.raises(ConfigError, match="give int8_calibration"):
        runtime_model(model, load(cfg), "onnxruntime", "int8", export_dir=tmp_path / "none")
    with pytest.raises(ConfigError, match="no int8 path"):
        runtime_model(model, load(cfg), "torchscript", "int8")
    with pytest.raises(ConfigError, match="not torchscript"):
        export_dense(model, load(cfg), "torchscript", tmp_path / "ts", int8_calibration=tmp_path)
    with pytest.raises(DatasetError, match="no images"):
        export_dense(model, load(cfg), "onnx", tmp_path / "q", int8_calibration=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_predictor_runs_int8(exported, shared_data):
    """Predictor(..., precision="int8", int8_calibration=FOLDER) quantizes the dense part
    on the fly and the box head's FCs dynamically, and finds most of the fp32 Predictor's
    detections."""
    from resdet.export import RuntimeRCNN

    _, models = exported
    fp32 = models["FPN"][2]["onnx"].parent.parent
    config, weights = fp32 / "FPN_config.yaml", fp32 / "FPN.pth"
    folder = shared_data / "coco128" / "train2017"
    images = [str(folder / name) for name in IMAGES]
    low = resdet.Predictor(
        config, weights, runtime="openvino", precision="int8", int8_calibration=folder
    )
    assert isinstance(low.model, RuntimeRCNN)
    # the prepared model's box head (PackedLinear) is quantized too, not left fp32
    int8 = torch.ao.nn.quantized.dynamic.Linear
    fcs = [m for m in low.model.roi_heads.box_head.modules() if isinstance(m, (nn.Linear, int8))]
    assert len(fcs) == 2 and all(isinstance(m, int8) for m in fcs), fcs
    assert _found([resdet.Predictor(config, weights)(images)], [low(images)]) >= 0.7

"""Export and load for deployment (resdet.export): the folder contract (one model and
export.json; the same metadata in the ONNX file's metadata_props, the IR's rt_info and the
.pt2's extra files), ``resdet.Predictor(folder)`` giving the PyTorch Predictor's
detections on coco128 for every format, fp32 kept fp32 on OpenVINO, int8 and bf16 only
when asked, a LazyConfig detector, and one-line errors.

The detectors are test_export_graph's (R18 with random frozen-BN statistics and a biased
box classifier: real detections without training), saved as a weights file and a config
file, as a user has them. Graph-level parity (all sizes, NMS ties, the standalone script)
is test_export_graph's.
"""

import json
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, load_tool
from test_export_graph import KINDS, _compare, _detector

import resdet
from resdet.errors import ConfigError
from resdet.export import FORMATS

IMAGES = ("000000000009.jpg", "000000000036.jpg", "000000000338.jpg", "000000000472.jpg")
MAX_TIES = 2  # differences from NMS ties allowed per export over IMAGES (counted, printed)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{kind: (weights, config)}: the detectors as files."""
    root = tmp_path_factory.mktemp("export_runs")
    out = {}
    for kind in KINDS:
        cfg, model, _ = _detector(kind)
        weights, config = root / f"{kind}.pth", root / f"{kind}_config.yaml"
        torch.save({"model": model.state_dict()}, weights)
        config.write_text(cfg.dump())
        out[kind] = (weights, config)
    return out


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory):
    """{(kind, format): folder}: the FPN detector in every format (onnx through the
    command line), the C4 one as onnx."""
    root = tmp_path_factory.mktemp("exports")
    out = {}
    for kind, fmt in [("FPN", f) for f in FORMATS] + [("C4", "onnx")]:
        weights, config = runs[kind]
        folder = root / f"{kind}_{fmt}"
        if (kind, fmt) == ("FPN", "onnx"):
            argv = ["--config", str(config), "--weights", str(weights), "--output", str(folder)]
            assert load_tool("export").main(argv) == 0
        else:
            resdet.export_model(config, weights, fmt, folder)
        out[kind, fmt] = folder
    return out


@pytest.fixture(scope="module")
def pytorch(runs, shared_data):
    """{kind: the PyTorch Predictor's outputs on IMAGES}."""
    paths = [shared_data / "coco128" / "train2017" / n for n in IMAGES]
    return paths, {kind: resdet.Predictor(c, w)(paths) for kind, (w, c) in runs.items()}


def _triples(outputs):
    return [
        (
            o["instances"].pred_boxes.tensor.numpy(),
            o["instances"].scores.numpy(),
            o["instances"].pred_classes.numpy(),
        )
        for o in outputs
    ]


def _assert_same(want, got, what):
    """The PyTorch Predictor's detections (original pixels), matched within a class: boxes
    within 0.01 px, scores within 1e-4; differences from NMS ties counted."""
    ties = 0
    for w, g in zip(_triples(want), _triples(got)):
        box, score, ties_i, unexplained = _compare(w, g)
        assert unexplained == 0 and box < 0.01 and score < 1e-4, what
        ties += ties_i
    print(f"\n{what}: {sum(len(w[0]) for w in _triples(want))} detections, {ties} from ties")
    assert ties <= MAX_TIES, what
    assert [o["class_names"] for o in got] == [o["class_names"] for o in want], what


@pytest.mark.parametrize("key", [("FPN", f) for f in FORMATS] + [("C4", "onnx")])
def test_predictor_of_an_export_gives_the_pytorch_predictors_detections(exports, pytorch, key):
    paths, want = pytorch
    folder = exports[key]
    predictor = resdet.Predictor(folder)
    got = predictor(paths)
    assert sum(len(o["instances"]) for o in want[key[0]]) > 20  # a comparison of something
    _assert_same(want[key[0]], got, f"{key[0]} {key[1]}")
    assert predictor.metadata.thing_classes == predictor.class_names
    assert predictor.class_names[:2] == ["person", "bicycle"] and len(predictor.class_names) == 80


def test_an_onnx_file_loads_alone_and_on_openvino(exports, pytorch):
    """``Predictor("model.onnx")``: the file carries its metadata; the same file on OpenVINO."""
    paths, want = pytorch
    onnx_file = exports["FPN", "onnx"] / "model.onnx"
    lone = onnx_file.parent.parent / "lone" / "detector.onnx"
    lone.parent.mkdir()
    lone.write_bytes(onnx_file.read_bytes())
    _assert_same(want["FPN"], resdet.Predictor(lone)(paths), "a lone .onnx")
    ov = resdet.Predictor(exports["FPN", "onnx"], runtime="openvino")
    _assert_same(want["FPN"], ov(paths), "onnx on openvino")


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_folder_holds_the_model_and_one_metadata_in_three_places(exports, runs, fmt):
    folder = exports["FPN", fmt]
    assert sorted(p.name for p in folder.iterdir()) == sorted(FORMATS[fmt].files + ("export.json",))
    mode = stat.S_IMODE(folder.stat().st_mode)
    assert mode & 0o055 == 0o055  # readable by others: a serving account (mkdtemp made 0700)
    meta = json.loads((folder / "export.json").read_text())
    assert meta["format"] == fmt and meta["precision"] == "fp32"
    assert meta["input"]["name"] == "image" and meta["input_format"] == "RGB"
    assert meta["test_resize"] == {"min_size": 256, "max_size": 400}
    assert len(meta["class_names"]) == meta["num_classes"] == 80
    assert meta["anchors"]["strides"] == [4, 8, 16, 32, 64]
    assert [o["name"] for o in meta["outputs"]] == ["boxes", "scores", "classes"]
    assert meta["weights"]["path"] == str(runs["FPN"][0]) and len(meta["weights"]["sha256"]) == 64
    assert {"resdet", "torch", "detectron2"} <= set(meta["versions"])
    inside = _metadata_inside(folder, fmt)
    assert inside == {k: v for k, v in meta.items() if k != "files"}


def _metadata_inside(folder, fmt):
    if fmt == "onnx":
        from resdet.export import read_graph_metadata

        return read_graph_metadata(folder / "model.onnx")
    if fmt == "openvino":
        import openvino as ov

        model = ov.Core().read_model(str(folder / "model.xml"))
        info = model.get_rt_info()["resdet"]
        return {k: json.loads(info[k].astype(str)) for k in info}
    extra = {"export.json": ""}
    torch.export.load(str(folder / "model.pt2"), extra_files=extra)
    return {k: v for k, v in json.loads(extra["export.json"]).items() if k != "files"}


def test_fp32_stays_fp32_and_bf16_is_asked_for(exports, pytorch):
    """OpenVINO runs an fp32 model in bf16 on a CPU with bf16 dot products unless told
    otherwise: an fp32 export is compiled with f32; bf16 only when asked, and it gives
    close detections."""
    from resdet.export import load_graph

    runner, _ = load_graph(exports["FPN", "openvino"])
    assert str(runner.request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")) in (
        "f32",
        "<Type: 'float32'>",
    )
    paths, want = pytorch
    low = resdet.Predictor(exports["FPN", "openvino"], precision="bf16")
    got = low(paths)
    top = [(w["instances"][:10], g["instances"]) for w, g in zip(want["FPN"], got)]
    assert sum(_agree(w, g) for w, g in top) / 40 > 0.7
    with pytest.raises(ConfigError, match="ONNX Runtime has no bf16"):
        resdet.Predictor(exports["FPN", "onnx"], precision="bf16")


def _agree(want, got):
    """How many of ``want``'s detections ``got`` has (same class, IoU >= 0.5)."""
    from detectron2.structures import pairwise_iou

    if len(want) == 0 or len(got) == 0:
        return 0
    iou = pairwise_iou(want.pred_boxes, got.pred_boxes)
    iou[want.pred_classes[:, None] != got.pred_classes[None]] = 0
    return int((iou.max(1).values >= 0.5).sum())


def test_int8_export_is_quantized_and_agrees_with_fp32(runs, pytorch, shared_data, tmp_path):
    """--int8: the graph's convolutions and linear layers quantized (QDQ), NMS and RoiAlign
    in fp32, recorded in export.json; it runs as int8 only, from an empty working folder
    without leaving anything there."""
    import onnx

    weights, config = runs["FPN"]
    cwd, before = tmp_path / "cwd", os.getcwd()
    cwd.mkdir()
    os.chdir(cwd)
    try:
        argv = ["--config", str(config), "--weights", str(weights), "--output", str(tmp_path / "q")]
        argv += ["--int8", str(shared_data / "coco128" / "train2017"), "--calibration-images", "4"]
        assert load_tool("export").main(argv) == 0
    finally:
        os.chdir(before)
    assert list(cwd.iterdir()) == []
    meta = json.loads((tmp_path / "q" / "export.json").read_text())
    assert meta["precision"] == "int8" and meta["quantization"]["calibration_images"] == 4
    graph = onnx.load(str(tmp_path / "q" / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("DequantizeLinear") > 20 and "NonMaxSuppression" in ops
    assert all(n.op_type != "QuantizeLinear" or "RoiAlign" not in n.name for n in graph.node)
    paths, want = pytorch
    got = resdet.Predictor(tmp_path / "q")(paths)
    top = [(w["instances"][:10], g["instances"]) for w, g in zip(want["FPN"], got)]
    assert sum(_agree(w, g) for w, g in top) / 40 > 0.5
    with pytest.raises(ConfigError, match="an int8 export; precision fp32 needs fp32"):
        resdet.Predictor(tmp_path / "q", precision="fp32")


def test_lazyconfig_detector_exports_and_runs_as_pytorch(shared_data, tmp_path):
    """A LazyConfig detector exports through the command line like a YAML one (overrides
    as KEY=VALUE); export.json's test resize and class names come from the LazyConfig."""
    from detectron2.config import instantiate

    from resdet import model_zoo
    from resdet.config import load_config

    overrides = [  # R18-FPN with narrow heads
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
    config = model_zoo.get_config_file("lazy/faster_rcnn_r50_fpn.py")
    cfg = load_config(config, overrides).cfg
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.05)
    weights = tmp_path / "lazy_r18_fpn.pth"
    torch.save({"model": model.state_dict()}, weights)
    out = tmp_path / "onnx"
    argv = ["--config", config, "--weights", str(weights), "--output", str(out)]
    assert load_tool("export").main(argv + overrides) == 0
    meta = json.loads((out / "export.json").read_text())
    assert meta["test_resize"] == {"min_size": 224, "max_size": 320}
    assert meta["input_format"] == "RGB" and meta["pixel_mean"] == pytest.approx(
        [123.675, 116.28, 103.53]
    )
    assert len(meta["class_names"]) == 80 and meta["architecture"]["depth"] == 18
    images = [shared_data / "coco128" / "train2017" / n for n in IMAGES[:2]]
    want = resdet.Predictor(cfg, weights)(images)
    _assert_same(want, resdet.Predictor(out)(images), "LazyConfig onnx")


@pytest.mark.parametrize("case", ["format", "weights", "output", "not an export"])
def test_cli_errors_are_one_line_and_write_nothing(runs, tmp_path, capsys, case):
    weights, config = runs["FPN"]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    args = {
        "format": ["--format", "tflite", "--output", str(tmp_path / "out")],
        "weights": ["--output", str(tmp_path / "out")],
        "output": ["--output", str(blocker / "out")],
        "not an export": ["--output", str(tmp_path / "mine")],
    }[case]
    if case == "weights":
        weights = tmp_path / "missing.pth"
    if case == "not an export":
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("mine")
    argv = ["--config", str(config), "--weights", str(weights)] + args
    assert load_tool("export").main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert {
        "format": "onnx, openvino, pt2",
        "weights": "missing.pth",
        "output": "a_file",
        "not an export": "holds other files",
    }[case] in err
    want = ["a_file"] + (["mine"] if case == "not an export" else [])
    assert sorted(p.name for p in tmp_path.iterdir()) == want


def test_what_is_not_an_export_is_one_line(tmp_path, exports):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="weights: give the trained detector's weights"):
        resdet.Predictor(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "export.json").write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(ConfigError, match="model.onnx is missing; export again"):
        resdet.Predictor(broken)
    with pytest.raises(ConfigError, match="runs onnx exports, not pt2"):
        resdet.Predictor(exports["FPN", "pt2"], runtime="onnxruntime")
    with pytest.raises(ConfigError, match="overrides do not apply"):
        resdet.Predictor(exports["FPN", "onnx"], overrides={"INPUT.MIN_SIZE_TEST": 300})


def test_import_works_without_the_runtimes(exports):
    """The runtimes are an optional extra: resdet and resdet.export import without them,
    and using one says how to install it."""
    folder = exports["FPN", "onnx"]
    code = (
        "import sys\n"
        "for m in ('onnx', 'onnxruntime', 'openvino', 'onnxscript'): sys.modules[m] = None\n"
        "import resdet, resdet.export\n"
        "try:\n"
        f"    resdet.Predictor({str(folder)!r})\n"
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


def test_a_config_and_weights_run_on_a_runtime(runs, pytorch):
    """``Predictor(config, weights, runtime=...)`` exports to a temporary folder first (what
    ``Predictor(folder)`` skips): the same detections."""
    paths, want = pytorch
    weights, config = runs["C4"]
    predictor = resdet.Predictor(config, weights, runtime="onnxruntime")
    _assert_same(want["C4"], predictor(paths), "C4 config on onnxruntime")
    assert np.all([o["class_names"] for o in want["C4"]])


_SIGNAL_AFTER_TWO_MODELS = """
import gc, os, signal, sys
import onnx
from onnx import TensorProto, helper
from resdet.export.runtimes import OpenVinoRunner

graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "relu",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, sys.argv[1])
first = OpenVinoRunner(sys.argv[1], 1, "fp32", "x", ["y"])
second = OpenVinoRunner(sys.argv[1], 1, "fp32", "x", ["y"])
del first  # freed in the order they were made, as a garbage collection may
gc.collect()
del second
gc.collect()
signal.signal(signal.SIGUSR1, lambda *_: print("handled"))
os.kill(os.getpid(), signal.SIGUSR1)
"""


def test_a_signal_after_two_openvino_models_are_freed_is_handled(tmp_path):
    """OpenVINO's CPU plugin leaves the thread on a freed signal stack when two models are
    freed first-made-first; the next Python signal handler (Ctrl-C, a DataLoader's SIGCHLD)
    then died with SIGSEGV: the full test run crashed so in test_resume."""
    proc = subprocess.run(
        [sys.executable, "-c", _SIGNAL_AFTER_TWO_MODELS, str(tmp_path / "relu.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "handled", (
        proc.returncode,
        proc.stderr[-2000:],
    )

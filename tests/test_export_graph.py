"""resdet.export.graph: the whole Faster R-CNN as one ONNX graph gives the PyTorch model's
detections, on ONNX Runtime and on OpenVINO, for an FPN and a C4 detector, at any input
size, and deploys with only onnxruntime, numpy and OpenCV (docs/deploy_standalone.py).

The two R18 detectors have random frozen-BN statistics and a random box classifier with
a background bias. The FPN keeps Detectron2's test defaults (score threshold 0.05, 100
detections per image): hundreds to thousands of (box, class) candidates per photo, on
both sides of the count where torchvision's batched_nms changes strategy. The C4 has a
higher threshold and 40 per image: from none (a grey image: empty outputs) to the cut.
Each is exported once per session.

Detections are matched within a class (box within 0.01 px, score within 1e-4, in the
pixels of the image the graph received). Two ways to break a tie may keep different
boxes: an NMS or a top-k between equal scores. Such differences are counted, printed,
and allowed only while they are few and each has an equal-score partner; every other
difference fails.
"""

import importlib.util
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, give_detections

from resdet.export.graph_ops import VANILLA_ABOVE
from resdet.export.runtimes import _keep_signal_stack

IMAGES = (  # tall, tall, landscape, landscape, wide, very wide, landscape, portrait
    "000000000415.jpg",
    "000000000113.jpg",
    "000000000321.jpg",
    "000000000360.jpg",
    "000000000338.jpg",
    "000000000472.jpg",
    "000000000009.jpg",
    "000000000036.jpg",
)
COMMON = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RESNETS.DEPTH",
    18,
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    64,
    "INPUT.MIN_SIZE_TEST",
    256,
    "INPUT.MAX_SIZE_TEST",
    400,
]
# C4's head runs res5 on every proposal: fewer proposals keep the test fast
KINDS = {
    "FPN": (
        "coco_r50_fpn.yaml",
        COMMON
        + [
            "MODEL.FPN.OUT_CHANNELS",
            64,
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            128,
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            300,
        ],
    ),
    "C4": (
        "coco_r50.yaml",
        COMMON
        + [
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            50,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            0.2,
            "TEST.DETECTIONS_PER_IMAGE",
            40,
        ],
    ),
}
RUNTIMES = ("onnxruntime", "openvino")
BOX_TOL, SCORE_TOL = 0.01, 1e-4
# scores this close count as equal (a tie) across runtimes, which round differently
TIE_TOL = 2e-6
# a tie partner is another box: at least this far (px) from the one it replaces
TIE_BOX_PX = 1.0
# tie-broken differences allowed per detector and runtime over all images
MAX_TIES = 4


def _detector(kind, *overrides):
    """A built detector with weights that give real detections (see the module doc);
    ``overrides``: more KEY, VALUE config pairs."""
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model

    from resdet.config import get_resdet_cfg

    config, opts = KINDS[kind]
    cfg = get_resdet_cfg()
    cfg.merge_from_file(str(REPO / "configs" / config))
    cfg.merge_from_list(opts + list(overrides))
    torch.manual_seed(0)
    model = give_detections(build_model(cfg).eval(), std=0.05, background=3.5)
    names = MetadataCatalog.get(cfg.DATASETS.TEST[0]).thing_classes
    return cfg, model, names


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """{kind: (cfg, model, onnx path)}, each exported once, into a folder of its own."""
    from resdet.export import export_graph_onnx

    out = {}
    for kind in KINDS:
        cfg, model, names = _detector(kind)
        path = tmp_path_factory.mktemp(f"graph_{kind}") / "model.onnx"
        resize = (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        info = export_graph_onnx(model, path, test_resize=resize, class_names=names)
        assert info["outputs"] == ["boxes", "scores", "classes"] and info["opset"] == 18
        assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no temporary
        out[kind] = (cfg, model, path)
    return out


@pytest.fixture(scope="module")
def coco(shared_data, graphs):
    """The coco128 images resized as the config's test resize (Detectron2's own
    ResizeShortestEdge), CHW float tensors in the model's channel order, and a grey one;
    per kind the PyTorch model's detections on each and the number of (box, class)
    candidates its final NMS had for each."""
    from unittest import mock

    from detectron2.data import detection_utils, transforms
    from detectron2.modeling.roi_heads import fast_rcnn

    cfg = graphs["FPN"][0]
    resize = transforms.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    images = []
    for name in IMAGES:
        path = shared_data / "coco128" / "train2017" / name
        image = detection_utils.read_image(str(path), format=cfg.INPUT.FORMAT)
        images.append(resize.get_transform(image).apply_image(image))
    images.append(np.full((200, 300, 3), 127, np.uint8))
    images = [
        torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).float() for im in images
    ]
    # the PyTorch model's detections, once for both runtimes
    detections, candidates = {}, {}
    for kind in KINDS:
        with mock.patch.object(fast_rcnn, "batched_nms", wraps=fast_rcnn.batched_nms) as nms:
            detections[kind] = [_pytorch(graphs[kind][1], im) for im in images]
        candidates[kind] = [len(c.args[0]) for c in nms.call_args_list]
    return images, detections, candidates


def _session(path, runtime, inputs=("image",)):
    """``arrays for inputs -> outputs`` of the ONNX graph at ``path`` on ``runtime``."""
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return lambda *x: session.run(None, dict(zip(inputs, x)))
    import openvino as ov

    # without the hint this CPU (bf16 dot products) would run the fp32 graph in bf16; the
    # signal stack kept as resdet's runner keeps it (OpenVINO leaves a freed one behind)
    with _keep_signal_stack():
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    def run(*x):
        out = compiled(dict(zip(inputs, x)))
        return [out[o] for o in compiled.outputs]

    return run


def _pytorch(model, image):
    """The model's detections in the pixels of ``image`` (CHW), before Detectron2 rescales
    them to an original size."""
    with torch.no_grad():
        r = model.inference([{"image": image}], do_postprocess=False)[0]
    return r.pred_boxes.tensor.numpy(), r.scores.numpy(), r.pred_classes.numpy()


def _compare(want, got):
    """Match ``got`` to ``want`` (each boxes, scores, classes) within a class, greedily by
    box distance; returns (matched pairs' max box and score differences, tie-broken
    differences, unexplained differences)."""
    wb, ws, wc = want
    gb, gs, gc = (np.asarray(a) for a in got)
    assert gb.shape == (len(gs), 4) and gc.dtype == np.int64 and gs.dtype == np.float32
    dist = np.abs(wb[:, None] - gb[None]).max(-1)
    close = (dist < BOX_TOL) & (np.abs(ws[:, None] - gs[None]) < SCORE_TOL)
    close &= wc[:, None] == gc[None]
    box = score = 0.0
    free = np.ones(len(gb), bool)
    unmatched_w = []
    for i in range(len(wb)):
        candidates = np.flatnonzero(close[i] & free)
        if len(candidates) == 0:
            unmatched_w.append(i)
            continue
        j = candidates[dist[i, candidates].argmin()]
        free[j] = False
        box, score = max(box, float(dist[i, j])), max(score, abs(float(ws[i] - gs[j])))
    # a difference is a tie when another detection, kept by either side, has its score
    # and another box (not the same box drifted or with another class: those are errors)
    boxes, scores = np.concatenate([wb, gb]), np.concatenate([ws, gs])
    ties = unexplained = 0
    for k in unmatched_w + [len(wb) + j for j in np.flatnonzero(free)]:
        partner = (np.abs(scores - scores[k]) <= TIE_TOL) & (
            np.abs(boxes - boxes[k]).max(-1) > TIE_BOX_PX
        )
        ties, unexplained = (ties + 1, unexplained) if partner.any() else (ties, unexplained + 1)
    return box, score, ties, unexplained


def test_comparison_tells_ties_from_errors():
    """The matcher under the parity tests: a moved box or a changed score is an error; two
    equal scores kept the other way round are a tie."""
    boxes = np.array([[0, 0, 10, 10], [20, 20, 40, 40], [1, 1, 11, 11]], np.float32)
    scores = np.array([0.9, 0.5, 0.5], np.float32)
    classes = np.array([1, 2, 2])
    want = (boxes[:2], scores[:2], classes[:2])
    assert _compare(want, want) == (0.0, 0.0, 0, 0)
    moved = boxes[:2] + np.array([[0, 0, 0.02, 0], [0, 0, 0, 0]], np.float32)
    assert _compare(want, (moved, scores[:2], classes[:2]))[3] == 2
    lower = scores[:2] - np.float32(2e-4)
    assert _compare(want, (boxes[:2], lower, classes[:2]))[3] == 4
    assert _compare(want, (boxes[:2], scores[:2], np.array([1, 3])))[3] == 2
    # the second box lost to an equal-score box of its class (NMS or top-k order)
    swapped = (boxes[[0, 2]], scores[[0, 2]], classes[[0, 2]])
    assert _compare(want, swapped) == (0.0, 0.0, 2, 0)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("kind", KINDS)
def test_graph_gives_pytorch_detections_on_coco128(graphs, coco, kind, runtime):
    cfg, model, path = graphs[kind]
    run = _session(path, runtime)
    images, pytorch, candidates = coco
    if kind == "FPN":
        # the grey image is C4's empty case; the FPN finds 100 boxes there, among anchors
        # whose RPN logits are equal or 1e-7 apart (a uniform image): which survive the
        # top-k and NMS is a coin toss, in Detectron2 as here (folding the norms alone
        # moves logits by 1e-7), and 4 of its 300 proposals differ
        images = images[:-1]
    sizes, counts, box, score, ties = set(), [], 0.0, 0.0, 0
    for image, want in zip(images, pytorch[kind]):
        sizes.add(tuple(image.shape[1:]))
        b, s, ties_i, unexplained = _compare(want, run(image[None].numpy()))
        assert unexplained == 0, (tuple(image.shape), len(want[0]))
        box, score, ties = max(box, b), max(score, s), ties + ties_i
        counts.append(len(want[0]))
    print(
        f"\n{kind} on {runtime}: {sum(counts)} detections, max box difference {box:.2g} px, "
        f"max score difference {score:.2g}, {ties} differences from ties"
    )
    assert box < BOX_TOL and score < SCORE_TOL
    assert ties <= MAX_TIES
    # what the comparison covered: sizes not multiples of 32, both orientations, the
    # top-k cut; FPN: both of batched_nms's strategies; C4: few detections and none
    assert all(h % 32 or w % 32 for h, w in sizes) and len(sizes) >= 6
    assert any(h > w for h, w in sizes) and any(w > 2 * h for h, w in sizes)
    cut = cfg.TEST.DETECTIONS_PER_IMAGE
    assert max(counts) == cut and min(counts[:8]) > 0
    if kind == "FPN":
        assert min(candidates[kind]) <= VANILLA_ABOVE < max(candidates[kind])
    else:
        assert min(counts[:-1]) < cut and counts[-1] == 0


@pytest.mark.parametrize("kind", KINDS)
def test_one_graph_runs_at_any_size(graphs, shared_data, kind):
    """Sizes the export never saw, odd ones included: no nchwc_ops failure, and the
    PyTorch model's detections at each."""
    _, model, path = graphs[kind]
    import onnx

    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[:2]] == [1, 3] and all(d.dim_param for d in dims[2:])
    run = _session(path, "onnxruntime")
    bgr = cv2.imread(str(shared_data / "coco128" / "train2017" / IMAGES[2]))
    found = []
    for h, w in ((333, 517), (256, 256), (481, 302), (97, 131)):
        rgb = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
        want = _pytorch(model, image)
        box, score, ties, unexplained = _compare(want, run(image[None].numpy()))
        assert unexplained == 0 and ties <= 1, (h, w)
        assert box < BOX_TOL and score < SCORE_TOL, (h, w)
        found.append(len(want[0]))
    assert sum(n > 0 for n in found) >= 3, found


def test_detectron2_own_resnet_and_res5_heads(shared_data, tmp_path):
    """The graph uses the model's modules only: Detectron2's own C4 (its ResNet and
    Res5ROIHeads, not resdet's) exports and gives its detections too."""
    from detectron2.modeling.backbone import ResNet
    from detectron2.modeling.roi_heads import Res5ROIHeads

    from resdet.export import export_graph_onnx

    _, model, _ = _detector(
        "C4", "MODEL.BACKBONE.NAME", "build_resnet_backbone", "MODEL.ROI_HEADS.NAME", "Res5ROIHeads"
    )
    assert type(model.backbone) is ResNet and type(model.roi_heads) is Res5ROIHeads
    export_graph_onnx(model, tmp_path / "d2.onnx")
    run = _session(tmp_path / "d2.onnx", "onnxruntime")
    bgr = cv2.imread(str(shared_data / "coco128" / "train2017" / IMAGES[3]))
    for h, w in ((256, 341), (333, 517)):
        rgb = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA)[:, :, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
        want = _pytorch(model, image)
        box, score, ties, unexplained = _compare(want, run(image[None].numpy()))
        assert len(want[0]) > 0 and unexplained == 0 and ties <= 1, (h, w)
        assert box < BOX_TOL and score < SCORE_TOL


def _standalone():
    spec = importlib.util.spec_from_file_location("deploy", REPO / "docs" / "deploy_standalone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the interpreter's prelude: torch, resdet and Detectron2 cannot be imported, and it says
# so before it runs the script as __main__
BLOCKED = ("torch", "torchvision", "detectron2", "resdet")
PRELUDE = f"""
import importlib.abc, runpy, sys
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(name + " is blocked")
for name in BLOCKED:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, Block())
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        print("blocked", name, file=sys.stderr)
    else:
        sys.exit(name + " can be imported")
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not loaded, loaded
"""


def test_standalone_deployment_without_torch(graphs, shared_data, tmp_path):
    """docs/deploy_standalone.py, in a process that cannot import torch, resdet or
    Detectron2, gives the PyTorch model's detections on the same resized pixels, in the
    original image's pixels (Detectron2's rescaling, clipping and empty-box removal)."""
    from resdet.export import read_graph_metadata

    cfg, model, path = graphs["FPN"]
    meta = read_graph_metadata(path)
    assert meta["test_resize"] == {"min_size": 256, "max_size": 400}
    assert meta["input_format"] == "RGB" and len(meta["class_names"]) == 80
    assert meta["size_divisibility"] == 32 and meta["outputs"] == ["boxes", "scores", "classes"]
    files = [str(shared_data / "coco128" / "train2017" / name) for name in IMAGES[4:6]]
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE, str(REPO / "docs" / "deploy_standalone.py")]
        + [str(path), *files, "--threads", "2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for name in BLOCKED:
        assert f"blocked {name}" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [d["image"] for d in lines] == files

    from detectron2.data import transforms

    deploy = _standalone()
    settings = {"input_format": "RGB", "min_size": 256, "max_size": 400, "class_names": None}
    for file, got in zip(files, lines):
        bgr = cv2.imread(file)
        x = deploy.preprocess(bgr, settings)
        height, width = bgr.shape[:2]
        # the script's resize gives Detectron2's output size
        assert x.shape[2:] == transforms.ResizeShortestEdge(256, 400).get_output_shape(
            height, width, 256, 400
        )
        with torch.no_grad():
            r = model([{"image": torch.from_numpy(x[0]), "height": height, "width": width}])
        r = r[0]["instances"]
        want = (r.pred_boxes.tensor.numpy(), r.scores.numpy(), r.pred_classes.numpy())
        result = (
            np.array(got["boxes"], np.float32).reshape(-1, 4),
            np.array(got["scores"], np.float32),
            np.array(got["classes"], np.int64),
        )
        box, score, ties, unexplained = _compare(want, result)
        assert len(want[0]) > 0 and unexplained == 0 and ties <= 1
        scale = max(height / x.shape[2], width / x.shape[3])  # the boxes are scaled up
        assert box < BOX_TOL * scale and score < SCORE_TOL
        assert got["names"] == [meta["class_names"][c] for c in got["classes"]]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_roi_align_is_torchvision_roi_align(runtime, tmp_path):
    """What the graph relies on: the runtime's RoiAlign (half_pixel: aligned=True;
    output_half_pixel: aligned=False) computes torchvision's roi_align, adaptive
    (sampling_ratio 0) and fixed sampling, on boxes inside, across and outside the map.
    (OpenVINO gives NaN for an empty box with half_pixel and adaptive sampling; the RPN
    drops empty boxes before they reach it.)"""
    import onnx
    import torchvision
    from onnx import TensorProto, helper

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 37, 53, generator=g)
    a, b = (torch.rand(64, 2, generator=g) * torch.tensor([260.0, 190.0]) - 20 for _ in "ab")
    boxes = torch.cat([torch.minimum(a, b), torch.maximum(a, b) + 0.5], dim=1)
    boxes[:3] = torch.tensor([[0, 0, 0.5, 0.3], [-10, -10, 5, 5], [200, 140, 260, 190]])
    for aligned in (True, False):
        for ratio in (0, 2):
            node = helper.make_node(
                "RoiAlign",
                ["x", "rois", "batch"],
                ["y"],
                coordinate_transformation_mode="half_pixel" if aligned else "output_half_pixel",
                output_height=7,
                output_width=5,
                sampling_ratio=ratio,
                spatial_scale=0.25,
            )
            graph = helper.make_graph(
                [node],
                "roi_align",
                [
                    helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, None, None]),
                    helper.make_tensor_value_info("rois", TensorProto.FLOAT, [None, 4]),
                    helper.make_tensor_value_info("batch", TensorProto.INT64, [None]),
                ],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 8, 7, 5])],
            )
            model = helper.make_model(
                graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=8
            )
            path = tmp_path / f"roi_align_{aligned}_{ratio}.onnx"
            onnx.save(model, str(path))
            feed = {"x": x.numpy(), "rois": boxes.numpy(), "batch": np.zeros(64, np.int64)}
            if runtime == "onnxruntime":
                import onnxruntime as ort

                got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                got = got.run(None, feed)[0]
            else:
                import openvino as ov

                with _keep_signal_stack():
                    compiled = ov.Core().compile_model(
                        str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
                    )
                got = compiled(feed)[0]
            want = torchvision.ops.roi_align(x, [boxes], (7, 5), 0.25, ratio, aligned).numpy()
            tol = 0 if runtime == "onnxruntime" else 1e-5  # ORT: the same arithmetic
            assert np.abs(got - want).max() <= tol, (aligned, ratio)


def test_graph_batched_nms_is_torchvision_batched_nms(tmp_path):
    """The graph's NMS, exported alone, keeps what Detectron2's batched_nms (torchvision's
    on the CPU) keeps, in its order, on both sides of the box count where torchvision
    switches from shifting the groups apart to one NMS per group, on both runtimes;
    scores equal by construction may come in another order (the only freedom)."""
    import torchvision
    from torch.export import Dim

    from resdet.export.graph_ops import ONNX_TRANSLATIONS, batched_nms

    class Nms(torch.nn.Module):
        def forward(self, boxes, scores, idxs):
            return batched_nms(boxes, scores, idxs, 0.5)

    g = torch.Generator().manual_seed(0)

    def data(n, groups):
        xy = torch.rand(n, 2, generator=g) * 300
        boxes = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 80 + 1], dim=1)
        scores = torch.rand(n, generator=g)
        scores[: n // 10] = scores[n // 10 : 2 * (n // 10)]  # ties
        return boxes, scores, torch.randint(0, groups, (n,), generator=g)

    dim = Dim("n")
    program = torch.onnx.export(
        Nms(),
        data(50, 5),
        dynamo=True,
        dynamic_shapes={"boxes": {0: dim}, "scores": {0: dim}, "idxs": {0: dim}},
        input_names=["boxes", "scores", "idxs"],
        custom_translation_table=ONNX_TRANSLATIONS,
        verbose=False,
    )
    program.save(str(tmp_path / "nms.onnx"))
    runs = {rt: _session(tmp_path / "nms.onnx", rt, ["boxes", "scores", "idxs"]) for rt in RUNTIMES}
    for n, groups in ((0, 3), (7, 1), (VANILLA_ABOVE, 80), (VANILLA_ABOVE + 1, 80), (3000, 5)):
        boxes, scores, idxs = data(n, groups)
        want = torchvision.ops.batched_nms(boxes, scores, idxs, 0.5).numpy()
        assert np.array_equal(Nms()(boxes, scores, idxs).numpy(), want), n  # eager: torchvision's
        for runtime, run in runs.items():
            (got,) = run(boxes.numpy(), scores.numpy(), idxs.numpy())
            assert sorted(got) == sorted(want), (runtime, n)
            assert np.array_equal(scores.numpy()[got], scores.numpy()[want]), (runtime, n)


def test_export_refuses_what_the_graph_cannot_hold(graphs, tmp_path):
    from detectron2.modeling import build_model

    from resdet.errors import ConfigError
    from resdet.export import export_graph_onnx

    cfg, model, _ = graphs["C4"]
    with pytest.raises(ConfigError, match="opset 16: the graph exports at opset 18 or later"):
        export_graph_onnx(model, tmp_path / "x.onnx", opset=16)
    with pytest.raises(ConfigError, match="class_names: 2 names for a detector of 80"):
        export_graph_onnx(model, tmp_path / "x.onnx", class_names=["a", "b"])
    masks = cfg.clone()
    masks.MODEL.MASK_ON = True
    with pytest.raises(ConfigError, match="boxes only"):
        export_graph_onnx(build_model(masks).eval(), tmp_path / "x.onnx")
    assert not any(tmp_path.iterdir())

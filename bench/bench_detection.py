"""Detection inference: resdet R50-FPN Faster R-CNN vs Detectron2's built-in R50-FPN vs
torchvision's fasterrcnn_resnet50_fpn, same image size and proposal counts.

resdet's model is Detectron2's GeneralizedRCNN with the resdet backbone. Its fp32 paths:
resdet's inference preparation in PyTorch (BN folded into convs, channels_last, backbone
and RPN head Inductor-compiled with frozen weights), and the whole detector exported by
resdet.export as one graph (normalisation, padding, backbone, RPN, NMS, RoiAlign, box head,
per-class NMS) run on ONNX Runtime and on OpenVINO, each loaded as ``resdet.Predictor``
loads an export; the fastest is the row, each path's ratio beside it, with the ONNX
Runtime graph's profile (milliseconds per op type) and the share of the machine's peak
(bench/common.peak_kernels, timed in the same loop). Reduced precision: the OpenVINO graph
at bf16 and the int8 exports (calibrated on 32 coco128 images) on both runtimes; the
fastest is ``detection_r50fpn_lowp_vs_torchvision``, with its agreement with fp32 on
coco128 images and the AP change bench/precision_ap.py measured on the demo detector
(bench/precision_ap.json). The eager PyTorch form is a reference row. Detectron2's built-in
gets the very same weights (identical parameter names); torchvision's has its own random
init (it takes the same image, proposal and detection counts).
"""

import copy
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torchvision
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SHARED_DATA,
    emit,
    interleaved,
    parser,
    peak_kernels,
    peaks,
    result,
)

import resdet  # noqa: E402
from resdet.engine import load  # noqa: E402
from resdet.export.exporter import export_detector  # noqa: E402
from resdet.export.runtimes import OnnxRuntimeRunner, load_export  # noqa: E402
from resdet.modeling import prepare_for_inference  # noqa: E402

H, W, PROPOSALS, DETECTIONS, SCORE_THRESH = 480, 640, 1000, 100, 0.05


def d2_cfg(backbone, device):
    cfg = resdet.add_resdet_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = PROPOSALS
    # the default of both libraries: a threshold of 0 would run NMS over 1000 x 80 boxes,
    # which dominates the time and is nothing like a trained model's few hundred
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = SCORE_THRESH
    cfg.TEST.DETECTIONS_PER_IMAGE = DETECTIONS
    # the benchmark's image size, which the int8 calibration images are resized to
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = H, W
    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = ""  # random weights (norms calibrated below)
    return cfg


def calibrate_norms(model, run):
    """Give every frozen (or eval-mode) norm the statistics of its own input on one pass
    of ``run()``, as training would have. With untrained weights and identity statistics
    a 50-layer net's activations grow without bound, the RPN's boxes degenerate and only
    a handful of proposals survive: the ROI heads, a large part of real inference, would
    then do almost no work."""

    def use_input_stats(norm, args):
        norm.running_mean.copy_(args[0].mean((0, 2, 3)))
        norm.running_var.copy_(args[0].var((0, 2, 3)))

    norms = (FrozenBatchNorm2d, torchvision.ops.FrozenBatchNorm2d, torch.nn.BatchNorm2d)
    hooks = [
        m.register_forward_pre_hook(use_input_stats)
        for m in model.modules()
        if isinstance(m, norms)
    ]
    with torch.no_grad():
        run()
    for h in hooks:
        h.remove()


def proposal_count(roi_heads, index, run):
    """Proposals per image that reach ``roi_heads`` (its ``index``-th argument) in ``run()``."""
    seen = []
    hook = roi_heads.register_forward_pre_hook(lambda m, args: seen.append(len(args[index][0])))
    with torch.no_grad():
        run()
    hook.remove()
    return seen[0]


def coco_inputs(n=4):
    """The first ``n`` coco128 images, resized as the benchmark's input (shortest side H)."""
    from detectron2.data import detection_utils
    from detectron2.data.transforms import ResizeShortestEdge

    files = sorted((SHARED_DATA / "coco128" / "train2017").glob("*.jpg"))[:n]
    resize = ResizeShortestEdge(H, W)
    out = []
    for f in files:
        img = detection_utils.read_image(str(f), format="RGB")
        img = resize.get_transform(img).apply_image(img)
        out.append(
            {
                "image": torch.as_tensor(img.transpose(2, 0, 1).copy()),
                "height": img.shape[0],
                "width": img.shape[1],
            }
        )
    return out


def agreement(ref, low, iou=0.5):
    """Fraction of ``ref``'s detections that ``low`` has too (same class, IoU >= ``iou``,
    greedy by score), and the mean |score difference| over those matched."""
    from detectron2.structures import pairwise_iou

    if len(ref) == 0:
        return None, None
    ious = pairwise_iou(ref.pred_boxes, low.pred_boxes)
    ious[ref.pred_classes[:, None] != low.pred_classes[None]] = 0
    used, matched, dscore = set(), 0, []
    for i in range(len(ref)):
        for j in ious[i].argsort(descending=True).tolist():
            if ious[i, j] < iou:
                break
            if j not in used:
                used.add(j)
                matched += 1
                dscore.append(abs(float(ref.scores[i] - low.scores[j])))
                break
    return matched / len(ref), (sum(dscore) / len(dscore) if dscore else None)


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    dev = args.device
    torch.manual_seed(0)
    img = torch.randint(0, 255, (3, H, W), dtype=torch.uint8, device=dev)
    d2_in = [{"image": img, "height": H, "width": W}]
    tv_in = [img.float() / 255]
    cfg = d2_cfg("build_resdet_fpn_backbone", dev)
    ours = build_model(cfg).eval()
    calibrate_norms(ours, lambda: ours(d2_in))
    builtin = build_model(d2_cfg("build_resnet_fpn_backbone", dev)).eval()
    builtin.load_state_dict(ours.state_dict())  # the same weights (same names), before folding
    trained = copy.deepcopy(ours)  # as a checkpoint would hold it, for the exports
    eager = prepare_for_inference(ours)
    ours = prepare_for_inference(copy.deepcopy(eager), compile=True)
    tv = (
        torchvision.models.detection.fasterrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            min_size=H,
            max_size=W,
            rpn_post_nms_top_n_test=PROPOSALS,
            box_detections_per_img=DETECTIONS,
            box_score_thresh=SCORE_THRESH,
        )
        .eval()
        .to(dev)
    )
    calibrate_norms(tv, lambda: tv(tv_in))
    tmp = tempfile.TemporaryDirectory()  # the exports, for as long as their runtimes run
    # the runtimes are CPU back-ends (the CUDA path is PyTorch's own)
    exported = exports(trained, cfg, Path(tmp.name)) if dev == "cpu" else {}
    paths = {"compiled": ours, **exported}
    precision = {k: k.rsplit("_", 1)[-1] if "_" in k else "fp32" for k in paths}
    counts = {
        "proposals_resdet": proposal_count(ours.roi_heads, 2, lambda: ours(d2_in)),
        "proposals_detectron2": proposal_count(builtin.roi_heads, 2, lambda: builtin(d2_in)),
        "proposals_torchvision": proposal_count(tv.roi_heads, 1, lambda: tv(tv_in)),
    }
    with torch.no_grad():
        # same weights, so the same boxes up to the float rounding of the folded BN
        ref = builtin(d2_in)[0]["instances"]
        counts["detections_detectron2"] = len(ref)
        outs = {k: m(d2_in)[0]["instances"] for k, m in paths.items()}  # also compiles
        diffs = {k: box_diff(ref, a) for k, a in outs.items() if precision[k] == "fp32"}
        kernels = peak_kernels(torch.device(dev), tmp.name, torch.get_num_threads())
        fns = {k: (lambda m: lambda: m(d2_in))(m) for k, m in paths.items()}
        fns.update(
            {
                "eager": lambda: eager(d2_in),
                "detectron2": lambda: builtin(d2_in),
                "torchvision": lambda: tv(tv_in),
            }
        )
        fns.update({k: fn for k, (fn, _, _) in kernels.items()})
        times = interleaved(fns, args.repeats, dev, stat=list)
        t = {k: statistics.median(v) for k, v in times.items()}
        peak, rates = peaks(kernels, times)
        gflop = model_flops(trained, d2_in)
        x = ours.preprocess_image(d2_in).tensor
        tb = interleaved(
            {"resdet": lambda: ours.backbone(x), "detectron2": lambda: builtin.backbone(x)},
            args.repeats,
            dev,
        )
        profile = ort_profile(Path(tmp.name) / "onnx" / "model.onnx", d2_in) if exported else {}
        coco = coco_inputs()
        agree = {
            k: [agreement(outs_of(paths["openvino_fp32"], b), outs_of(m, b)) for b in coco]
            for k, m in paths.items()
            if precision[k] != "fp32"
        }
    common = dict(image=f"{H}x{W}", **counts, model_gflop=round(gflop, 1))

    def row(name, candidates, other, goal, **extra):
        best = min(candidates, key=t.get)
        rate = gflop / t[best]
        return result(
            name,
            t[best],
            t[other],
            goal,
            OTHERS[other] + ("" if precision[best] == "fp32" else " fp32"),
            path=best,
            **{f"ratio_{k}": round(t[other] / t[k], 3) for k in candidates},
            **common,
            resdet_gflops=round(rate, 1),
            # against the peak of the path's own arithmetic
            fraction_of_peak=round(rate / peak[precision[best]], 3),
            **{f"peak_{k}_gflops": v for k, v in peak.items()},
            detections_resdet=len(outs[best]),
            **extra,
        )

    fp32 = [k for k in paths if precision[k] == "fp32"]
    rows = [
        row(
            "detection_r50fpn_vs_torchvision",
            fp32,
            "torchvision",
            1.8,
            max_box_diff_vs_detectron2=diffs[min(fp32, key=t.get)],
            profile_onnxruntime_ms=profile,
            **rates,
        ),
        row(
            "detection_r50fpn_vs_detectron2",
            fp32,
            "detectron2",
            1.6,
            max_box_diff_vs_detectron2=diffs[min(fp32, key=t.get)],
        ),
        result(
            "detection_r50fpn_eager_vs_detectron2",
            t["eager"],
            t["detectron2"],
            None,
            OTHERS["detectron2"],
            **common,
            note="reference: resdet's path without torch.compile (BN folded, channels_last)",
        ),
        result(
            "detection_backbone_fpn_vs_detectron2",
            tb["resdet"],
            tb["detectron2"],
            None,
            OTHERS["detectron2"],
            image=f"{H}x{W}",
            note="reference: the part resdet replaces in PyTorch (bottom-up + FPN)",
        ),
    ]
    ap_change = demo_ap_change()
    for kind, candidates, goal in (
        ("lowp", [k for k in paths if precision[k] != "fp32"], 4.0),
        ("bf16", [k for k in paths if precision[k] == "bf16"], None),
        ("int8", [k for k in paths if precision[k] == "int8"], None),
    ):
        if not candidates:
            continue
        best = min(candidates, key=t.get)
        matched = [a for a, _ in agree[best] if a is not None]
        dscore = [d for _, d in agree[best] if d is not None]
        dap = ap_change.get(best)
        r = row(
            f"detection_r50fpn_{kind}_vs_torchvision",
            candidates,
            "torchvision",
            goal,
            coco128_detection_agreement=round(sum(matched) / len(matched), 3) if matched else None,
            coco128_mean_score_diff=round(sum(dscore) / len(dscore), 4) if dscore else None,
            demo_detector_dAP=dap,
            note=f"agreement with the fp32 graph's detections (same class, IoU>=0.5) on "
            f"{len(coco)} coco128 images (random calibrated weights); demo_detector_dAP: "
            "bench/precision_ap.py on the trained demo detector (make demo)",
        )
        if goal is not None:  # the goal holds only with the AP kept (within 0.5 AP)
            r["met"] = bool(r["met"] and dap is not None and abs(dap) <= 0.5)
        rows.append(r)
    emit(rows, args.output)


OTHERS = {
    "torchvision": "torchvision fasterrcnn_resnet50_fpn",
    "detectron2": "detectron2 build_resnet_fpn_backbone (same weights)",
}


def outs_of(model, inputs):
    return model([inputs])[0]["instances"]


def box_diff(ref, got):
    """Largest distance, in pixels, from a detection of ``ref`` to the nearest of ``got``
    of the same class (the largest coordinate difference): after matching, as random
    weights give many near-equal scores whose order a rounding can swap."""
    if len(ref) == 0 or len(got) == 0:
        return None if len(ref) != len(got) else 0.0
    a, b = ref.pred_boxes.tensor, got.pred_boxes.tensor
    dist = (a[:, None] - b[None]).abs().amax(-1)
    dist[ref.pred_classes[:, None] != got.pred_classes[None]] = float("inf")
    return round(float(dist.amin(1).max()), 4)


def model_flops(model, inputs):
    """GFLOP of one inference of ``model`` on ``inputs`` (Detectron2's fvcore counter:
    multiply-adds, times 2; the convolutions and linear layers, not RoiAlign or NMS)."""
    from detectron2.utils.analysis import FlopCountAnalysis

    flops = FlopCountAnalysis(model, inputs)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    return 2 * flops.total() / 1e9


def ort_profile(path, inputs, runs=3, top=10):
    """Milliseconds per run in each op type of the ONNX graph on ONNX Runtime (its own
    profiler, resdet's session settings), the ``top`` largest: where the time goes."""
    import json

    runner = OnnxRuntimeRunner(path, torch.get_num_threads(), profile=Path(path).parent / "p")
    image = inputs[0]["image"].float()[None].numpy()
    for _ in range(runs + 1):  # the first run allocates: not counted
        runner(image)
    events = json.loads(Path(runner.session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e["name"] == "model_run")
    per_op = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > starts[1]:
            op = e["args"]["op_name"]
            per_op[op] = per_op.get(op, 0) + e["dur"] / 1000 / runs
    return {k: round(v, 1) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]}


def demo_ap_change() -> dict:
    """AP change of each reduced-precision path on the demo detector, as
    bench/precision_ap.py recorded it (``{path: dAP}``), or {} when it has not run."""
    import json

    recorded = Path(__file__).resolve().parent / "precision_ap.json"
    if not recorded.is_file():
        return {}
    return {k: round(v["dAP"], 2) for k, v in json.loads(recorded.read_text()).items()}


def exports(trained, cfg, tmp):
    """The whole detector exported as ``resdet export`` does (one graph), fp32 and int8
    (calibrated on 32 coco128 images), to ONNX and OpenVINO, and loaded as
    ``resdet.Predictor(folder)`` loads them."""
    setup = load(cfg, device="cpu", kind="detection")
    calibration = sorted((SHARED_DATA / "coco128" / "train2017").glob("*.jpg"))[:32]
    for fmt in ("onnx", "openvino"):
        # random weights give many near-equal scores: the export's own check (detections
        # equal in order) is replaced here by box_diff after matching
        export_detector(trained, setup, fmt, tmp / fmt, verify=False)
        export_detector(
            trained, setup, fmt, tmp / f"{fmt}_int8", verify=False, int8_calibration=calibration
        )
    return {
        "onnxruntime_fp32": load_export(tmp / "onnx", "onnxruntime"),
        "openvino_fp32": load_export(tmp / "openvino", "openvino"),
        "openvino_bf16": load_export(tmp / "openvino", "openvino", "bf16"),
        "onnxruntime_int8": load_export(tmp / "onnx_int8", "onnxruntime"),
        "openvino_int8": load_export(tmp / "openvino_int8", "openvino"),
    }


if __name__ == "__main__":
    main()

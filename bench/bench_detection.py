"""Detection inference: resdet R50-FPN Faster R-CNN vs Detectron2's built-in R50-FPN vs
torchvision's fasterrcnn_resnet50_fpn, fp32, same image size and proposal counts.

resdet's model is Detectron2's GeneralizedRCNN with the resdet backbone. Its fp32 paths:
resdet's inference preparation (BN folded into convs, channels_last, backbone and RPN head
Inductor-compiled with frozen weights), and the hybrid runtime models of resdet.export
(backbone, FPN and RPN head exported and run on ONNX Runtime or OpenVINO; RPN decoding,
ROI heads and NMS in PyTorch); the fastest is the row, each path's ratio beside it, with
the time split between the runtime and PyTorch. The bf16 row is the OpenVINO hybrid at
bf16 inference precision, the int8 row the faster int8 hybrid (ONNX Runtime or OpenVINO
on the graph quantized by resdet.export, calibrated on coco128 images), each with its
agreement with fp32 on coco128 images. The eager PyTorch form is a reference row.
Detectron2's built-in gets the very same weights (identical parameter names);
torchvision's has its own random init (it takes the same image, proposal and detection
counts).
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
from bench_backbone import peak_gemms  # noqa: E402
from common import SHARED_DATA, emit, interleaved, parser, result  # noqa: E402

import resdet  # noqa: E402
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
    hybrids = runtime_models(trained, cfg, Path(tmp.name)) if dev == "cpu" else {}
    counts = {
        "proposals_resdet": proposal_count(ours.roi_heads, 2, lambda: ours(d2_in)),
        "proposals_detectron2": proposal_count(builtin.roi_heads, 2, lambda: builtin(d2_in)),
        "proposals_torchvision": proposal_count(tv.roi_heads, 1, lambda: tv(tv_in)),
    }
    for k, m in hybrids.items():
        counts[f"proposals_{k}"] = proposal_count(m.roi_heads, 2, lambda: m(d2_in))
    fp32_paths = {"compiled": ours, **{k: m for k, m in hybrids.items() if "_" not in k}}
    with torch.no_grad():
        # same weights, so the same boxes up to the float rounding of the folded BN
        ref = builtin(d2_in)[0]["instances"]
        diffs = {}
        for k, m in fp32_paths.items():
            a = m(d2_in)[0]["instances"]
            n = min(len(a), len(ref))
            diff = (a.pred_boxes.tensor[:n] - ref.pred_boxes.tensor[:n]).abs()
            diffs[k] = float(diff.max()) if n else 0.0
        counts["detections"] = len(ref)
        fns = {k: (lambda m: lambda: m(d2_in))(m) for k, m in {**fp32_paths, **hybrids}.items()}
        fns.update(
            {
                "eager": lambda: eager(d2_in),
                "detectron2": lambda: builtin(d2_in),
                "torchvision": lambda: tv(tv_in),
            }
        )
        t = interleaved(fns, args.repeats, dev)
        x = ours.preprocess_image(d2_in).tensor
        parts = {"resdet": lambda: ours.backbone(x), "detectron2": lambda: builtin.backbone(x)}
        parts.update({f"dense_{k}": (lambda m: lambda: m.dense(x))(m) for k, m in hybrids.items()})
        rpn = ours.proposal_generator

        def dense_compiled():  # the same part in compiled PyTorch: backbone + RPN head
            f = ours.backbone(x)
            return rpn.rpn_head([f[k] for k in rpn.in_features])

        parts["dense_compiled"] = dense_compiled
        # the machine's fp32 peak, timed with the parts: how close the dense part runs to it
        gemms, gemm_gflop = peak_gemms(torch.device(dev), tmp.name, torch.get_num_threads())
        tb = interleaved({**parts, **gemms}, args.repeats, dev, stat=list)
        peak = max(gemm_gflop / min(tb.pop(k)) for k in gemms)
        tb = {k: statistics.median(v) for k, v in tb.items()}
        dense_gflop = dense_flops(trained, x)
    best = min(fp32_paths, key=t.get)
    ratios = {f"ratio_{k}": round(t["torchvision"] / t[k], 3) for k in fp32_paths}
    # the profile: the dense part (backbone, FPN, RPN head) per path, and the rest of the
    # best path (RPN decoding and NMS, ROI heads, per-class NMS: PyTorch in every path)
    dense_s = tb[f"dense_{best}"]
    where = {f"dense_s_{k}": round(tb[f"dense_{k}"], 4) for k in fp32_paths}
    where["rest_s"] = round(t[best] - dense_s, 4)
    where["dense_gflop"] = round(dense_gflop, 1)
    where["dense_fraction_of_peak"] = round(dense_gflop / dense_s / peak, 3)
    where["peak_gflops"] = round(peak, 1)
    common = dict(image=f"{H}x{W}", **counts)
    rows = [
        result(
            "detection_r50fpn_vs_torchvision",
            t[best],
            t["torchvision"],
            1.8,
            "torchvision fasterrcnn_resnet50_fpn",
            path=best,
            **ratios,
            **where,
            **common,
        ),
        result(
            "detection_r50fpn_vs_detectron2",
            t[best],
            t["detectron2"],
            1.6,
            "detectron2 build_resnet_fpn_backbone (same weights)",
            path=best,
            **{f"ratio_{k}": round(t["detectron2"] / t[k], 3) for k in fp32_paths},
            **common,
            max_box_diff_vs_detectron2=round(diffs[best], 4),
        ),
        result(
            "detection_r50fpn_eager_vs_detectron2",
            t["eager"],
            t["detectron2"],
            None,
            "detectron2 build_resnet_fpn_backbone (same weights)",
            **common,
            note="reference: resdet's path without torch.compile (BN folded, channels_last)",
        ),
        result(
            "detection_backbone_fpn_vs_detectron2",
            tb["resdet"],
            tb["detectron2"],
            None,
            "detectron2 build_resnet_fpn_backbone (same weights)",
            image=f"{H}x{W}",
            note="reference: the part resdet replaces (bottom-up + FPN); "
            "RPN and ROI heads are Detectron2's",
        ),
    ]
    # reduced precision: bf16 (OpenVINO) against the goal; int8 (ONNX Runtime and OpenVINO,
    # calibrated on coco128) as a reference row, the faster of the two
    low_rows = (
        ("bf16", ["openvino_bf16"], 3.0),
        ("int8", ["onnxruntime_int8", "openvino_int8"], None),
    )
    for precision, candidates, goal in low_rows:
        candidates = [k for k in candidates if k in hybrids]
        if not candidates:
            continue
        path = min(candidates, key=t.get)
        low = hybrids[path]
        agree = [
            agreement(fp32_paths["openvino"]([b])[0]["instances"], low([b])[0]["instances"])
            for b in coco_inputs()
        ]
        matched = [a for a, _ in agree if a is not None]
        rows.append(
            result(
                f"detection_r50fpn_{precision}_vs_torchvision",
                t[path],
                t["torchvision"],
                goal,
                "torchvision fasterrcnn_resnet50_fpn fp32",
                path=path,
                **{f"ratio_{k}": round(t["torchvision"] / t[k], 3) for k in candidates},
                **common,
                dense_s=round(tb[f"dense_{path}"], 4),
                pytorch_rest_s=round(t[path] - tb[f"dense_{path}"], 4),
                coco128_detection_agreement=round(sum(matched) / len(matched), 3)
                if matched
                else None,
                coco128_mean_score_diff=round(
                    sum(d for _, d in agree if d is not None) / max(1, len(matched)), 4
                ),
                note=f"random calibrated weights: agreement of {precision} with fp32 detections "
                "(same class, IoU>=0.5) on 4 coco128 images, not an AP change "
                "(bench/precision_ap.py gives that on trained models)",
            )
        )
    emit(rows, args.output)


def dense_flops(model, x):
    """GFLOP of the dense part (backbone, FPN, RPN head) on ``x``, as fvcore counts them
    (multiply-adds, times 2)."""
    from fvcore.nn import FlopCountAnalysis

    from resdet.export import DenseRCNN

    flops = FlopCountAnalysis(DenseRCNN(model).eval(), x)
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    return 2 * flops.total() / 1e9


def runtime_models(trained, cfg, tmp):
    """The detector with its dense part on each runtime resdet ships (exported once to
    ONNX; the OpenVINO IR converted from it; int8 quantized from it, calibrated on 32
    coco128 images)."""
    from resdet.export import export_dense, runtime_model

    export_dense(trained, cfg, "onnx", tmp / "onnx")
    export_dense(trained, cfg, "openvino", tmp / "openvino", onnx_export=tmp / "onnx")
    calibration = sorted((SHARED_DATA / "coco128" / "train2017").glob("*.jpg"))[:32]
    for fmt in ("onnx", "openvino"):
        export_dense(
            trained,
            cfg,
            fmt,
            tmp / f"{fmt}_int8",
            onnx_export=tmp / "onnx",
            int8_calibration=calibration,
        )
    return {
        "onnxruntime_int8": runtime_model(
            trained, cfg, "onnxruntime", "int8", export_dir=tmp / "onnx_int8"
        ),
        "openvino_int8": runtime_model(
            trained, cfg, "openvino", "int8", export_dir=tmp / "openvino_int8"
        ),
        "onnxruntime": runtime_model(trained, cfg, "onnxruntime", export_dir=tmp / "onnx"),
        "openvino": runtime_model(trained, cfg, "openvino", export_dir=tmp / "openvino"),
        "openvino_bf16": runtime_model(
            trained, cfg, "openvino", "bf16", export_dir=tmp / "openvino"
        ),
    }


if __name__ == "__main__":
    main()

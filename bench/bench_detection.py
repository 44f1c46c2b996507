"""Detection inference: resdet R50-FPN Faster R-CNN vs Detectron2's built-in R50-FPN vs
torchvision's fasterrcnn_resnet50_fpn, fp32, same image size and proposal counts.

resdet's model is Detectron2's GeneralizedRCNN with the resdet backbone, run through
resdet's inference preparation (BN folded into convs, channels_last, backbone and RPN head
Inductor-compiled with frozen weights); its eager form (not compiled) is reported beside
it. Detectron2's built-in gets the very same weights (identical parameter names);
torchvision's has its own random init (it takes the same image, proposal and detection
counts).
"""
import copy
import sys
from pathlib import Path

import torch
import torchvision
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d
from detectron2.modeling import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, interleaved, parser, result  # noqa: E402

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
    hooks = [m.register_forward_pre_hook(use_input_stats) for m in model.modules() if isinstance(m, norms)]
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


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    dev = args.device
    torch.manual_seed(0)
    img = torch.randint(0, 255, (3, H, W), dtype=torch.uint8, device=dev)
    d2_in = [{"image": img, "height": H, "width": W}]
    tv_in = [img.float() / 255]
    ours = build_model(d2_cfg("build_resdet_fpn_backbone", dev)).eval()
    calibrate_norms(ours, lambda: ours(d2_in))
    builtin = build_model(d2_cfg("build_resnet_fpn_backbone", dev)).eval()
    builtin.load_state_dict(ours.state_dict())  # the same weights (same names), before folding
    eager = prepare_for_inference(ours)
    ours = prepare_for_inference(copy.deepcopy(eager), compile=True)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=H, max_size=W, rpn_post_nms_top_n_test=PROPOSALS,
        box_detections_per_img=DETECTIONS, box_score_thresh=SCORE_THRESH).eval().to(dev)
    calibrate_norms(tv, lambda: tv(tv_in))
    counts = {"proposals_resdet": proposal_count(ours.roi_heads, 2, lambda: ours(d2_in)),
              "proposals_detectron2": proposal_count(builtin.roi_heads, 2, lambda: builtin(d2_in)),
              "proposals_torchvision": proposal_count(tv.roi_heads, 1, lambda: tv(tv_in))}
    with torch.no_grad():
        # same weights, so the same boxes up to the float rounding of the folded BN
        a, b = ours(d2_in)[0]["instances"], builtin(d2_in)[0]["instances"]
        n = min(len(a), len(b))
        box_diff = float((a.pred_boxes.tensor[:n] - b.pred_boxes.tensor[:n]).abs().max()) if n else 0.0
        counts["detections"] = len(a)
        t = interleaved({"resdet": lambda: ours(d2_in), "eager": lambda: eager(d2_in),
                         "detectron2": lambda: builtin(d2_in), "torchvision": lambda: tv(tv_in)}, args.repeats, dev)
        x = ours.preprocess_image(d2_in).tensor
        tb = interleaved({"resdet": lambda: ours.backbone(x), "detectron2": lambda: builtin.backbone(x)},
                         args.repeats, dev)
    rows = [
        result("detection_r50fpn_vs_torchvision", t["resdet"], t["torchvision"], 2.0,
               "torchvision fasterrcnn_resnet50_fpn", image=f"{H}x{W}", **counts),
        result("detection_r50fpn_vs_detectron2", t["resdet"], t["detectron2"], 1.3,
               "detectron2 build_resnet_fpn_backbone (same weights)", image=f"{H}x{W}", **counts,
               max_box_diff_vs_detectron2=round(box_diff, 4)),
        result("detection_r50fpn_eager_vs_detectron2", t["eager"], t["detectron2"], None,
               "detectron2 build_resnet_fpn_backbone (same weights)", image=f"{H}x{W}", **counts,
               note="reference: resdet's path without torch.compile (BN folded, channels_last)"),
        result("detection_backbone_fpn_vs_detectron2", tb["resdet"], tb["detectron2"], None,
               "detectron2 build_resnet_fpn_backbone (same weights)", image=f"{H}x{W}",
               note="reference: the part resdet replaces (bottom-up + FPN); RPN and ROI heads are Detectron2's"),
    ]
    emit(rows, args.output)


if __name__ == "__main__":
    main()

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
from detectron2.modeling import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, interleaved, parser, result  # noqa: E402

import resdet  # noqa: E402
from resdet.modeling import prepare_for_inference  # noqa: E402

H, W, PROPOSALS, DETECTIONS = 480, 640, 1000, 100


def d2_cfg(backbone, device):
    cfg = resdet.add_resdet_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = PROPOSALS
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # same work for every model: always 100 boxes
    cfg.TEST.DETECTIONS_PER_IMAGE = DETECTIONS
    cfg.MODEL.DEVICE = device
    return cfg


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    dev = args.device
    torch.manual_seed(0)
    ours = build_model(d2_cfg("build_resdet_fpn_backbone", dev)).eval()
    builtin = build_model(d2_cfg("build_resnet_fpn_backbone", dev)).eval()
    builtin.load_state_dict(ours.state_dict())  # the same weights (same names), before folding
    eager = prepare_for_inference(ours)
    ours = prepare_for_inference(copy.deepcopy(eager), compile=True)
    tv = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, min_size=H, max_size=W, rpn_post_nms_top_n_test=PROPOSALS,
        box_detections_per_img=DETECTIONS, box_score_thresh=0.0).eval().to(dev)
    img = torch.randint(0, 255, (3, H, W), dtype=torch.uint8, device=dev)
    d2_in = [{"image": img, "height": H, "width": W}]
    tv_in = [img.float() / 255]
    with torch.no_grad():
        # same weights, so the same boxes up to the float rounding of the folded BN
        a, b = ours(d2_in)[0]["instances"], builtin(d2_in)[0]["instances"]
        n = min(len(a), len(b))
        box_diff = float((a.pred_boxes.tensor[:n] - b.pred_boxes.tensor[:n]).abs().max()) if n else 0.0
        t = interleaved({"resdet": lambda: ours(d2_in), "eager": lambda: eager(d2_in),
                         "detectron2": lambda: builtin(d2_in), "torchvision": lambda: tv(tv_in)}, args.repeats, dev)
    rows = [
        result("detection_r50fpn_vs_torchvision", t["resdet"], t["torchvision"], 2.0,
               "torchvision fasterrcnn_resnet50_fpn", image=f"{H}x{W}", proposals=PROPOSALS),
        result("detection_r50fpn_vs_detectron2", t["resdet"], t["detectron2"], 1.3,
               "detectron2 build_resnet_fpn_backbone (same weights)", image=f"{H}x{W}", proposals=PROPOSALS,
               max_box_diff_vs_detectron2=round(box_diff, 4)),
        result("detection_r50fpn_eager_vs_detectron2", t["eager"], t["detectron2"], None,
               "detectron2 build_resnet_fpn_backbone (same weights)", image=f"{H}x{W}", proposals=PROPOSALS,
               note="reference: resdet's path without torch.compile (BN folded, channels_last)"),
    ]
    emit(rows, args.output)


if __name__ == "__main__":
    main()

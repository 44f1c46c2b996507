"""resdet inside Detectron2: registered builders, equivalence with Detectron2's own
ResNet, the C4 res5 head, and a Faster R-CNN step from every shipped config."""

from pathlib import Path

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import BACKBONE_REGISTRY, ROI_HEADS_REGISTRY, build_backbone, build_model
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone
from detectron2.modeling.backbone.resnet import build_resnet_backbone
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import resdet
from resdet.modeling import BasicBlock

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def d2_cfg(depth=50, **resnets):
    cfg = resdet.add_resdet_config(get_cfg())
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    for k, v in resnets.items():
        cfg.MODEL.RESNETS[k] = v
    return cfg


def test_import_registers_builders():
    assert "build_resdet_backbone" in BACKBONE_REGISTRY
    assert "build_resdet_fpn_backbone" in BACKBONE_REGISTRY
    assert "ResdetRes5ROIHeads" in ROI_HEADS_REGISTRY


def _randomize_bn(model):
    g = torch.Generator().manual_seed(1)
    for name, buf in model.state_dict().items():
        if "norm" in name and buf.dtype.is_floating_point:
            buf.copy_(
                torch.rand(buf.shape, generator=g) + 0.5
                if "var" in name or name.endswith("weight")
                else torch.randn(buf.shape, generator=g) * 0.1
            )


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("fpn", [False, True])
def test_equivalent_to_detectron2_resnet(depth, fpn):
    cfg = d2_cfg(depth, OUT_FEATURES=["res2", "res3", "res4", "res5"])
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    shape = resdet.modeling.backbone.ShapeSpec(channels=3)
    theirs = (build_resnet_fpn_backbone if fpn else build_resnet_backbone)(cfg, shape).eval()
    ours = (
        resdet.modeling.build_resdet_fpn_backbone if fpn else resdet.modeling.build_resdet_backbone
    )(cfg, shape).eval()
    _randomize_bn(ours)
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and not unexpected
    missing, unexpected = ours.load_state_dict(theirs.state_dict(), strict=False)
    assert not missing and not unexpected
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        a, b = ours(x), theirs(x)
    assert a.keys() == b.keys() and len(a) >= 4
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-5, k
    assert ours.output_shape() == theirs.output_shape()


def test_c4_res5_head_follows_depth_table():
    cfg = resdet.get_resdet_cfg()
    cfg.merge_from_file(str(CONFIGS / "Base-RCNN-C4.yaml"))
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESDET.SHORTCUT = "C"
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    res5 = model.roi_heads.res5
    assert len(res5) == 2 and all(
        isinstance(b, BasicBlock) and b.shortcut is not None for b in res5
    )
    assert model.roi_heads.box_predictor.cls_score.in_features == 512
    assert "roi_heads.res5.0.conv1.weight" in model.state_dict()


def test_frozen_parts_have_no_trainable_parameters():
    cfg = resdet.get_resdet_cfg()
    cfg.merge_from_file(str(CONFIGS / "coco_r50_fpn.yaml"))
    backbone = build_backbone(cfg)
    trainable = {
        n.split(".")[1]
        for n, p in backbone.named_parameters()
        if p.requires_grad and n.startswith("bottom_up.")
    }
    assert trainable == {"res3", "res4", "res5"}
    assert not any(
        p.requires_grad
        for n, p in backbone.named_parameters()
        if ".norm." in n and "bottom_up" in n
    )


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(RES5_DILATION=2, DEPTH=18, RES2_OUT_CHANNELS=64), "res5_dilation=2"),
        (dict(DEPTH=77), "depth=77"),
    ],
)
def test_bad_config_values_raise_value_error(bad, match):
    cfg = d2_cfg(50)
    for k, v in bad.items():
        cfg.MODEL.RESNETS[k] = v
    with pytest.raises(ValueError, match=match):
        resdet.modeling.build_resdet_backbone(cfg, resdet.modeling.backbone.ShapeSpec(channels=3))
    cfg = d2_cfg(50)
    cfg.MODEL.RESDET.SHORTCUT = "X"
    with pytest.raises(ValueError, match="'X'.*A, B, C"):
        resdet.modeling.build_resdet_backbone(cfg, resdet.modeling.backbone.ShapeSpec(channels=3))


def _small(cfg):
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 100
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 20
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 16
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_each_config_trains_one_step_and_infers(name):
    cfg = resdet.get_resdet_cfg()
    cfg.merge_from_file(str(CONFIGS / name))
    model = build_model(_small(cfg))
    model.train()
    img = torch.randint(0, 255, (3, 64, 96), dtype=torch.uint8)
    inst = Instances(
        (64, 96),
        gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 50.0, 40.0]])),
        gt_classes=torch.tensor([0]),
    )
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with EventStorage():
        losses = model([{"image": img, "instances": inst}])
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    changed = [
        n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])
    ]
    assert any(n.startswith("backbone.") for n in changed) and any(
        n.startswith("roi_heads.") for n in changed
    )
    model.eval()
    with torch.no_grad():
        (out,) = model([{"image": img, "height": 64, "width": 96}])
    assert out["instances"].image_size == (64, 96)
    assert out["instances"].pred_boxes.tensor.shape[1] == 4

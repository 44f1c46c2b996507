"""Placeholder smoke demo (replaced by the full pipeline demo): one R18-FPN Faster R-CNN
training step and an inference on a synthetic image, to prove the install works."""
import argparse

import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import resdet

ap = argparse.ArgumentParser()
ap.add_argument("--output", default="output/demo")
ap.add_argument("--data", default=None)
args = ap.parse_args()
cfg = resdet.get_resdet_cfg()
cfg.merge_from_file("configs/Base-RCNN-FPN.yaml")
cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.RES2_OUT_CHANNELS, cfg.MODEL.DEVICE = 18, 64, "cpu"
model = build_model(cfg)
img = torch.zeros(3, 128, 128, dtype=torch.uint8)
img[:, 32:96, 32:96] = 200
inst = Instances((128, 128), gt_boxes=Boxes(torch.tensor([[32.0, 32.0, 96.0, 96.0]])), gt_classes=torch.tensor([0]))
with EventStorage():
    losses = model([{"image": img, "instances": inst}])
print({k: round(v.item(), 4) for k, v in losses.items()})

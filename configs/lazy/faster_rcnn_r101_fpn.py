# Faster R-CNN R101-FPN; the model of configs/coco_r101_fpn.yaml.
from .faster_rcnn_r50_fpn import model, train

model.backbone.bottom_up.depth = 101
train.output_dir = "output/lazy/faster_rcnn_r101_fpn"

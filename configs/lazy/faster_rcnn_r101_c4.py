# Faster R-CNN R101-C4, the paper's COCO system; the model of configs/coco_r101.yaml.
from .faster_rcnn_r50_c4 import model, train

model.backbone.depth = 101
train.output_dir = "output/lazy/faster_rcnn_r101_c4"

# Faster R-CNN R152-C4 (the paper's deepest detector); the model of configs/coco_r152.yaml.
from .faster_rcnn_r50_c4 import model, train

model.backbone.depth = 152
train.output_dir = "output/lazy/faster_rcnn_r152_c4"

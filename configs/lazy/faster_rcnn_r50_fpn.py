# Faster R-CNN R50-FPN with the resdet trunk as a LazyConfig: Detectron2's common FPN
# model (masks off), COCO data, SGD, 1x schedule and train settings, with resdet's trunk,
# RGB input and resdet's evaluator. It builds the same model as configs/coco_r50_fpn.yaml.
#   python tools/train_det.py --config configs/lazy/faster_rcnn_r50_fpn.py \
#       train.init_checkpoint=r50_fpn.pth         (from tools/convert_weights.py --layout fpn)
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from resdet.config import default_device
from resdet.evaluation import DetectionEvaluator
from resdet.lazy import resdet_bottom_up

model = model_zoo.get_config("common/models/mask_rcnn_fpn.py").model
model.backbone.bottom_up = resdet_bottom_up(50)
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
model.input_format = "RGB"
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.use_instance_mask = False
dataloader.evaluator = L(DetectionEvaluator)(
    dataset_name="${..test.dataset.names}", output_dir="${...train.output_dir}/inference"
)

optimizer = model_zoo.get_config("common/optim.py").SGD
lr_multiplier = model_zoo.get_config("common/coco_schedule.py").lr_multiplier_1x
train = model_zoo.get_config("common/train.py").train
train.output_dir = "output/lazy/faster_rcnn_r50_fpn"
train.device = default_device()  # CUDA when this machine has it, else the CPU

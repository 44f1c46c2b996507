# Faster R-CNN R50-C4 with the resdet trunk (the paper's detection system, Sec. A of
# He et al. 2015) as a LazyConfig: Detectron2's common C4 model, COCO data, SGD, 1x
# schedule and train settings, with resdet's trunk, its res5 RoI head, RGB input and
# resdet's evaluator. It builds the same model as the YAML configs/coco_r50.yaml.
#   python tools/train_det.py --config configs/lazy/faster_rcnn_r50_c4.py \
#       train.init_checkpoint=r50_c4.pth          (from tools/convert_weights.py --layout c4)
from detectron2 import model_zoo
from detectron2.config import LazyCall as L

from resdet.config import default_device
from resdet.evaluation import DetectionEvaluator
from resdet.lazy import resdet_bottom_up, resdet_res5
from resdet.modeling import ResdetRes5ROIHeads

model = model_zoo.get_config("common/models/mask_rcnn_c4.py").model
model.backbone = resdet_bottom_up(50, out_features=["res4"])
model.roi_heads._target_ = ResdetRes5ROIHeads
# the head's res5 follows the trunk's settings, so one override changes both
model.roi_heads.res5 = resdet_res5(
    depth="${...backbone.depth}",
    norm="${...backbone.norm}",
    shortcut="${...backbone.shortcut}",
    residual="${...backbone.residual}",
    stride_in_1x1="${...backbone.stride_in_1x1}",
)
model.roi_heads.box_predictor.input_shape.channels = 2048  # res5 width (512 for R18/R34)
model.roi_heads.mask_head = None  # Faster R-CNN: boxes only
# resdet and torchvision weights: RGB in [0, 255], ImageNet mean/std
model.input_format = "RGB"
model.pixel_mean = [123.675, 116.28, 103.53]
model.pixel_std = [58.395, 57.12, 57.375]

dataloader = model_zoo.get_config("common/data/coco.py").dataloader
dataloader.train.mapper.image_format = "RGB"
dataloader.train.mapper.use_instance_mask = False
# COCO AP, or VOC07 AP50 for a VOC-layout test set (RESDET.EVAL.METRIC "auto")
dataloader.evaluator = L(DetectionEvaluator)(
    dataset_name="${..test.dataset.names}", output_dir="${...train.output_dir}/inference"
)

optimizer = model_zoo.get_config("common/optim.py").SGD
lr_multiplier = model_zoo.get_config("common/coco_schedule.py").lr_multiplier_1x
train = model_zoo.get_config("common/train.py").train
train.output_dir = "output/lazy/faster_rcnn_r50_c4"
train.device = default_device()  # CUDA when this machine has it, else the CPU

"""Configuration keys of ImageNet/CIFAR pretraining.

The config is a Detectron2 CfgNode (``get_cfg()`` + :func:`resdet.add_resdet_config` +
the keys below), so every key shared with detection means the same thing here:
MODEL.RESNETS.DEPTH / STRIDE_IN_1X1, MODEL.RESDET.*, MODEL.PIXEL_MEAN / PIXEL_STD
(RGB, 0..255, as INPUT.FORMAT says), SOLVER.* (optimizer, LR schedule, AMP),
TEST.EVAL_PERIOD, DATALOADER.NUM_WORKERS, SEED, OUTPUT_DIR. Only what detection has
no key for is added: INPUT.CROP_SIZE, INPUT.TEST_SIZE and the PRETRAIN node.
"""

import torch
from detectron2.config import CfgNode as CN

from ..config import get_resdet_cfg

__all__ = ["add_pretrain_config", "get_pretrain_cfg"]


def add_pretrain_config(cfg):
    """Add the pretraining keys with their defaults to a resdet config (in place)."""
    cfg.INPUT.CROP_SIZE = 224  # training crop and test crop side
    cfg.INPUT.TEST_SIZE = 256  # shorter side before the 1-crop / 10-crop test crops

    P = cfg.PRETRAIN = CN()
    P.RECIPE = "paper"  # recorded in the checkpoint meta: paper | modern | cifar
    P.DATASET = "imagenet"  # network family (build_resnet's dataset): imagenet | cifar

    P.DATA = CN()
    P.DATA.ROOT = "datasets/imagenet"  # ImageFolder layout: ROOT/<split>/<class>/<image>
    P.DATA.TRAIN_SPLIT = "train"
    P.DATA.VAL_SPLIT = "val"

    P.AUG = CN()
    # "scale": shorter side random in SHORT_SIDE_RANGE, then a random crop (paper, ImageNet);
    # "resized_crop": RandomResizedCrop with RRC_SCALE (modern); "pad": pad PAD pixels
    # and take a random crop (paper, CIFAR).
    P.AUG.TRAIN_CROP = "scale"
    P.AUG.SHORT_SIDE_RANGE = (256, 480)
    P.AUG.RRC_SCALE = (0.08, 1.0)
    P.AUG.PAD = 4
    P.AUG.FLIP = True
    P.AUG.TRIVIAL_AUGMENT = False
    P.AUG.PCA_LIGHTING = 0.0  # AlexNet colour noise std (paper 0.1); 0 disables
    P.AUG.MIXUP_ALPHA = 0.0  # batch-level, one of MixUp/CutMix per batch; 0 disables
    P.AUG.CUTMIX_ALPHA = 0.0
    P.LABEL_SMOOTHING = 0.0

    P.EMA = CN()
    P.EMA.ENABLED = False  # when on, model_final.pth ships the EMA weights
    P.EMA.DECAY = 0.9999

    P.AMP_DTYPE = "bfloat16"  # with SOLVER.AMP.ENABLED; float16 only on CUDA
    P.CHANNELS_LAST = False
    P.COMPILE = False  # torch.compile the training model

    # SOLVER.LR_SCHEDULER_NAME "ReduceLROnPlateau" (paper, ImageNet): multiply the LR by
    # SOLVER.GAMMA when validation top-1 has not improved for PATIENCE evaluations.
    P.PLATEAU = CN()
    P.PLATEAU.PATIENCE = 2
    P.PLATEAU.THRESHOLD = 1e-3

    P.TEST = CN()
    # Final evaluation: "1crop" (CROP_SIZE centre crop of the TEST_SIZE image), "10crop"
    # (corners + centre, and their flips) and "multiscale" (fully convolutional on the
    # whole image at each shorter side in SCALES, scores averaged). eval.json reports the
    # first; evaluations during training (TEST.EVAL_PERIOD) use 1crop.
    P.TEST.MODES = ["1crop", "10crop", "multiscale"]
    P.TEST.SCALES = [224, 256, 384, 480, 640]
    P.TEST.IMS_PER_BATCH = 32  # per process (multiscale runs one image at a time)

    P.LOG_PERIOD = 20  # iterations between metrics.json / TensorBoard writes
    return cfg


def get_pretrain_cfg():
    """Detectron2's defaults + resdet's keys + the pretraining keys (CPU when no CUDA)."""
    cfg = add_pretrain_config(get_resdet_cfg())
    cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    return cfg

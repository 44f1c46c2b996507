"""resdet's configuration keys: detection, pretraining and the pipeline, all yacs CfgNodes.

resdet reuses Detectron2's keys wherever they mean the same thing (MODEL.RESNETS.DEPTH,
NORM, STRIDE_IN_1X1, RES5_DILATION, OUT_FEATURES, RES2_OUT_CHANNELS,
MODEL.BACKBONE.FREEZE_AT, SOLVER.*, TEST.EVAL_PERIOD, SEED, OUTPUT_DIR); only what
Detectron2 has no key for lives under MODEL.RESDET, RESDET and PRETRAIN. A pretraining
config is a detection config plus the PRETRAIN node, so a shared key means the same in both.
"""

from detectron2.config import CfgNode as CN

__all__ = [
    "add_resdet_config",
    "get_resdet_cfg",
    "add_pretrain_config",
    "get_pretrain_cfg",
    "get_pipeline_cfg",
    "DEFAULTS",
    "AUTO_DEVICE",
    "default_device",
]

# MODEL.DEVICE / train.device "auto": CUDA when this machine has it, else the CPU
# (resdet.engine.resolve_device, the one device policy; a named device that is not there
# is an error, never a silent fallback)
AUTO_DEVICE = "auto"


def default_device() -> str:
    """The device resdet's configs default to: CUDA when this machine has it, else the CPU
    (a concrete name, so Detectron2's own builders take the config as it is)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def add_resdet_config(cfg):
    """Add resdet's keys with their defaults to a Detectron2 config (in place)."""
    cfg.MODEL.RESDET = CN()
    # Paper Sec. 3.3 / Table 3: "A" zero-padded identity, "B" projection where the
    # shape changes, "C" projection on every block.
    cfg.MODEL.RESDET.SHORTCUT = "B"
    # False builds the plain (shortcut-free) counterpart with the same layers.
    cfg.MODEL.RESDET.RESIDUAL = True
    # Zero-init the last norm of each residual branch (helps training from scratch).
    cfg.MODEL.RESDET.ZERO_INIT_RESIDUAL = False

    cfg.RESDET = CN()
    # User datasets with no code: a COCO JSON file or a VOC-style folder (JPEGImages/,
    # Annotations/, optional ImageSets/Main/). Registered as "resdet_train"/"resdet_test"
    # and used when DATASETS.TRAIN/TEST name them. Class names come from the data.
    cfg.RESDET.DATA = CN()
    cfg.RESDET.DATA.TRAIN = ""
    cfg.RESDET.DATA.TRAIN_IMAGES = ""  # COCO JSON only: its image folder
    cfg.RESDET.DATA.TRAIN_SPLIT = ""  # VOC only: ImageSets/Main/<split>.txt; "" = all annotated
    cfg.RESDET.DATA.TEST = ""
    cfg.RESDET.DATA.TEST_IMAGES = ""
    cfg.RESDET.DATA.TEST_SPLIT = ""
    # The class names, in order (category ids 1..K); [] = the sorted object names found in a
    # VOC folder, or a COCO file's categories. When given, an object of any other class is an
    # error naming its file, so a misspelt name cannot become a class of its own.
    cfg.RESDET.DATA.CLASSES = []
    # VOC folder without ImageSets: hold out this fraction (deterministic) as the test split.
    cfg.RESDET.DATA.HOLDOUT_FRACTION = 0.0

    cfg.RESDET.WEIGHTS = CN()
    # MODEL.WEIGHTS must fill every trunk parameter with its shape (resdet.detection.weights);
    # False loads what fits and only logs the rest, as Detectron2 does.
    cfg.RESDET.WEIGHTS.STRICT = True

    cfg.RESDET.EVAL = CN()
    # "coco" (AP@[.5:.95]), "voc07" (11-point AP50), "voc" (area AP50); "auto": voc07 for
    # VOC-layout data, coco otherwise.
    cfg.RESDET.EVAL.METRIC = "auto"
    # Checkpoint kept as model_best.pth, by this metric of metrics.json ("auto": bbox/AP
    # for coco, bbox/AP50 for VOC metrics).
    cfg.RESDET.EVAL.BEST_METRIC = "auto"
    # Test images drawn with their predictions into OUTPUT_DIR/predictions/.
    cfg.RESDET.EVAL.NUM_VIS = 8
    # Only detections scoring at least this are drawn there (Detectron2's demo uses 0.5);
    # evaluation still sees every detection above MODEL.ROI_HEADS.SCORE_THRESH_TEST.
    cfg.RESDET.EVAL.VIS_THRESH = 0.5
    # --eval-only: also torch.compile the backbone and RPN head (resdet.modeling.
    # prepare_for_inference; 1.05-1.25x on the backbone on a CPU, one compile per new
    # input shape, so it pays off on long evaluations with few distinct image sizes).
    cfg.RESDET.EVAL.COMPILE = False
    return cfg


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
    # whole image at each shorter side in SCALES, scores averaged). metrics.json reports
    # the first; evaluations during training (TEST.EVAL_PERIOD) use 1crop.
    P.TEST.MODES = ["1crop", "10crop", "multiscale"]
    P.TEST.SCALES = [224, 256, 384, 480, 640]
    P.TEST.IMS_PER_BATCH = 32  # per process (multiscale runs one image at a time)

    P.LOG_PERIOD = 20  # iterations between train_log.json / TensorBoard writes
    return cfg


def get_resdet_cfg():
    """Detectron2's default config plus resdet's keys, on this machine's device."""
    from detectron2.config import get_cfg

    cfg = add_resdet_config(get_cfg())
    cfg.MODEL.DEVICE = default_device()
    return cfg


def get_pretrain_cfg():
    """Detectron2's defaults + resdet's keys + the pretraining keys."""
    cfg = add_pretrain_config(get_resdet_cfg())
    # a pretraining run folder is not a detection one (resdet.run_folder): its own default
    cfg.OUTPUT_DIR = "output/pretrain"
    return cfg


def get_pipeline_cfg():
    """The pipeline's keys and defaults (each stage's own settings live in its config)."""
    cfg = CN()
    cfg.OUTPUT_DIR = "output/demo"
    cfg.SEED = 0
    cfg.DATA = CN()
    # "" = generate the built-in shapes dataset; else a VOC-style folder or a COCO JSON
    cfg.DATA.ROOT = ""
    cfg.DATA.IMAGES = ""  # COCO JSON only: its image folder
    cfg.DATA.TEST = ""  # optional separate test set (COCO JSON or VOC folder)
    cfg.DATA.TEST_IMAGES = ""
    cfg.DATA.HOLDOUT_FRACTION = 0.2  # VOC folder without train/test splits: test share
    cfg.DATA.GENERATE = CN()
    cfg.DATA.GENERATE.NUM_TRAIN = 400
    cfg.DATA.GENERATE.NUM_TEST = 100
    cfg.DATA.GENERATE.IMAGE_SIZE = 192
    cfg.DATA.GENERATE.CLS_PER_CLASS = 120
    cfg.DATA.CROP_SIZE = 64  # classification crops cut from user detection data
    cfg.PRETRAIN = CN()
    cfg.PRETRAIN.CONFIG = "demo/pretrain_r18.yaml"  # a packaged config name or a path
    cfg.PRETRAIN.OPTS = []
    cfg.CONVERT = CN()
    cfg.CONVERT.LAYOUT = "fpn"
    cfg.DETECT = CN()
    cfg.DETECT.CONFIG = "demo/det_r18_fpn.yaml"
    cfg.DETECT.OPTS = []
    cfg.REPORT = CN()
    cfg.REPORT.NUM_IMAGES = 8  # prediction images in the report's grid
    return cfg


# the defaults of each kind of YAML config (resdet.config.files.config_kind)
DEFAULTS = {
    "detection": get_resdet_cfg,
    "pretrain": get_pretrain_cfg,
    "pipeline": get_pipeline_cfg,
}

"""resdet's configuration keys.

resdet reuses Detectron2's keys wherever they mean the same thing (MODEL.RESNETS.DEPTH,
NORM, STRIDE_IN_1X1, RES5_DILATION, OUT_FEATURES, RES2_OUT_CHANNELS,
MODEL.BACKBONE.FREEZE_AT); only what Detectron2 has no key for lives under MODEL.RESDET.
"""
from detectron2.config import CfgNode as CN


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
    cfg.RESDET.DATA.TRAIN_IMAGES = ""   # COCO JSON only: its image folder
    cfg.RESDET.DATA.TRAIN_SPLIT = ""    # VOC only: ImageSets/Main/<split>.txt; "" = all annotated
    cfg.RESDET.DATA.TEST = ""
    cfg.RESDET.DATA.TEST_IMAGES = ""
    cfg.RESDET.DATA.TEST_SPLIT = ""
    # VOC folder without ImageSets: hold out this fraction (deterministic) as the test split.
    cfg.RESDET.DATA.HOLDOUT_FRACTION = 0.0

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


def get_resdet_cfg():
    """Detectron2's default config plus resdet's keys."""
    from detectron2.config import get_cfg

    return add_resdet_config(get_cfg())

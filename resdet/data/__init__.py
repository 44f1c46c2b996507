"""Detection datasets: checked COCO/VOC loaders and their registration with Detectron2.

Importing this package registers the standard names (coco_2017_train/val,
voc_2007_trainval/test, voc_2012_trainval, voc_2007_2012_trainval) under
``$DETECTRON2_DATASETS``, else ``./datasets`` (as Detectron2);
:func:`register_user_datasets` adds the user's data from RESDET.DATA.* as
"resdet_train"/"resdet_test". :func:`read_image` is resdet's one way to read an image file.
"""

from .catalog import (  # noqa: F401
    datasets_root,
    register_coco_json,
    register_standard_datasets,
    register_user_datasets,
    register_voc_folder,
)
from .datasets import (  # noqa: F401
    DatasetError,
    holdout_split,
    load_coco_json,
    load_voc_folder,
    voc_class_names,
)
from .image import read_image  # noqa: F401
from .inputs import model_input  # noqa: F401

register_standard_datasets()

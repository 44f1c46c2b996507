"""Detection fine-tuning on Detectron2: the trainer, safe checkpoints, run outputs.

``main(args)`` is Detectron2's train_net ``main`` for resdet; tools/train_det.py only
parses arguments and launches it.
"""
from .checkpoint import ResdetCheckpointer, explicit_keys, merge_weights_fragment  # noqa: F401
from .train import Trainer, best_metric, main, setup_cfg  # noqa: F401
from .visualize import draw_predictions, plot_curves  # noqa: F401

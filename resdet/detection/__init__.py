"""Detection fine-tuning on Detectron2: the trainer, safe checkpoints, run outputs.

``setup_cfg(config, opts)`` then ``train(cfg, resume)`` or ``evaluate(cfg)``; ``train_net``
is both in one call, what Detectron2's ``launch`` runs in each process
(tools/train_det.py). ``resdet.train_detector`` / ``resdet.evaluate_detector`` wrap them.
"""

from .checkpoint import ResdetCheckpointer, explicit_keys, merge_weights_fragment  # noqa: F401
from .train import Trainer, best_metric, evaluate, setup_cfg, train, train_net  # noqa: F401
from .visualize import draw_predictions, plot_detection_curves  # noqa: F401

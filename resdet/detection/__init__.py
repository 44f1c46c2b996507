"""Detection fine-tuning and evaluation on Detectron2, one trainer for YAML and LazyConfig
configs (resdet.detection.train) and the runs as one call with datasets given as paths
(resdet.detection.run: ``train_detector``, ``evaluate_detector``)."""

from .run import dataset_overrides, evaluate_detector, register_datasets, train_detector  # noqa: F401
from .train import DetectionTrainer, best_metric, evaluate, train, train_net  # noqa: F401
from .visualize import draw_predictions, plot_detection_curves  # noqa: F401

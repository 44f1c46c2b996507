"""What a detection run leaves to look at: predictions drawn on test images, and curves."""

import logging
from pathlib import Path

import torch
from PIL import Image

from ..data import model_input, read_image
from ..io import atomic_write
from ..plots import plot_json_lines, read_json_lines

__all__ = ["draw_predictions", "plot_detection_curves"]

logger = logging.getLogger(__name__)

# Drawn per image at most (highest scores first), so an image stays readable.
MAX_DRAWN = 20


@torch.no_grad()
def draw_predictions(setup, model, dataset_name, out_dir, num_images, thresh=0.5):
    """Draw the model's boxes, class names and scores on the first images of a test set.

    Images are preprocessed as the Predictor does (the config's test resize and input
    format, resdet.data.model_input); only detections scoring ``thresh`` or more are drawn,
    at most MAX_DRAWN per image, so the picture stays readable. Returns the written paths
    (``<out_dir>/<image name>.jpg``)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.utils.visualizer import Visualizer

    dicts = DatasetCatalog.get(dataset_name)[:num_images]
    if not dicts:
        return []
    metadata = MetadataCatalog.get(dataset_name)
    aug = setup.test_augmentation()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    written = []
    try:
        for record in dicts:
            image = read_image(record["file_name"], format=setup.input_format)
            instances = model([model_input(image, aug)])[0]["instances"].to("cpu")
            instances = instances[instances.scores >= thresh][:MAX_DRAWN]
            rgb = image if setup.input_format == "RGB" else image[:, :, ::-1]
            drawn = Visualizer(rgb, metadata).draw_instance_predictions(instances).get_image()
            path = out_dir / (Path(record["file_name"]).stem + ".jpg")
            with atomic_write(path) as f:
                Image.fromarray(drawn).save(f, format="JPEG", quality=90)
            written.append(path)
    finally:
        model.train(was_training)
    logger.info(f"Drew predictions on {len(written)} images of {dataset_name} into {out_dir}")
    return written


def plot_detection_curves(log_json, png, metric=None):
    """Plot training loss and the evaluation ``metric`` (e.g. "bbox/AP") against iteration
    from Detectron2's JSON-lines log into ``png``. Returns False when the log has no loss yet."""
    if not any(
        "total_loss" in r for r in (read_json_lines(log_json) if Path(log_json).is_file() else [])
    ):
        return False
    return plot_json_lines(
        log_json,
        png,
        [
            ("total loss (median of 20 iterations)", ["total_loss"]),
            (f"{metric or 'no test set'} (%)", [metric] if metric else []),
        ],
    )

"""Detection over image files, folders, globs and videos as one call, with pictures drawn
and a results file: ``resdet.predict`` and ``resdet predict`` (Detectron2's demo/demo.py,
ultralytics' ``predict source=``, mmdetection's ``DetInferencer(out_dir=)``).

    resdet.predict("output/run/model_final.pth", source="photos/", output_dir="out/pred")
    resdet.predict("config.yaml", "model_final.pth", source=["a.jpg", "clips/*.mp4"])
    resdet.predict(predictor, source="clip.mp4")        # any Predictor-like object

It writes into ``output_dir``:

- ``predictions.json``, the COCO dict form: ``images`` (one per image or video frame:
  ``id``, ``file_name``, ``width``, ``height``; a frame's file_name is ``clip.mp4#12``,
  with ``video`` and ``frame``), ``categories`` (``id`` 1..K, the model's class
  ``name``), ``annotations`` (``image_id``, ``category_id``, ``bbox`` [x, y, w, h] in
  original pixels, ``score``, ``area``) and ``info`` (what this call wrote). Every detection the
  model gives is kept (its own test threshold, ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``), so
  that ``resdet evaluate --gt instances.json --pred predictions.json`` scores it as the
  evaluator would (images are matched to the ground truth by file_name);
- ``<name>.jpg`` per image and ``<name>.mp4`` per video: the detections with a score of
  at least ``threshold`` drawn with their class names (Detectron2's Visualizer, and its
  VideoVisualizer for videos, whose colours stay with an object from frame to frame).

Names are the files' names (within a folder or below a glob's fixed part). Every file is
written atomically. The output folder may be new, empty, or hold an earlier
``resdet predict``'s outputs (which are replaced); files of anything else are not touched
unless ``overwrite`` (then files of the same names are replaced, others kept). A call
that fails removes what it wrote.
"""

import glob
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .data import read_image
from .data.image import BAD_IMAGE_ERRORS
from .errors import ConfigError, DatasetError, OutputError
from .io import atomic_write
from .predictor import Predictor
from .run_folder import remove_orphan_temp_files
from .version import __version__

__all__ = ["predict", "find_sources", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "RESULTS_FILE"]

RESULTS_FILE = "predictions.json"
# ultralytics' IMG_FORMATS / VID_FORMATS, less the formats PIL or OpenCV do not read here
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
_DESCRIPTION = "resdet predict"
_WHAT = "images (.jpg, .png, ...) or videos (.mp4, .avi, ...)"


class _Source:
    """One image or video: its path, its name in the outputs, what was drawn from it."""

    def __init__(self, path, name):
        self.path, self.name = Path(path), str(name).replace(os.sep, "/")
        self.video = self.path.suffix.lower() in VIDEO_SUFFIXES
        self.drawn = str(Path(self.name).with_suffix(".mp4" if self.video else ".jpg"))
        self.frames, self.fps = 0, 0.0


def find_sources(source) -> list:
    """The images and videos of ``source`` (a path, a glob, or a list of them), in order:
    a file as given (videos by their suffix), a folder's images and videos (not its
    subfolders), a glob's matches (``**`` reaches into subfolders). One-line errors for a
    missing path, a glob that matches nothing, a folder with nothing to detect on."""
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source or [])
    if not sources:
        raise ConfigError("source: give image files, folders, globs or videos")
    found = []
    for s in map(os.fspath, sources):
        if glob.has_magic(s):
            parts = Path(s).parts
            fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
            root = os.path.join(*parts[:fixed]) if fixed else "."
            matches = [p for p in sorted(glob.glob(s, recursive=True)) if os.path.isfile(p)]
            if not matches:
                raise ConfigError(f"{s}: no file matches this pattern")
            found += [_Source(p, os.path.relpath(p, root)) for p in matches]
        elif Path(s).is_dir():
            files = [p for p in sorted(Path(s).iterdir()) if _detectable(p)]
            if not files:
                raise ConfigError(f"{s}: nothing to detect on in this folder; it needs {_WHAT}")
            found += [_Source(p, p.name) for p in files]
        elif Path(s).is_file():
            found.append(_Source(s, Path(s).name))
        else:
            raise ConfigError(f"{s}: no such file or folder")
    unique, drawn = {}, {}
    for item in found:  # a file given twice (itself and its folder) is predicted once
        unique.setdefault(item.path.resolve(), item)
    for item in unique.values():
        other = drawn.setdefault(item.drawn, item)
        if other is not item:
            raise ConfigError(
                f"{other.path} and {item.path} would both be written as {item.drawn}; predict"
                f" them in separate calls (separate output folders)"
            )
    return list(unique.values())


def _detectable(path):
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES


def _open_video(item):
    import cv2

    # FFmpeg prints its own complaint ("moov atom not found") beside our one line; it
    # reads this when OpenCV opens its first video
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cap = cv2.VideoCapture(str(item.path))
    if not cap.isOpened():
        raise DatasetError(
            f"{item.path}: cannot be opened as a video (not a video, or a codec OpenCV lacks);"
            f" give a video OpenCV reads ({', '.join(VIDEO_SUFFIXES[:4])}, ...) or images"
        )
    return cap


def _check_videos(items):
    """Open every video before anything is written: a bad one fails now, and the progress
    bar knows how many frames come."""
    import cv2

    for item in items:
        if item.video:
            cap = _open_video(item)
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)  # 0 or -1 where the stream lacks it
            item.frames = int(count) if np.isfinite(count) and count > 0 else 0
            fps = cap.get(cv2.CAP_PROP_FPS)
            item.fps = fps if fps and np.isfinite(fps) and fps > 0 else 30.0
            cap.release()


def _earlier_outputs(out):
    """The files an earlier ``resdet predict`` wrote into ``out`` (its results file's
    ``info``), or None when ``out`` holds no such record."""
    results = out / RESULTS_FILE
    try:
        info = json.loads(results.read_text()).get("info", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(info, dict) or info.get("description") != _DESCRIPTION:
        return None
    return {RESULTS_FILE, *map(str, info.get("outputs", []))}


def _check_output(out, items, overwrite):
    """Check that ``out`` may be written (see the module docstring); the earlier predict's
    outputs in it, which :func:`_clear` removes."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file; choose a folder for the predictions")
    inside = [i.path for i in items if out.resolve() in i.path.resolve().parents]
    if inside:
        raise ConfigError(
            f"{inside[0]}: a source inside the output folder {out}; choose an output folder"
            f" apart from the images (its drawn pictures would mix with them)"
        )
    if not out.is_dir():
        return set()
    # a killed save's temporary files (resdet.io's .<name>.<random>.tmp, ours .tmp.mp4)
    present = {
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if not p.is_dir() and not (p.name.startswith(".") and ".tmp" in p.suffixes)
    }
    earlier = _earlier_outputs(out) or set()
    foreign = sorted(present - earlier)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:3]) + (
            f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        )
        raise OutputError(
            f"{out}: holds files resdet predict did not write ({shown}); choose a new or empty"
            f" output folder, or pass --overwrite (overwrite=True) to write into it anyway"
            f" (files of the same names are then replaced)"
        )
    return earlier & present


def _clear(out, earlier):
    """Remove an earlier predict's outputs and killed saves' temporary files from ``out``."""
    if not out.is_dir():
        return
    remove_orphan_temp_files(out)
    for leftover in out.glob(".*.tmp.mp4"):
        leftover.unlink()
    for rel in sorted(earlier):
        (out / rel).unlink(missing_ok=True)
    _remove_empty_dirs(out, keep_root=True)


def _remove_empty_dirs(out, keep_root):
    for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not any(d.iterdir()):
            d.rmdir()
    if not keep_root and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _read(item, fmt):
    try:
        return read_image(item.path, format=fmt)
    except DatasetError:
        raise
    except BAD_IMAGE_ERRORS as e:
        raise DatasetError(
            f"{item.path}: not an image that can be read ({e}); give {_WHAT}"
        ) from None


class _Writer:
    """Entries of the results file and the drawn pictures, written as they come."""

    def __init__(self, out, predictor, threshold, draw):
        self.out, self.threshold, self.draw = out, float(threshold), draw
        self.metadata = predictor.metadata
        names = getattr(predictor, "class_names", None) or self.metadata.get("thing_classes")
        self.categories = [{"id": i + 1, "name": str(n)} for i, n in enumerate(names or [])]
        self.images, self.annotations, self.written, self.shown = [], [], [], 0

    def add(self, file_name, image_bgr, instances, **extra):
        """One image's (or frame's) entry; returns the detections to draw on it."""
        instances = instances.to("cpu")
        h, w = image_bgr.shape[:2]
        image_id = len(self.images) + 1
        self.images.append(
            {"id": image_id, "file_name": file_name, "width": w, "height": h, **extra}
        )
        # [x, y, w, h] from the float32 corners in float64, as resdet's evaluator converts
        # the detections it holds in memory: the file then scores exactly as they do
        boxes = instances.pred_boxes.tensor.tolist()
        for (x0, y0, x1, y1), score, cls in zip(
            boxes, instances.scores.tolist(), instances.pred_classes.tolist()
        ):
            self.annotations.append(
                {
                    "id": len(self.annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score,
                    "area": (x1 - x0) * (y1 - y0),
                }
            )
        shown = instances[instances.scores >= self.threshold]
        self.shown += len(shown)
        return shown

    def drawn(self, image_bgr, shown, video_visualizer=None):
        """The picture with ``shown`` drawn, BGR (Detectron2 draws on RGB)."""
        from detectron2.utils.visualizer import Visualizer

        rgb = image_bgr[:, :, ::-1]
        if video_visualizer is not None:
            vis = video_visualizer.draw_instance_predictions(rgb, shown)
        else:
            vis = Visualizer(rgb, self.metadata).draw_instance_predictions(shown)
        return np.ascontiguousarray(vis.get_image()[:, :, ::-1])

    def save_image(self, rel, image_bgr):
        import cv2

        ok, data = cv2.imencode(".jpg", image_bgr)
        if not ok:
            raise OutputError(f"{self.out / rel}: OpenCV could not encode the drawn picture")
        with atomic_write(self.out / rel, "wb") as f:
            f.write(data.tobytes())
        self.written.append(rel)  # once there: a failed write left the path as it was

    def results(self, model_name):
        info = {
            "description": _DESCRIPTION,
            "version": __version__,
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "model": model_name,
            "score_threshold": self.threshold,
            "outputs": list(self.written),
        }
        return {
            "info": info,
            "images": self.images,
            "categories": self.categories,
            "annotations": self.annotations,
        }


def predict(
    model,
    weights=None,
    *,
    source,
    output_dir="output/predict",
    threshold=0.5,
    draw=True,
    overwrite=False,
    progress=None,
    **predictor_options,
) -> dict:
    """Detect on ``source`` and write the results file and drawn pictures into
    ``output_dir`` (see the module docstring).

    Args:
        model: what :class:`resdet.Predictor` takes first (a config, or weights that carry
            their config), with ``weights``; or a Predictor-like object (called on a list
            of BGR arrays, returning ``{"instances": ...}`` each, with ``metadata``).
        source: an image file, a folder, a glob, a video, or a list of them.
        threshold: the lowest score drawn (the results file keeps every detection).
        draw: False writes the results file only.
        overwrite: write into a folder that holds other files (same names replaced).
        progress: a tqdm bar on stderr; None shows it on a terminal only.
        predictor_options: keyword arguments of Predictor (device, runtime, overrides,
            batch_size, ...).

    Returns:
        ``{"output_dir", "predictions" (the results file), "images", "frames",
        "detections", "drawn" (detections drawn), "outputs" (the pictures written)}``.
    """
    from tqdm import tqdm

    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        threshold = float("nan")
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold {threshold!r}: give a score between 0 and 1")
    out = Path(output_dir)
    items = find_sources(source)
    _check_videos(items)
    earlier = _check_output(out, items, overwrite)
    predictor = _predictor(model, weights, predictor_options)  # nothing written before
    writer = _Writer(out, predictor, threshold, draw)
    frames = [i.frames for i in items if i.video]
    total = None if 0 in frames else len(items) - len(frames) + sum(frames)  # None: unknown
    created = not out.exists()
    disable = None if progress is None else not progress  # None: on a terminal only
    try:
        _clear(out, earlier)
        out.mkdir(parents=True, exist_ok=True)
        with tqdm(total=total, unit="img", desc="predict", disable=disable) as bar:
            batch = max(int(getattr(predictor, "batch_size", 8)), 1)
            images = []  # consecutive images run as one batch; all in the sources' order

            def flush():
                if images:
                    _predict_images(predictor, writer, images, bar)
                    images.clear()

            for item in items:
                if item.video:
                    flush()
                    _predict_video(predictor, writer, item, batch, bar)
                else:
                    images.append(item)
                    if len(images) == batch:
                        flush()
            flush()
        results = out / RESULTS_FILE
        with atomic_write(results, "w") as f:
            json.dump(writer.results(_model_name(model, weights)), f)
        writer.written.append(RESULTS_FILE)
    except BaseException:
        for rel in writer.written:  # a failed call leaves no half-made output behind
            (out / rel).unlink(missing_ok=True)
        if out.is_dir():
            _remove_empty_dirs(out, keep_root=not created)
        raise
    return {
        "output_dir": str(out),
        "predictions": str(results),
        "images": sum(not i.video for i in items),
        "frames": sum(1 for im in writer.images if "frame" in im),
        "detections": len(writer.annotations),
        "drawn": writer.shown,
        "outputs": [str(out / rel) for rel in writer.written if rel != RESULTS_FILE],
    }


def _predictor(model, weights, options):
    if callable(model) and hasattr(model, "metadata"):  # a Predictor-like object
        if weights is not None or options:
            raise ConfigError("give either a predictor, or a config/weights with its options")
        return model
    return Predictor(model, **options) if weights is None else Predictor(model, weights, **options)


def _model_name(model, weights):
    if callable(model) and hasattr(model, "metadata"):
        return type(model).__name__
    return " ".join(os.fspath(m) for m in (model, weights) if isinstance(m, (str, os.PathLike)))


def _as_input(predictor, image_bgr):
    """The array in the predictor's channel order (Predictor's default: BGR, OpenCV's)."""
    rgb = getattr(predictor, "input_format", "BGR") == "RGB"
    return np.ascontiguousarray(image_bgr[:, :, ::-1]) if rgb else image_bgr


def _predict_images(predictor, writer, items, bar):
    arrays = [_read(item, "BGR") for item in items]
    outputs = predictor([_as_input(predictor, a) for a in arrays])
    for item, image, output in zip(items, arrays, outputs):
        shown = writer.add(item.name, image, output["instances"])
        if writer.draw:
            writer.save_image(item.drawn, writer.drawn(image, shown))
        bar.update(1)


def _predict_video(predictor, writer, item, batch, bar):
    """Every frame of a video (read BGR by OpenCV), drawn into ``<name>.mp4`` at its fps."""
    import cv2
    from detectron2.utils.video_visualizer import VideoVisualizer

    cap = _open_video(item)
    visualizer = VideoVisualizer(writer.metadata)
    target, video, tmp, index = writer.out / item.drawn, None, None, 0
    try:
        while True:
            frames = []
            while len(frames) < batch:
                ok, frame = cap.read()
                if not ok:
                    break
                frames.append(frame)
            if not frames:
                break
            outputs = predictor([_as_input(predictor, f) for f in frames])
            for frame, output in zip(frames, outputs):
                shown = writer.add(
                    f"{item.name}#{index}", frame, output["instances"], video=item.name, frame=index
                )
                index += 1
                bar.update(1)
                if not writer.draw:
                    continue
                if video is None:  # the temporary file needs the suffix: it picks the container
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fd, tmp = tempfile.mkstemp(
                        prefix=f".{target.name}.", suffix=".tmp.mp4", dir=target.parent
                    )
                    os.close(fd)
                    umask = os.umask(0)  # mkstemp makes it 0600; give what open() would
                    os.umask(umask)
                    os.chmod(tmp, 0o666 & ~umask)
                    h, w = frame.shape[:2]
                    video = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), item.fps, (w, h))
                    if not video.isOpened():
                        raise OutputError(f"{target}: OpenCV cannot write an mp4v video here")
                video.write(writer.drawn(frame, shown, visualizer))
        if index == 0:
            raise DatasetError(f"{item.path}: no frame could be read from this video")
        if video is not None:
            video.release()
            video = None
            os.replace(tmp, target)
            tmp = None
            writer.written.append(item.drawn)
    finally:
        cap.release()
        if video is not None:
            video.release()
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)

"""resdet.predict and `resdet predict` on coco128: its results file scores exactly as the
Predictor's detections in memory, the pictures are drawn where the boxes are, folders,
globs and videos work, bad sources are one line, and an output folder holding someone
else's files is not written into without --overwrite.

A tiny R18-FPN detector at 160 px (tests/test_api.py's ``detector``: real detections
without training) for what the model decides; a stand-in predictor that finds one box in
the middle of every image for what the files and folders decide.
"""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO
from test_api import detector  # noqa: F401  (the fixture)

import resdet
from resdet.errors import ConfigError, DatasetError, OutputError
from resdet.tools import main as resdet_main

IMAGES = ["000000000009.jpg", "000000000025.jpg", "000000000030.jpg", "000000000034.jpg"]
DRAWN = 0.2  # the tiny detector's scores reach about 0.26


@pytest.fixture(scope="module")
def predictor(detector):  # noqa: F811
    cfg, weights = detector
    return resdet.Predictor(cfg, weights)


@pytest.fixture(scope="module")
def carrying(detector, tmp_path_factory):  # noqa: F811
    """The detector's weights with the meta of a resdet run (its config inside), as
    `resdet predict --weights` alone takes them."""
    from resdet.engine import load

    cfg, weights = detector
    path = tmp_path_factory.mktemp("carrying") / "model_final.pth"
    meta = load(cfg.clone(), kind="detection").checkpoint_meta()
    torch.save({"model": torch.load(weights, weights_only=True)["model"], "meta": meta}, path)
    return path


class OneBox:
    """A Predictor-like stand-in: one box over the middle half of every image, score 0.9."""

    batch_size = 1

    def __init__(self):
        from detectron2.data.catalog import Metadata

        self.class_names = ["thing"]
        self.metadata = Metadata(name="one_box", thing_classes=self.class_names)
        self.calls = []

    def __call__(self, images):
        from detectron2.structures import Boxes, Instances

        self.calls.append([im.shape for im in images])
        outputs = []
        for im in images:
            h, w = im.shape[:2]
            inst = Instances((h, w))
            inst.pred_boxes = Boxes(torch.tensor([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]]))
            inst.scores = torch.tensor([0.9])
            inst.pred_classes = torch.tensor([0])
            outputs.append({"instances": inst})
        return outputs


def _coco128(shared_data):
    return shared_data / "coco128" / "train2017"


def _make_video(path, frames, size=(256, 192), fps=5):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for frame in frames:
        writer.write(cv2.resize(frame, size))
    writer.release()
    return path


def _gt_subset(shared_data, path, names):
    full = json.loads((shared_data / "coco128/annotations/instances_train2017.json").read_text())
    images = [im for im in full["images"] if im["file_name"] in names]
    ids = {im["id"] for im in images}
    sub = dict(
        full, images=images, annotations=[a for a in full["annotations"] if a["image_id"] in ids]
    )
    path.write_text(json.dumps(sub))
    return path, sub


def _in_memory(outputs, names, gt):
    """The Predictor's detections as a COCO results list in the ground truth's ids."""
    image_id = {im["file_name"]: im["id"] for im in gt["images"]}
    category = {c["name"]: c["id"] for c in gt["categories"]}
    results = []
    for name, out in zip(names, outputs):
        inst = out["instances"]
        for (x0, y0, x1, y1), s, c in zip(
            inst.pred_boxes.tensor.tolist(), inst.scores.tolist(), inst.pred_classes.tolist()
        ):
            results.append(
                {
                    "image_id": image_id[name],
                    "category_id": category[out["class_names"][c]],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": s,
                }
            )
    return results


def _same(a, b):
    """Equal metrics, NaN (nothing to measure, as APs without small objects) included."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_results_file_scores_exactly_as_the_predictor_in_memory(
    detector,  # noqa: F811
    predictor,
    shared_data,
    tmp_path,
    capsys,
):
    cfg, weights = detector
    paths = [str(_coco128(shared_data) / n) for n in IMAGES]
    r = resdet.predict(cfg, weights, source=paths, output_dir=tmp_path / "out", draw=False)
    written = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [im["file_name"] for im in written["images"]] == IMAGES
    assert [c["name"] for c in written["categories"]] == predictor.class_names
    assert written["info"]["description"] == "resdet predict" and r["outputs"] == []
    outputs = predictor(paths)
    assert (
        r["detections"] == len(written["annotations"]) == sum(len(o["instances"]) for o in outputs)
    )

    gt_file, gt = _gt_subset(shared_data, tmp_path / "gt.json", IMAGES)
    memory = _in_memory(outputs, IMAGES, gt)
    assert _same(
        resdet.evaluate_predictions(gt_file, r["predictions"]),
        resdet.evaluate_predictions(gt_file, memory),
    )
    # the random detector scores about 0 on COCO's labels: ground truth made of every
    # other one of its 40 best detections (COCO's category ids, other image ids; the rest
    # false positives ranked among them) makes the comparison bite
    best = sorted(memory, key=lambda p: -p["score"])[:40:2]
    mine = dict(
        gt,
        images=[dict(im, id=im["id"] + 1000) for im in gt["images"]],
        annotations=[
            {
                "id": k + 1,
                "image_id": p["image_id"] + 1000,
                "category_id": p["category_id"],
                "bbox": p["bbox"],
                "area": p["bbox"][2] * p["bbox"][3],
                "iscrowd": 0,
            }
            for k, p in enumerate(best)
        ],
    )
    (tmp_path / "mine.json").write_text(json.dumps(mine))
    memory_ids = [dict(p, image_id=p["image_id"] + 1000) for p in memory]
    from_file = resdet.evaluate_predictions(tmp_path / "mine.json", r["predictions"])
    assert _same(from_file, resdet.evaluate_predictions(tmp_path / "mine.json", memory_ids))
    assert 20 < from_file["bbox"]["AP50"] < 100, from_file["bbox"]
    # and `resdet evaluate` scores the file as it is
    capsys.readouterr()
    argv = ["evaluate", "--gt", str(tmp_path / "mine.json"), "--pred", r["predictions"]]
    assert resdet_main(argv) == 0
    assert f"{from_file['bbox']['AP']:.3f}" in capsys.readouterr().out


def _changed(drawn, original, boxes):
    """Share of the pixels changed by more than 40 along the boxes' edges, and the largest
    change elsewhere (32 px away from every box: beyond its label and the 16 px blocks of
    JPEG), against the original saved by the same JPEG encoder."""
    original = cv2.imdecode(cv2.imencode(".jpg", original)[1], cv2.IMREAD_COLOR)
    diff = np.abs(drawn.astype(int) - original.astype(int)).max(axis=2)
    edges, near = np.zeros(diff.shape, bool), np.zeros(diff.shape, bool)
    for x, y, w, h in boxes:
        x0, y0, x1, y1 = (int(round(v)) for v in (x, y, x + w, y + h))
        edges[max(y0 - 2, 0) : y1 + 3, max(x0 - 2, 0) : x1 + 3] = True
        edges[y0 + 3 : y1 - 2, x0 + 3 : x1 - 2] = False
        near[max(y0 - 32, 0) : y1 + 32, max(x0 - 32, 0) : x1 + 32] = True
    return (diff[edges] > 40).mean() if edges.any() else 0.0, diff[~near].max()


def test_drawn_pictures_differ_from_the_originals_where_boxes_are(predictor, shared_data, tmp_path):
    names = ["000000000009.jpg", "000000000034.jpg"]
    paths = [_coco128(shared_data) / n for n in names]
    r = resdet.predict(predictor, source=paths, output_dir=tmp_path / "drawn", threshold=DRAWN)
    results = json.loads((tmp_path / "drawn" / "predictions.json").read_text())
    assert sorted(r["outputs"]) == [str(tmp_path / "drawn" / n) for n in names]
    for im, path in zip(results["images"], paths):
        drawn, original = (
            cv2.imread(str(tmp_path / "drawn" / im["file_name"])),
            cv2.imread(str(path)),
        )
        assert drawn.shape == original.shape  # original pixels, not the 160 px input
        boxes = [
            a["bbox"]
            for a in results["annotations"]
            if a["image_id"] == im["id"] and a["score"] >= DRAWN
        ]
        assert boxes, im  # these two images have detections above the threshold
        on_edges, elsewhere = _changed(drawn, original, boxes)
        assert on_edges > 0.25 and elsewhere == 0, (im["file_name"], on_edges, elsewhere)
    assert r["drawn"] == sum(a["score"] >= DRAWN for a in results["annotations"])
    # nothing at the threshold: the picture is the original (as JPEG saves it)
    resdet.predict(predictor, source=paths[:1], output_dir=tmp_path / "none", threshold=1.0)
    drawn = cv2.imread(str(tmp_path / "none" / names[0]))
    assert _changed(drawn, cv2.imread(str(paths[0])), [])[1] == 0


def test_a_folder_a_glob_and_a_video(predictor, shared_data, tmp_path, capsys):
    coco = _coco128(shared_data)
    src = tmp_path / "src"
    src.mkdir()
    for name in IMAGES[:2]:
        shutil.copy(coco / name, src / name)
    frames = [cv2.imread(str(coco / n)) for n in IMAGES[1:4]]
    _make_video(src / "clip.mp4", frames)
    (src / "notes.txt").write_text("not an image: a folder's other files are left out")

    r = resdet.predict(predictor, source=src, output_dir=tmp_path / "out", progress=True)
    bar = capsys.readouterr().err  # tqdm's bar: 2 images and 3 frames
    assert "predict: 100%" in bar and "5/5" in bar
    out = tmp_path / "out"
    results = json.loads((out / "predictions.json").read_text())
    assert (r["images"], r["frames"]) == (2, 3)
    assert [im["file_name"] for im in results["images"]] == IMAGES[:2] + [
        "clip.mp4#0",
        "clip.mp4#1",
        "clip.mp4#2",
    ]
    assert [im.get("frame") for im in results["images"]] == [None, None, 0, 1, 2]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        IMAGES[:2] + ["clip.mp4", "predictions.json"]
    )
    video = cv2.VideoCapture(str(out / "clip.mp4"))
    drawn = []
    while True:
        ok, frame = video.read()
        if not ok:
            break
        drawn.append(frame)
    assert len(drawn) == 3 and drawn[0].shape == (192, 256, 3)
    # the frames were read BGR, as the Predictor's arrays: its detections on them
    read = cv2.VideoCapture(str(src / "clip.mp4"))
    bgr = [read.read()[1] for _ in range(3)]
    want = [sorted(o["instances"].scores.tolist()) for o in predictor(bgr)]
    got = [
        sorted(a["score"] for a in results["annotations"] if a["image_id"] == im["id"])
        for im in results["images"][2:]
    ]
    assert got == want and all(want)

    # sources run in the order given
    r = resdet.predict(
        OneBox(), source=[src / "clip.mp4", src / IMAGES[0]], output_dir=tmp_path / "o"
    )
    names = [im["file_name"] for im in json.loads(open(r["predictions"]).read())["images"]]
    assert names == ["clip.mp4#0", "clip.mp4#1", "clip.mp4#2", IMAGES[0]]

    # a glob (quoted on a command line): its matches, by name
    r = resdet.predict(
        predictor, source=str(coco / "00000000003*.jpg"), output_dir=tmp_path / "glob", draw=False
    )
    names = [im["file_name"] for im in json.loads(open(r["predictions"]).read())["images"]]
    assert names == sorted(p.name for p in coco.glob("00000000003*.jpg")) and len(names) == 3
    assert sorted(p.name for p in (tmp_path / "glob").iterdir()) == ["predictions.json"]


def test_cli_predicts_with_weights_that_carry_their_config(carrying, shared_data, tmp_path, capsys):
    paths = [str(_coco128(shared_data) / n) for n in IMAGES[:2]]
    out = tmp_path / "out"
    argv = ["predict", *paths, "--weights", str(carrying), "--output", str(out)]
    assert resdet_main(argv + ["--threshold", str(DRAWN)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    results = json.loads((out / "predictions.json").read_text())
    assert printed.startswith(f"2 images: {len(results['annotations'])} detections")
    assert sorted(p.name for p in out.iterdir()) == sorted(IMAGES[:2] + ["predictions.json"])
    assert len(results["categories"]) == 80


def _bad_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.jpg").write_text("a text file named like an image")
    (tmp_path / "broken.mp4").write_bytes(b"not a video" * 100)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing.jpg", "missing.jpg: no such file or folder"),
        ("empty/", "empty: nothing to detect on in this folder"),
        ("broken.mp4", "broken.mp4: cannot be opened as a video"),
        ("none*.jpg", "none*.jpg: no file matches this pattern"),
    ],
)
def test_bad_sources_are_one_line(case, message, carrying, tmp_path, capsys):
    """Refused before the model loads."""
    _bad_sources(tmp_path)
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / case), "--weights", str(carrying), "--output", str(out)]
    assert resdet_main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_a_text_file_as_an_image_is_one_line(carrying, shared_data, tmp_path):
    """Found when it is read, after the model loaded and the first image was drawn:
    `python -m resdet predict` in a process of its own, whose whole stderr is one line (in
    this process, the loggers of earlier tests would add theirs), and nothing is left."""
    _bad_sources(tmp_path)
    out = tmp_path / "out"
    first = _coco128(shared_data) / IMAGES[0]
    argv = [first, tmp_path / "notes.jpg", "--weights", carrying, "--output", out]
    r = subprocess.run(
        [sys.executable, "-m", "resdet", "predict", *map(str, argv), "--batch-size", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'notes.jpg'}: not an image that can be read (cannot identify image"
        f" file '{tmp_path / 'notes.jpg'}'); give images (.jpg, .png, ...) or videos (.mp4,"
        " .avi, ...)"
    ]
    assert not out.exists()  # the first image's picture was removed with the folder


def test_an_output_folder_holding_other_files_is_not_written_into(shared_data, tmp_path):
    coco = _coco128(shared_data)
    first, second = coco / IMAGES[0], coco / IMAGES[1]
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("someone's notes")
    with pytest.raises(
        OutputError, match=r"out: holds files resdet predict did not write \(mine.txt\)"
    ):
        resdet.predict(OneBox(), source=first, output_dir=out)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    # --overwrite writes into it, and keeps what is not its own
    resdet.predict(OneBox(), source=first, output_dir=out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [IMAGES[0], "mine.txt", "predictions.json"]

    # an earlier predict's outputs are its own: replaced by the next call's, none left over
    own = tmp_path / "own"
    resdet.predict(OneBox(), source=first, output_dir=own)
    r = resdet.predict(OneBox(), source=second, output_dir=own)
    assert sorted(p.name for p in own.iterdir()) == [IMAGES[1], "predictions.json"]
    assert [im["file_name"] for im in json.loads(open(r["predictions"]).read())["images"]] == [
        IMAGES[1]
    ]
    # its drawn pictures would mix with the images
    with pytest.raises(ConfigError, match="a source inside the output folder"):
        resdet.predict(OneBox(), source=own / IMAGES[1], output_dir=own, overwrite=True)

    # a call that fails half-way leaves nothing: the first picture is written, then the
    # second image cannot be read
    (tmp_path / "src").mkdir()
    shutil.copy(first, tmp_path / "src" / "a.jpg")
    (tmp_path / "src" / "b.jpg").write_text("not an image")
    stand_in = OneBox()
    with pytest.raises(DatasetError, match="b.jpg: not an image"):
        resdet.predict(stand_in, source=tmp_path / "src", output_dir=tmp_path / "failed")
    assert len(stand_in.calls) == 1 and not (tmp_path / "failed").exists()
    with pytest.raises(ConfigError, match="threshold 1.5"):
        resdet.predict(stand_in, source=first, output_dir=tmp_path / "t", threshold=1.5)

"""COCO evaluation: resdet's evaluator (faster-coco-eval) vs pycocotools' COCOeval on the
same predictions — coco128's ground truth with several perturbed detections per object —
requiring identical AP."""

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, emit, interleaved, parser, result  # noqa: E402

from resdet.evaluation.coco import evaluate_coco  # noqa: E402

GT = SHARED_DATA / "coco128" / "annotations" / "instances_train2017.json"


def perturbed_detections(gt, per_object=5, seed=0):
    rng = np.random.RandomState(seed)
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        for _ in range(per_object):
            j = rng.normal(0, 0.15, 4) * [w, h, w, h]
            cat = a["category_id"] if rng.rand() > 0.1 else int(rng.choice(cats))
            dets.append(
                {
                    "image_id": a["image_id"],
                    "category_id": cat,
                    "score": float(rng.rand()),
                    "bbox": [
                        float(x + j[0]),
                        float(y + j[1]),
                        float(max(1, w + j[2])),
                        float(max(1, h + j[3])),
                    ],
                }
            )
    return dets


def pycocotools_ap(gt_file, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes([dict(d) for d in dets]), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0] * 100


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    gt = json.loads(GT.read_text())
    dets = perturbed_detections(gt)
    names = [c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])]
    out = {}
    t = interleaved(
        {
            "resdet": lambda: out.__setitem__(
                "resdet", evaluate_coco(str(GT), dets, names)["bbox"]["AP"]
            ),
            "pycocotools": lambda: out.__setitem__("pycocotools", pycocotools_ap(GT, dets)),
        },
        args.repeats,
    )
    rows = [
        result(
            "coco_eval_coco128",
            t["resdet"],
            t["pycocotools"],
            5.0,
            "pycocotools COCOeval",
            detections=len(dets),
            AP_resdet=round(out["resdet"], 4),
            AP_pycocotools=round(out["pycocotools"], 4),
            identical_AP=bool(abs(out["resdet"] - out["pycocotools"]) < 1e-4),
        )
    ]
    emit(rows, args.output)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()

"""AP of a trained detector on each inference path: PyTorch fp32 (prepared), and the
whole-detector exports of resdet.export on ONNX Runtime fp32 / int8 and OpenVINO fp32 /
bf16 / int8, loaded as ``resdet.Predictor(folder)`` loads them, on the run's own test set,
so the change a reduced-precision path costs is measured, not assumed. int8 is
calibrated on the first 32 images of the run's training set.

    python bench/precision_ap.py output/demo/detect        # after `make demo`

Writes bench/precision_ap.json (bench_detection.py reports its dAP beside the
reduced-precision rows). Not part of `make bench`: it needs a trained run folder
(config.yaml + model_final.pth).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import resdet  # noqa: F401  (registers the backbones)
from resdet.engine import load
from resdet.export.exporter import export_detector
from resdet.export.runtimes import load_export
from resdet.modeling import prepare_for_inference

RECORDED = Path(__file__).resolve().parent / "precision_ap.json"

PATHS = [
    ("torch_fp32", None, "fp32"),
    ("onnxruntime_fp32", "onnxruntime", "fp32"),
    ("openvino_fp32", "openvino", "fp32"),
    ("openvino_bf16", "openvino", "bf16"),
    ("onnxruntime_int8", "onnxruntime", "int8"),
    ("openvino_int8", "openvino", "int8"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a detection run folder (config.yaml, model_final.pth)")
    ap.add_argument("--output", default=str(RECORDED), help="write the table as JSON here")
    args = ap.parse_args(argv)
    run = Path(args.run)
    tmp = Path(tempfile.mkdtemp(prefix="resdet-precision-"))
    # the setup layer every resdet command uses: the run's config, its weights, the CPU
    setup = load(
        run / "config.yaml",
        run / "model_final.pth",
        {"RESDET.EVAL.NUM_VIS": 0},
        tmp / "eval",
        device="cpu",
        datasets=True,
        eval_only=True,
    )
    from detectron2.data import DatasetCatalog

    train_images = [d["file_name"] for d in DatasetCatalog.get(setup.cfg.DATASETS.TRAIN[0])]
    rows = {}
    for name, runtime, precision in PATHS:
        model = setup.build_model(weights="inference").eval()
        if runtime is None:
            model = prepare_for_inference(model)
        else:
            fmt = "onnx" if runtime == "onnxruntime" else "openvino"
            folder = tmp / (fmt + ("_int8" if precision == "int8" else ""))
            if not folder.exists():
                calibration = train_images if precision == "int8" else None
                export_detector(model, setup, fmt, folder, int8_calibration=calibration)
            model = load_export(folder, runtime, precision)
        rows[name] = setup.evaluate(model)["bbox"]
        print(name, {k: round(v, 2) for k, v in rows[name].items() if "-" not in k}, flush=True)
    ref = rows["torch_fp32"]
    table = {
        n: {k: r[k] for k in ("AP", "AP50")} | {f"d{k}": r[k] - ref[k] for k in ("AP", "AP50")}
        for n, r in rows.items()
        if "AP" in r
    }
    print(json.dumps(table, indent=1))
    Path(args.output).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

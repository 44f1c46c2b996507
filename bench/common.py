"""Side-by-side timing: candidates run interleaved in one process, repeated, medians.

These machines are noisy (2 shared cores), so every benchmark alternates resdet and the
alternative within each repeat and reports medians and their ratio rather than a single
wall-clock figure.
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results.json"
# the real datasets (../shared/data beside the checkout, as for the tests)
SHARED_DATA = Path(
    os.environ.get("RESDET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def parser(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--output", default=None, help="append the results to this JSON list (default: print)"
    )
    return ap


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def interleaved(
    fns: dict, repeats: int, device="cpu", warmup: int = 1, stat=statistics.median
) -> dict:
    """Median (or ``stat``) seconds per call of each fn in ``fns``, measured in alternation;
    ``stat=list`` gives every time."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: stat(v) for k, v in times.items()}


def result(name, ours_s, other_s, goal, other_name, **extra):
    """One results.json row; ratio = resdet's speed over the other's (higher is better).
    ``goal`` None: a reference measurement, ``met`` None."""
    # The ratio and the verdict come from the times as stored, so every row checks by hand.
    ours_s, other_s = round(ours_s, 5), round(other_s, 5)
    ratio = round(other_s / ours_s, 3)
    row = {
        "name": name,
        "ratio": ratio,
        "goal": goal,
        "met": None if goal is None else bool(ratio >= goal),
        "resdet_s": ours_s,
        "other_s": other_s,
        "other": other_name,
    }
    row.update(extra)
    return row


def emit(rows, output):
    for r in rows:
        print(json.dumps(r))
    if output:
        path = Path(output)
        prev = json.loads(path.read_text()) if path.exists() else []
        names = {r["name"] for r in rows}
        path.write_text(json.dumps([p for p in prev if p["name"] not in names] + rows, indent=1))


def export_onnx(module, example, path, input_name, outputs, dynamic=("batch", "height", "width")):
    """``module`` as an ONNX graph at ``path`` (torch.export-based, as resdet.export writes
    its graphs), the input's dims named in ``dynamic`` free."""
    dims = {i: torch.export.Dim.AUTO for i, d in enumerate(dynamic) if d}
    torch.onnx.export(
        module,
        (example,),
        str(path),
        dynamo=True,
        input_names=[input_name],
        output_names=list(outputs),
        dynamic_shapes=({**dims},),
        verbose=False,
    )


def _kernel_graphs(tmp, n=2048):
    """Two one-node fp32 ONNX graphs whose weights are initializers (so int8 quantization
    treats them as a model's layers): an (n, n) @ (n, n) GEMM, and a 3x3 convolution with
    128 channels on a 8x128x56x56 batch (the kernel the ResNet trunks spend their time in;
    a library may run it by Winograd, which does fewer multiplications than counted)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graphs = {}
    for name, shape, node, weight, flop in (
        ("gemm", [n, n], "MatMul", (n, n), 2 * n**3),
        ("conv", [8, 128, 56, 56], "Conv", (128, 128, 3, 3), 2 * 8 * 128 * 128 * 9 * 56 * 56),
    ):
        w = rng.standard_normal(weight, np.float32) * 0.05
        attrs = {"pads": [1, 1, 1, 1]} if node == "Conv" else {}
        graph = helper.make_graph(
            [helper.make_node(node, ["x", "w"], ["y"], **attrs)],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=[numpy_helper.from_array(w, "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # what every runtime here reads (onnx writes its newest)
        path = Path(tmp) / f"{name}.onnx"
        onnx.save(model, str(path))
        graphs[name] = (path, rng.standard_normal(shape, np.float32), w, flop / 1e9)
    return graphs


def peak_kernels(device, tmp, threads, int8=True):
    """The machine's peak, measured: a large GEMM and a 3x3 convolution in every library
    that runs the paths timed here (PyTorch: MKL/oneDNN; ONNX Runtime: MLAS; OpenVINO:
    oneDNN), fp32, bf16 (OpenVINO) and, with ``int8``, quantized as resdet.export quantizes
    (QDQ, int8 weights, uint8 activations). Time them in the same interleaved loop as the paths; the
    best rate of any is the peak (the best time, not the median: the peak is what the
    cores can do). Both kinds of kernel count: on an AMD EPYC the ResNet trunk ran faster
    than every library's GEMM, so a GEMM alone is not a peak that no path exceeds.
    Returns ``{name: (fn, GFLOP per call, "fp32", "bf16" or "int8")}``."""
    from resdet.export.quantize import quantize_graph
    from resdet.export.runtimes import OnnxRuntimeRunner, OpenVinoRunner

    out = {}
    for name, (path, x, w, gflop) in _kernel_graphs(tmp).items():
        xt, w = torch.from_numpy(x).to(device), torch.from_numpy(w).to(device)
        # PyTorch's kernels in fp32 and in bf16 (oneDNN's bf16 convolutions can beat
        # OpenVINO's on some shapes: a bf16 path ran above a peak of OpenVINO's alone)
        for dtype, precision in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            a, b = xt.to(dtype), w.to(dtype)
            if name == "gemm":
                fn = (lambda a, b: lambda: a @ b)(a, b)
            else:
                a = a.contiguous(memory_format=torch.channels_last)
                fn = (lambda a, b: lambda: torch.nn.functional.conv2d(a, b, padding=1))(a, b)
            out[f"{name}_torch_{precision}"] = (fn, gflop, precision)
        if torch.device(device).type != "cpu":  # the runtimes are CPU back-ends
            continue
        runners = {
            "onnxruntime": OnnxRuntimeRunner(path, threads, "x", ["y"]),
            "openvino": OpenVinoRunner(path, threads, "fp32", "x", ["y"]),
            # bf16 dot products have units of their own: a peak of their own
            "openvino_bf16": OpenVinoRunner(path, threads, "bf16", "x", ["y"]),
        }
        if int8:
            q = Path(tmp) / f"{name}_int8.onnx"
            quantize_graph(path, q, [x], "x")
            runners["onnxruntime_int8"] = OnnxRuntimeRunner(q, threads, "x", ["y"])
            runners["openvino_int8"] = OpenVinoRunner(q, threads, "fp32", "x", ["y"])
        for lib, r in runners.items():
            precision = lib.split("_")[1] if "_" in lib else "fp32"
            out[f"{name}_{lib.split('_')[0]}_{precision}"] = (
                (lambda r, x: lambda: r(x))(r, x),
                gflop,
                precision,
            )
    return out


def peaks(kernels, times):
    """The peak of each arithmetic (``{"fp32": GFLOP/s, "bf16": ..., "int8": GOP/s}``) from
    :func:`peak_kernels` and the interleaved times (lists) of its kernels, and every
    kernel's rate, ``{name}_gflops``."""
    rates = {k: gflop / min(times[k]) for k, (_, gflop, _) in kernels.items()}
    best = {}
    for k, (_, _, precision) in kernels.items():
        best[precision] = max(best.get(precision, 0.0), rates[k])
    return {p: round(v, 1) for p, v in best.items()}, {
        f"{k}_gflops": round(v, 1) for k, v in rates.items()
    }

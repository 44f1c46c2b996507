"""Backbone inference: resdet R50 trunk (FrozenBN, eval) vs torchvision's resnet50 trunk.

resdet's fp32 paths: ``prepare_for_inference(compile=True)`` (BN folded, channels_last,
Inductor-compiled with frozen weights) and the trunk exported as resdet.export does it
(dynamic batch and size) run on ONNX Runtime and OpenVINO; the fastest is the row
``backbone_r50_fp32`` (each path's ratio beside it). torchvision runs as a user would
(eval mode, default memory format). The eager PyTorch form is a reference row. bf16:
torch autocast and OpenVINO's bf16 inference precision, the faster as the row, with
feature error and top-1 agreement on real images; int8 (a reference row): the trunk
quantized as resdet.export does it, calibrated on 32 real images, on ONNX Runtime and
OpenVINO. A large fp32 GEMM in each library (PyTorch, ONNX Runtime, OpenVINO) is timed
in the same interleaved loop; the best of them is the machine's peak, against which the
fastest path's GFLOP/s is reported (``fraction_of_peak``).
"""

import copy
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torchvision
from fvcore.nn import FlopCountAnalysis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, emit, interleaved, parser, result  # noqa: E402

from resdet.convert import load_source  # noqa: E402
from resdet.modeling import build_resnet, prepare_for_inference  # noqa: E402


def gemm_onnx(path, n):
    """A one-node ONNX graph: (n, n) @ (n, n) in fp32, for the runtimes' own GEMMs."""
    import onnx
    from onnx import TensorProto, helper

    a, b, c = (helper.make_tensor_value_info(k, TensorProto.FLOAT, [n, n]) for k in "abc")
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", [a, b], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what every runtime here reads (onnx writes its newest)
    onnx.save(model, str(path))


def peak_gemms(device, tmp, threads, n=4096):
    """A large fp32 GEMM in every library that runs the paths timed here: PyTorch's (MKL
    on x86), ONNX Runtime's (MLAS) and OpenVINO's (oneDNN). Timed in the same interleaved
    loop as the paths; the fastest library's best time is the machine's peak (the best,
    not the median: the peak is what the cores can do; and one library's GEMM alone read
    below the runtimes' trunks on some CPUs). Returns {name: fn}, GFLOP per call."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = {"gemm_torch": lambda: a @ b}
    if device.type == "cpu":  # the runtimes are CPU back-ends, as in runtimes() below
        from resdet.export.runtime import OpenVinoDense, OrtDense

        path = Path(tmp) / "gemm.onnx"
        gemm_onnx(path, n)
        ort = OrtDense(path, ["c"], threads).session
        ov = OpenVinoDense(path, ["c"], threads, "fp32").request
        an, bn = a.numpy(), b.numpy()
        out["gemm_onnxruntime"] = lambda: ort.run(None, {"a": an, "b": bn})
        out["gemm_openvino"] = lambda: ov.infer({0: an, 1: bn})
    return out, 2 * n**3 / 1e9


class Trunk(torch.nn.Module):
    """The trunk as an export sees it: images -> (res5,)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        return (self.net(images)["res5"],)


def runtimes(trunk, tmp, calibration=None):
    """The trunk on each inference runtime resdet ships (resdet.export), as exported:
    dynamic batch and size, ONNX Runtime and OpenVINO with resdet's session settings; and
    with ``calibration`` (real images), quantized to int8 as resdet.export does it."""
    from resdet.export.exporter import INPUT_NAME, write_onnx
    from resdet.export.quantize import quantize_onnx
    from resdet.export.runtime import OpenVinoDense, OrtDense

    write_onnx(Trunk(trunk), Path(tmp), ["res5"], 0, "trunk.onnx")
    path, threads = Path(tmp) / "trunk.onnx", torch.get_num_threads()
    out = {"onnxruntime": OrtDense(path, ["res5"], threads)}
    for p in ("fp32", "bf16"):
        out[f"openvino_{p}"] = OpenVinoDense(path, ["res5"], threads, p)
    if calibration is not None:
        int8 = Path(tmp) / "trunk_int8.onnx"
        quantize_onnx(path, int8, [c[None].numpy() for c in calibration], INPUT_NAME)
        out["onnxruntime_int8"] = OrtDense(int8, ["res5"], threads)
        out["openvino_int8"] = OpenVinoDense(int8, ["res5"], threads, "fp32")
    return {k: (lambda r: lambda x: r(x)["res5"])(r) for k, r in out.items()}


def real_images(n=8, size=224, uint8=False, skip=0):
    """A batch of real ImageNet images (../shared/data/imagenet-sample; the ``n`` after the
    first ``skip``) if present: normalised float, or with ``uint8`` the raw pixels a resdet
    training loader yields."""
    root = SHARED_DATA / "imagenet-sample"
    files = sorted(root.glob("*.JPEG"))[skip : skip + n]
    if len(files) < n:
        return None
    T = torchvision.transforms
    tail = (
        [T.PILToTensor()]
        if uint8
        else [T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    tf = T.Compose([T.Resize(256), T.CenterCrop(size)] + tail)
    from PIL import Image

    return torch.stack([tf(Image.open(f).convert("RGB")) for f in files])


def main(argv=None):
    args = parser(__doc__).parse_args(argv)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval().to(dev)
    tv_trunk = torch.nn.Sequential(*list(tv.children())[:-2])
    ours = build_resnet(50, norm="FrozenBN", num_classes=None, out_features=["res5"]).eval()
    # same weights in both, through resdet's own converter (strict: every trunk key)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(tv.state_dict(), Path(tmp) / "tv.pth")
        weights = load_source(Path(tmp) / "tv.pth", "torchvision").weights
    ours.load_state_dict({k: v for k, v in weights.items() if not k.startswith("linear.")})
    ours = prepare_for_inference(ours.to(dev))
    x = torch.randn(8, 3, 224, 224, device=dev)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        eager = lambda inp: ours(inp)["res5"]  # noqa: E731
        compiled_net = prepare_for_inference(copy.deepcopy(ours), compile=True)
        paths = {"compiled": lambda inp: compiled_net(inp)["res5"]}
        # the runtimes are CPU back-ends (the CUDA path is PyTorch's own)
        # int8 calibrated on 32 real images other than the 8 its agreement is measured on
        rt = runtimes(ours, tmp, real_images(32, skip=8)) if dev.type == "cpu" else {}
        paths.update({k: v for k, v in rt.items() if k in ("onnxruntime", "openvino_fp32")})
        ref = eager(x_cl)
        diffs = {k: float((f(x_cl) - ref).abs().max()) for k, f in paths.items()}  # also compiles
        gemms, gemm_gflop = peak_gemms(dev, tmp, torch.get_num_threads())
        fns = {k: (lambda f: lambda: f(x_cl))(f) for k, f in paths.items()}
        fns.update({"eager": lambda: eager(x_cl), "torchvision": lambda: tv_trunk(x), **gemms})
        times = interleaved(fns, args.repeats, dev, stat=list)
        t = {k: statistics.median(v) for k, v in times.items()}
        peaks = {f"{k}_gflops": round(gemm_gflop / min(times[k]), 1) for k in gemms}
        peak = max(peaks.values())
        flops = FlopCountAnalysis(tv_trunk, x)
        flops.unsupported_ops_warnings(False)
        gflop = 2 * flops.total() / 1e9  # fvcore counts multiply-adds
        best = min(paths, key=t.get)
        ratios = {f"ratio_{k}": round(t["torchvision"] / t[k], 3) for k in paths}
        rows = [
            result(
                "backbone_r50_fp32",
                t[best],
                t["torchvision"],
                2.0,
                "torchvision resnet50",
                path=best,
                **ratios,
                resdet_gflops=round(gflop / t[best], 1),
                peak_gflops=peak,
                **peaks,
                fraction_of_peak=round(gflop / t[best] / peak, 3),
                max_abs_diff_vs_eager=round(diffs[best], 6),
                rel_diff_vs_eager=float(f"{diffs[best] / float(ref.abs().max()):.2g}"),
            ),
            result(
                "backbone_r50_fp32_eager",
                t["eager"],
                t["torchvision"],
                None,
                "torchvision resnet50",
                note="reference: resdet's PyTorch path without torch.compile "
                "(BN folded, channels_last)",
            ),
        ]

        def autocast(inp):
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                return eager(inp).float()

        low_sets = (
            ("backbone_r50_bf16_autocast", ["autocast", "openvino_bf16"], 4.0),
            ("backbone_r50_int8", ["onnxruntime_int8", "openvino_int8"], None),
        )
        imgs = real_images()
        options = {"autocast": autocast, **rt}
        for name, candidates, goal in low_sets:
            low_paths = {k: options[k] for k in candidates if k in options}
            if not low_paths:
                continue
            fns = {k: (lambda f: lambda: f(x_cl))(f) for k, f in low_paths.items()}
            fns["torchvision"] = lambda: tv_trunk(x)
            tb = interleaved(fns, args.repeats, dev)
            best = min(low_paths, key=tb.get)
            low = low_paths[best](x_cl)
            agree = None
            if imgs is not None:
                real = imgs.to(dev).contiguous(memory_format=torch.channels_last)
                p32 = tv.fc(eager(real).mean((2, 3))).argmax(1)
                p_low = tv.fc(low_paths[best](real).mean((2, 3))).argmax(1)
                agree = float((p32 == p_low).float().mean())
            rows.append(
                result(
                    name,
                    tb[best],
                    tb["torchvision"],
                    goal,
                    "torchvision resnet50 fp32",
                    path=best,
                    **{f"ratio_{k}": round(tb["torchvision"] / tb[k], 3) for k in low_paths},
                    max_abs_feature_diff=round(float((ref - low).abs().max()), 4),
                    rel_feature_diff=round(float((ref - low).abs().max() / ref.abs().max()), 4),
                    rel_l2_feature_diff=round(float((ref - low).norm() / ref.norm()), 4),
                    top1_agreement_real_images=agree,
                    note="random weights: top-1 agreement of the untrained classifier's argmax",
                )
            )
    emit(rows, args.output)


if __name__ == "__main__":
    main()

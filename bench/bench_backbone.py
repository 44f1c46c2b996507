"""Backbone inference: resdet R50 trunk (FrozenBN, eval) vs torchvision's resnet50 trunk.

resdet's fp32 paths: ``prepare_for_inference(compile=True)`` (BN folded, channels_last,
Inductor-compiled with frozen weights) and the trunk exported to ONNX (dynamic batch and
size) on ONNX Runtime and OpenVINO with resdet.export's session settings; the fastest is
the row ``backbone_r50_fp32`` (every path's ratio beside it). torchvision runs as a user
would (eval mode, default memory format). The eager PyTorch form is a reference row.
Reduced precision: bf16 (torch autocast, OpenVINO bf16) and int8 (the trunk quantized as
resdet.export quantizes, calibrated on 32 real images, on ONNX Runtime and OpenVINO); the
fastest of all is ``backbone_r50_lowp``, with its feature error and top-1 agreement on
real images; the best of each kind is a reference row.

The machine's peak is measured in the same interleaved loop: a GEMM and a 3x3 convolution
in each library, fp32 and int8 (bench/common.peak_kernels); ``fraction_of_peak`` is the
row's GFLOP/s (direct-convolution count) over the peak of its arithmetic.
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
from common import (  # noqa: E402
    SHARED_DATA,
    emit,
    export_onnx,
    interleaved,
    parser,
    peak_kernels,
    peaks,
    result,
)

from resdet.convert import load_source  # noqa: E402
from resdet.export.quantize import quantize_graph  # noqa: E402
from resdet.export.runtimes import OnnxRuntimeRunner, OpenVinoRunner  # noqa: E402
from resdet.modeling import build_resnet, prepare_for_inference  # noqa: E402


class Trunk(torch.nn.Module):
    """The trunk as an export sees it: images -> res5."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        return self.net(images)["res5"]


def runtimes(trunk, tmp, example, calibration=None):
    """The trunk on each inference runtime resdet ships, with resdet's session settings
    (resdet.export.runtimes): exported with dynamic batch and size, on ONNX Runtime and on
    OpenVINO at fp32 and bf16; with ``calibration`` (real images) also quantized to int8 as
    resdet.export does (resdet.export.quantize), on both."""
    path, threads = Path(tmp) / "trunk.onnx", torch.get_num_threads()
    export_onnx(Trunk(trunk).eval(), example, path, "images", ["res5"])
    out = {"onnxruntime": OnnxRuntimeRunner(path, threads, "images", ["res5"])}
    for p in ("fp32", "bf16"):
        out[f"openvino_{p}"] = OpenVinoRunner(path, threads, p, "images", ["res5"])
    if calibration is not None:
        int8 = Path(tmp) / "trunk_int8.onnx"
        quantize_graph(path, int8, [c[None].numpy() for c in calibration], "images")
        out["onnxruntime_int8"] = OnnxRuntimeRunner(int8, threads, "images", ["res5"])
        out["openvino_int8"] = OpenVinoRunner(int8, threads, "fp32", "images", ["res5"])
    return {
        k: (lambda r: lambda x: torch.from_numpy(r(x.contiguous().numpy())[0]))(r)
        for k, r in out.items()
    }


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
    flops = FlopCountAnalysis(tv_trunk, x)
    flops.unsupported_ops_warnings(False)
    gflop = 2 * flops.total() / 1e9  # fvcore counts multiply-adds
    with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        eager = lambda inp: ours(inp)["res5"]  # noqa: E731
        compiled_net = prepare_for_inference(copy.deepcopy(ours), compile=True)

        def autocast(inp):
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                return eager(inp).float()

        # the runtimes are CPU back-ends (the CUDA path is PyTorch's own); int8 calibrated
        # on 32 real images other than the 8 its agreement is measured on
        rt = runtimes(ours, tmp, x, real_images(32, skip=8)) if dev.type == "cpu" else {}
        paths = {"compiled": lambda inp: compiled_net(inp)["res5"], "autocast_bf16": autocast}
        paths.update({k if "_" in k else f"{k}_fp32": v for k, v in rt.items()})
        precision = {k: k.rsplit("_", 1)[-1] if "_" in k else "fp32" for k in paths}
        ref = eager(x_cl)
        outs = {k: f(x_cl) for k, f in paths.items()}  # also compiles
        kernels = peak_kernels(dev, tmp, torch.get_num_threads())
        fns = {k: (lambda f: lambda: f(x_cl))(f) for k, f in paths.items()}
        fns.update({"eager": lambda: eager(x_cl), "torchvision": lambda: tv_trunk(x)})
        fns.update({k: fn for k, (fn, _, _) in kernels.items()})
        times = interleaved(fns, args.repeats, dev, stat=list)
        t = {k: statistics.median(v) for k, v in times.items()}
        peak, rates = peaks(kernels, times)
        # top-1 agreement with fp32 on real images (the random classifier's argmax)
        imgs = real_images()
        agree = {}
        if imgs is not None:
            real = imgs.to(dev).contiguous(memory_format=torch.channels_last)
            classify = lambda f: tv.fc(f(real).mean((2, 3))).argmax(1)  # noqa: E731
            p32 = classify(eager)
            agree = {k: float((classify(f) == p32).float().mean()) for k, f in paths.items()}

    def row(name, candidates, goal, **extra):
        best = min(candidates, key=t.get)
        out, kind = outs[best], precision[best]
        rate = gflop / t[best]
        return result(
            name,
            t[best],
            t["torchvision"],
            goal,
            "torchvision resnet50 fp32",
            path=best,
            **{f"ratio_{k}": round(t["torchvision"] / t[k], 3) for k in candidates},
            resdet_gflops=round(rate, 1),
            **{f"peak_{k}_gflops": v for k, v in peak.items()},
            # against the peak of the path's own arithmetic
            fraction_of_peak=round(rate / peak[kind], 3) if kind in peak else None,
            rel_feature_diff=float(f"{float((out - ref).abs().max() / ref.abs().max()):.2g}"),
            rel_l2_feature_diff=float(f"{float((out - ref).norm() / ref.norm()):.2g}"),
            top1_agreement=agree.get(best),
            **extra,
        )

    fp32 = [k for k in paths if precision[k] == "fp32"]
    bf16 = [k for k in paths if precision[k] == "bf16"]
    int8 = [k for k in paths if precision[k] == "int8"]
    note = "top-1 agreement with fp32 of the random-weight classifier's argmax, 8 real images"
    rows = [
        row("backbone_r50_fp32", fp32, 2.0, **rates),
        result(
            "backbone_r50_fp32_eager",
            t["eager"],
            t["torchvision"],
            None,
            "torchvision resnet50",
            note="reference: resdet's PyTorch path without torch.compile "
            "(BN folded, channels_last)",
        ),
        row(
            "backbone_r50_lowp",
            bf16 + int8,
            8.0,
            note=note,
        ),
        row(
            "backbone_r50_bf16",
            bf16,
            None,
            note=note,
        ),
    ]
    if int8:
        rows.append(
            row(
                "backbone_r50_int8",
                int8,
                None,
                note=note,
            )
        )
    emit(rows, args.output)


if __name__ == "__main__":
    main()

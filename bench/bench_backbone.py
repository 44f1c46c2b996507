"""Backbone inference: resdet R50 trunk (FrozenBN, eval) vs torchvision's resnet50 trunk.

resdet runs the way its inference path does (``prepare_for_inference(compile=True)``: BN
folded, channels_last, Inductor-compiled with frozen weights); torchvision runs as a user
would (eval mode, default memory format). The eager form of resdet's path (folded,
channels_last, not compiled) is reported beside it. Also: achieved GFLOP/s against the
machine's dense fp32 matmul rate, and bf16 autocast with its numerical cost.
"""
import copy
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


def matmul_gflops(device, n=2048, repeats=5):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = interleaved({"mm": lambda: a @ b}, repeats, device)["mm"]
    return 2 * n ** 3 / t / 1e9


def real_images(n=8, size=224, uint8=False):
    """A batch of real ImageNet images (../shared/data/imagenet-sample) if present:
    normalised float, or with ``uint8`` the raw pixels a resdet training loader yields."""
    root = SHARED_DATA / "imagenet-sample"
    files = sorted(root.glob("*.JPEG"))[:n]
    if len(files) < n:
        return None
    T = torchvision.transforms
    tail = [T.PILToTensor()] if uint8 else [T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
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
    with torch.no_grad():
        compiled = prepare_for_inference(copy.deepcopy(ours), compile=True)
        compile_diff = float((compiled(x_cl)["res5"] - ours(x_cl)["res5"]).abs().max())  # also compiles
        t = interleaved({"resdet": lambda: compiled(x_cl), "eager": lambda: ours(x_cl),
                         "torchvision": lambda: tv_trunk(x)}, args.repeats, dev)
        flops = FlopCountAnalysis(tv_trunk, x)
        flops.unsupported_ops_warnings(False)
        gflop = 2 * flops.total() / 1e9  # fvcore counts multiply-adds
        peak = matmul_gflops(dev)
        rows = [result("backbone_r50_fp32", t["resdet"], t["torchvision"], 1.4, "torchvision resnet50",
                       resdet_gflops=round(gflop / t["resdet"], 1), matmul_peak_gflops=round(peak, 1),
                       fraction_of_peak=round(gflop / t["resdet"] / peak, 3),
                       max_abs_diff_vs_eager=round(compile_diff, 6)),
                result("backbone_r50_fp32_eager", t["eager"], t["torchvision"], None, "torchvision resnet50",
                       note="reference: resdet's path without torch.compile (BN folded, channels_last)")]
        dtype = torch.bfloat16
        with torch.autocast(dev.type, dtype=dtype):
            tb = interleaved({"resdet": lambda: ours(x_cl), "torchvision": lambda: tv_trunk(x)}, args.repeats, dev)
        ref = ours(x_cl)["res5"]
        with torch.autocast(dev.type, dtype=dtype):
            low = ours(x_cl)["res5"].float()
        imgs = real_images()
        agree = None
        if imgs is not None:
            imgs = imgs.to(dev).contiguous(memory_format=torch.channels_last)
            head = tv.fc
            p32 = head(ours(imgs)["res5"].mean((2, 3))).argmax(1)
            with torch.autocast(dev.type, dtype=dtype):
                p16 = head(ours(imgs)["res5"].float().mean((2, 3))).argmax(1)
            agree = float((p32 == p16).float().mean())
        rows.append(result("backbone_r50_bf16_autocast", tb["resdet"], t["torchvision"], 1.4,
                           "torchvision resnet50 fp32",
                           max_abs_feature_diff=round(float((ref - low).abs().max()), 4),
                           rel_feature_diff=round(float((ref - low).abs().max() / ref.abs().max()), 4),
                           top1_agreement_real_images=agree))
    emit(rows, args.output)


if __name__ == "__main__":
    main()

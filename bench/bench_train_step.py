"""Training step: resdet's pretraining step (``PretrainTrainer.run_step``, the modern
recipe's channels_last, optionally its bf16 autocast) vs a plain loop in the style of
torchvision's classification reference (model(x), label-smoothed cross-entropy,
zero_grad, backward, SGD step; default memory format) on torchvision's resnet50.

Same weights (resdet's converted from torchvision's), same batch of real images, same
loss, optimiser kind, momentum and label smoothing; EMA, MixUp and CutMix off on both
sides, so both do the same work. resdet's step also returns loss and top-1 count (two
host syncs, as the reference's metric logger does).
"""

import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
from bench_backbone import real_images  # noqa: E402
from common import SHARED_DATA, emit, interleaved, parser, result  # noqa: E402
from prepare_imagenet import link_flat  # noqa: E402

from resdet.convert import load_source  # noqa: E402
from resdet.pretrain import PretrainTrainer, get_pretrain_cfg  # noqa: E402

SAMPLE = SHARED_DATA / "imagenet-sample"
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "imagenet" / "r50_modern.yaml"


def trainer(root, out, device, batch, amp):
    cfg = get_pretrain_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.merge_from_list(
        [
            "PRETRAIN.DATA.ROOT",
            str(root),
            "OUTPUT_DIR",
            str(out),
            "MODEL.DEVICE",
            device,
            "SOLVER.IMS_PER_BATCH",
            batch,
            "SOLVER.AMP.ENABLED",
            amp,
            "SEED",
            0,
            "PRETRAIN.EMA.ENABLED",
            False,
            "PRETRAIN.AUG.MIXUP_ALPHA",
            0.0,
            "PRETRAIN.AUG.CUTMIX_ALPHA",
            0.0,
            "DATALOADER.NUM_WORKERS",
            0,
        ]
    )
    return PretrainTrainer(cfg)


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    images = real_images(args.batch, args.size)
    # resdet's loader yields uint8 and its step normalises the batch (counted in its time)
    raw = real_images(args.batch, args.size, uint8=True)
    with tempfile.TemporaryDirectory() as tmp:
        link_flat(SAMPLE, Path(tmp) / "train")
        (Path(tmp) / "val").symlink_to(Path(tmp) / "train")
        ours = {
            amp: trainer(tmp, Path(tmp) / "out", args.device, args.batch, amp)
            for amp in (False, True)
        }
        num_classes = len(ours[False].classes)
        labels = torch.arange(args.batch) % num_classes
        torch.manual_seed(0)
        tv = torchvision.models.resnet50(num_classes=num_classes)
        torch.save(tv.state_dict(), Path(tmp) / "tv.pth")
        weights = dict(load_source(Path(tmp) / "tv.pth", "torchvision").weights)  # the trunk
        weights.update({"linear.weight": tv.fc.weight.detach(), "linear.bias": tv.fc.bias.detach()})
    for t in ours.values():
        t.model.load_state_dict(weights)
        t.model.train()
    tv = tv.to(dev).train()
    opt = torch.optim.SGD(
        tv.parameters(),
        lr=ours[False].cfg.SOLVER.BASE_LR,
        momentum=0.9,
        weight_decay=ours[False].cfg.SOLVER.WEIGHT_DECAY,
    )
    smoothing = ours[False].cfg.PRETRAIN.LABEL_SMOOTHING

    def reference_step(amp):
        x, y = images.to(dev), labels.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(tv(x), y, label_smoothing=smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    t = interleaved(
        {
            "resdet_fp32": lambda: ours[False].run_step(raw, labels),
            "tv_fp32": lambda: reference_step(False),
            "resdet_bf16": lambda: ours[True].run_step(raw, labels),
            "tv_bf16": lambda: reference_step(True),
        },
        args.repeats,
        dev,
    )
    shape = f"{args.batch}x3x{args.size}x{args.size}"
    rows = [
        result(
            "train_step_r50_fp32",
            t["resdet_fp32"],
            t["tv_fp32"],
            1.1,
            "torchvision-reference loop, resnet50 fp32",
            batch=shape,
        ),
        result(
            "train_step_r50_bf16_vs_fp32_reference",
            t["resdet_bf16"],
            t["tv_fp32"],
            1.8,
            "torchvision-reference loop, resnet50 fp32",
            batch=shape,
        ),
        result(
            "train_step_r50_bf16_both_autocast",
            t["resdet_bf16"],
            t["tv_bf16"],
            None,
            "torchvision-reference loop, resnet50 bf16 autocast",
            batch=shape,
            note="reference: the same autocast on both sides",
        ),
    ]
    emit(rows, args.output)


if __name__ == "__main__":
    main()

"""Pretraining input pipeline: decode + augment images/s of resdet's loader against
torchvision's ImageFolder running the very same v2 transforms (PIL), on the real ImageNet
JPEGs of ../shared/data/imagenet-sample (viewed as class folders through symlinks).

The difference is resdet's decoding: JPEGs decode at a reduced DCT scale (PIL draft)
when the recipe never needs the full resolution. At 224 px most of these images
(median 500x375) cannot be reduced, and the paper's scale augmentation (shorter side up
to 480/224 of the crop) needs nearly full resolution at any crop size, so the goal there
is parity (no cost for the per-sample seeding); test-time loading at low resolution
(short runs, tests) must be at least 1.5x faster.
"""
import sys
import tempfile
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
from common import emit, interleaved, parser, result  # noqa: E402
from prepare_imagenet import link_flat  # noqa: E402

from resdet.pretrain import build_test_loader, get_pretrain_cfg, load_splits  # noqa: E402
from resdet.pretrain.data import ClassFolder, ResumableSampler, collate_skip_bad  # noqa: E402
from resdet.pretrain.transforms import build_test_transform, build_train_transform, train_decode_size  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def consume(loader, n_batches, device):
    for batch in islice(loader, n_batches):
        batch[0].to(device, non_blocking=True)


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--data", default=str(SAMPLE))
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--sizes", default="224,112,64", help="crop sizes to measure (test side = 8/7 crop)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        n = link_flat(Path(args.data), Path(tmp) / "train")
        link_flat(Path(args.data), Path(tmp) / "val")
        for crop in (int(s) for s in args.sizes.split(",")):
            cfg = get_pretrain_cfg()
            cfg.merge_from_file(str(Path(__file__).resolve().parents[1] / "configs/imagenet/r50.yaml"))
            cfg.merge_from_list(["PRETRAIN.DATA.ROOT", tmp, "INPUT.CROP_SIZE", crop, "INPUT.TEST_SIZE", crop * 8 // 7,
                                 "PRETRAIN.AUG.SHORT_SIDE_RANGE", (crop * 8 // 7, crop * 15 // 7),
                                 "DATALOADER.NUM_WORKERS", args.workers])
            _, train, val = load_splits(cfg)
            batch, n_batches = 25, n // 25
            kw = dict(batch_size=batch, num_workers=args.workers, pin_memory=device.type == "cuda")
            train_tf = build_train_transform(cfg)
            pairs = {
                "train_paper": (DataLoader(ClassFolder(train, train_tf, train_decode_size(cfg)),
                                           sampler=ResumableSampler(len(train), seed=0),
                                           collate_fn=collate_skip_bad, **kw),
                                DataLoader(ImageFolder(str(Path(tmp) / "train"), transform=train_tf),
                                           shuffle=True, **kw)),
                "val_1crop": (build_test_loader(cfg, val, "1crop"),
                              DataLoader(ImageFolder(str(Path(tmp) / "val"),
                                                     transform=build_test_transform(cfg, "1crop")), **kw)),
            }
            for name, (ours, theirs) in pairs.items():
                t = interleaved({"ours": lambda: consume(ours, n_batches, device),
                                 "tv": lambda: consume(theirs, n_batches, device)}, args.repeats, device)
                images = n_batches * batch
                rows.append(result(f"loading_{name}_{crop}px", t["ours"], t["tv"], 1.5 if name == "val_1crop" and crop < 224 else 1.0,
                                   "torchvision ImageFolder, same transforms (PIL)",
                                   images=images, workers=args.workers, device=str(device),
                                   resdet_images_per_s=round(images / t["ours"], 1),
                                   other_images_per_s=round(images / t["tv"], 1)))
    emit(rows, args.output)


if __name__ == "__main__":
    main()

"""ImageNet-style loading on one core: decode + RandomResizedCrop(224) + flip to a
training-ready (normalised float) batch, on the real JPEGs of ../shared/data/imagenet-sample.

resdet: ClassFolder with the fast training transform (torchvision.io decoding into uint8
tensors, the crop box drawn from the JPEG header first and the JPEG decoded at the
largest DCT reduction that keeps the box >= 224 px, uint8 crop/flip) and normalisation
of each whole batch (``build_batch_normalize``), counted in resdet's time.
torchvision: ImageFolder + the classic PIL transforms (RandomResizedCrop, flip, ToTensor,
Normalize). Both: batch 25, no workers, one thread, the same images and statistics.
Also reported: plain full-resolution decode alone (torchvision.io vs PIL), the bound on
what can be gained without reduced-size decoding.
"""

import sys
import tempfile
from itertools import islice
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
from common import SHARED_DATA, emit, interleaved, parser, result  # noqa: E402
from prepare_imagenet import link_flat  # noqa: E402

from resdet.engine import load  # noqa: E402
from resdet.pretrain import load_splits  # noqa: E402
from resdet.pretrain.data import ClassFolder, ResumableSampler, collate_skip_bad, decode_tensor  # noqa: E402
from resdet.pretrain.transforms import build_batch_normalize, build_train_transform  # noqa: E402

SAMPLE = SHARED_DATA / "imagenet-sample"
BATCH = 25


def loaders(root, crop):
    """(resdet loader, its batch normaliser, torchvision loader, image paths) over root/train."""
    overrides = {
        "PRETRAIN.DATA.ROOT": str(root),
        "INPUT.CROP_SIZE": crop,
        "PRETRAIN.AUG.TRIVIAL_AUGMENT": False,  # decode + crop + flip only
    }
    cfg = load("imagenet/r50_modern.yaml", overrides=overrides, kind="pretrain").cfg
    _, train, _ = load_splits(cfg)
    ours = DataLoader(
        ClassFolder(train, build_train_transform(cfg, from_path=True), decode=False),
        batch_size=BATCH,
        sampler=ResumableSampler(len(train), seed=0),
        collate_fn=collate_skip_bad,
    )
    mean, std = [m / 255 for m in cfg.MODEL.PIXEL_MEAN], [s / 255 for s in cfg.MODEL.PIXEL_STD]
    classic = T.Compose(
        [
            T.RandomResizedCrop(crop, scale=tuple(cfg.PRETRAIN.AUG.RRC_SCALE)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    theirs = DataLoader(
        ImageFolder(str(Path(root) / "train"), transform=classic), batch_size=BATCH, shuffle=True
    )
    return ours, build_batch_normalize(cfg), theirs, [path for path, _ in train]


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--data", default=str(SAMPLE))
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--images", type=int, default=200, help="images per timed pass")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(1)  # "on one core"
    with tempfile.TemporaryDirectory() as tmp:
        link_flat(Path(args.data), Path(tmp) / "train")
        (Path(tmp) / "val").symlink_to(Path(tmp) / "train")  # load_splits wants one; unused
        ours, normalize, theirs, paths = loaders(tmp, args.crop)
        n_batches = max(1, min(len(paths), args.images) // BATCH)

        def run_ours():
            for images, _, _ in islice(ours, n_batches):
                normalize(images.to(device, non_blocking=True))

        def run_theirs():
            for images, _ in islice(theirs, n_batches):
                images.to(device, non_blocking=True)

        t = interleaved({"ours": run_ours, "tv": run_theirs}, args.repeats, device)
        images = n_batches * BATCH
        files = paths[:images]
        td = interleaved(
            {
                "ours": lambda: [decode_tensor(f) for f in files],
                "pil": lambda: [Image.open(f).convert("RGB") for f in files],
            },
            args.repeats,
        )
    rows = [
        result(
            f"loading_rrc{args.crop}_flip",
            t["ours"],
            t["tv"],
            1.5,
            "torchvision ImageFolder + classic PIL transforms",
            images=images,
            threads=1,
            workers=0,
            resdet_images_per_s=round(images / t["ours"], 1),
            other_images_per_s=round(images / t["tv"], 1),
        ),
        result(
            "decode_full_resolution",
            td["ours"],
            td["pil"],
            None,
            "PIL Image.open().convert('RGB')",
            images=len(files),
            resdet_images_per_s=round(len(files) / td["ours"], 1),
            other_images_per_s=round(len(files) / td["pil"], 1),
            note="reference: bound on gains without reduced-size decoding",
        ),
    ]
    emit(rows, args.output)


if __name__ == "__main__":
    main()

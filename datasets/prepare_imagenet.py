"""Build the ImageNet-1k class-folder layout resdet pretrains on:

    OUT/train/<wnid>/*.JPEG   (1,281,167 images)
    OUT/val/<wnid>/*.JPEG     (50,000 images, sorted into folders by the ground truth)

From the official archives (torchvision's own ImageNet parsers do the extraction and
check the archives' MD5):

    python datasets/prepare_imagenet.py --archives DIR [--out datasets/imagenet] \\
        [--val-labels LOC_val_solution.csv | --val-labels val_labels.txt]

DIR holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, and either the devkit
ILSVRC2012_devkit_t12.tar.gz (its ground truth is read through torchvision, which needs
scipy) or a --val-labels file: Kaggle's LOC_val_solution.csv, or lines "<image> <wnid>".

From wnid-prefixed flat files (e.g. ../shared/data/imagenet-sample, ``nXXXXXXXX_*.JPEG``):

    python datasets/prepare_imagenet.py --flat DIR --out OUT [--split train]

links each file into OUT/<split>/<wnid>/ (symlinks; nothing is copied).
"""
import argparse
import csv
import os
import re
import sys
from pathlib import Path

WNID = re.compile(r"^(n\d{8})")


def wnid_of(name: str) -> str:
    m = WNID.match(name)
    if not m:
        raise ValueError(f"{name}: file name does not start with a WordNet id (nXXXXXXXX)")
    return m.group(1)


def link_flat(src: Path, dst: Path):
    """Symlink every nXXXXXXXX_*.JPEG of ``src`` into ``dst/<wnid>/``; returns the count."""
    files = sorted(p for p in Path(src).iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if not files:
        raise ValueError(f"{src}: no images")
    pairs = [(f, wnid_of(f.name)) for f in files]  # all names checked before anything is written
    for f, wnid in pairs:
        (dst / wnid).mkdir(parents=True, exist_ok=True)
        (dst / wnid / f.name).symlink_to(f.resolve())
    return len(pairs)


def read_val_labels(path: Path) -> dict:
    """image stem -> wnid, from LOC_val_solution.csv or "<image> <wnid>" lines."""
    labels = {}
    with open(path, newline="") as f:
        if path.suffix == ".csv":
            for i, row in enumerate(csv.DictReader(f), start=2):
                try:
                    labels[row["ImageId"]] = wnid_of(row["PredictionString"])
                except (KeyError, ValueError) as e:
                    raise ValueError(f"{path}:{i}: expected ImageId,PredictionString with a wnid first ({e})") from None
        else:
            for i, line in enumerate(f, start=1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 2 or not WNID.match(parts[1]):
                    raise ValueError(f"{path}:{i}: expected '<image> <wnid>', got {line.strip()!r}")
                labels[Path(parts[0]).stem] = parts[1]
    if not labels:
        raise ValueError(f"{path}: no validation labels")
    return labels


def from_archives(archives: Path, out: Path, val_labels=None):
    from torchvision.datasets import imagenet as tv

    if val_labels:
        labels = read_val_labels(Path(val_labels))
        wnids = [labels[k] for k in sorted(labels)]  # parse_val_archive pairs them with sorted names
    else:
        tv.parse_devkit_archive(str(archives))
        wnids = tv.load_meta_file(str(archives))[1]
    if len(wnids) != 50000:
        raise ValueError(f"{val_labels or archives}: {len(wnids)} validation labels, ImageNet-1k has 50000")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        if not (archives / name).is_file():
            raise ValueError(f"{archives / name}: archive not found")
        if not (out / name).exists():  # torchvision extracts from beside the output folders
            os.symlink((archives / name).resolve(), out / name)
    tv.parse_train_archive(str(out), folder="train")
    tv.parse_val_archive(str(out), wnids=wnids, folder="val")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--archives", type=Path, help="folder with the official ILSVRC2012 archives")
    src.add_argument("--flat", type=Path, help="folder of nXXXXXXXX_*.JPEG files")
    ap.add_argument("--out", type=Path, default=Path("datasets/imagenet"))
    ap.add_argument("--val-labels", type=Path, help="LOC_val_solution.csv or '<image> <wnid>' lines")
    ap.add_argument("--split", default="train", help="with --flat: the split folder to fill")
    args = ap.parse_args(argv)
    try:
        if args.flat:
            print(f"linked {link_flat(args.flat, args.out / args.split)} images into {args.out / args.split}")
        else:
            from_archives(args.archives, args.out, args.val_labels)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pretrain a resdet ResNet classifier; see resdet/pretrain/__init__.py for the options.

    python tools/pretrain_imagenet.py --config configs/imagenet/r50.yaml --data datasets/imagenet
"""
import sys

from resdet.pretrain import main

if __name__ == "__main__":
    sys.exit(main())

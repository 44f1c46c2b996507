"""`python tools/pretrain_imagenet.py ARGS` is `resdet pretrain ARGS`;
the code is resdet/tools/pretrain_imagenet.py.

    python tools/pretrain_imagenet.py --config configs/imagenet/r50.yaml --data DIR [--output DIR]
        [--resume] [--eval-only] [--num-gpus N] [--num-machines M --machine-rank R
        --dist-url tcp://HOST:PORT] [KEY VALUE ...]
"""

import sys

from resdet.tools.pretrain_imagenet import main

if __name__ == "__main__":
    sys.exit(main())

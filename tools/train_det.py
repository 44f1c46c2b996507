"""Fine-tune (or with --eval-only evaluate) Faster R-CNN with a resdet backbone.

Detectron2's train_net conventions: ``--config`` (short for ``--config-file``),
``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``, ``--resume``,
``--eval-only``, then ``KEY VALUE`` config overrides, e.g.

    python tools/train_det.py --config configs/coco_r101.yaml MODEL.WEIGHTS output/r101.pth
"""
import sys

import torch

from resdet.data import DatasetError  # resdet first: it quiets Detectron2's import-time warnings
from resdet.detection import main
from resdet.io import CheckpointError

from detectron2.engine import default_argument_parser, launch

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    if args.num_gpus * args.num_machines > 1 and not torch.cuda.is_available():
        sys.exit("error: --num-gpus/--num-machines above 1 need CUDA (Detectron2 runs "
                 "DistributedDataParallel on GPUs only); this machine has none")
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except (CheckpointError, DatasetError) as e:
        sys.exit(f"error: {e}")

"""The command line of pretraining (tools/pretrain_imagenet.py): arguments, config,
Detectron2's ``launch``, and resdet's one way to fail (``error: ...``, exit status 2)."""
import argparse
from pathlib import Path

from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .. import cli
from ..config import merge_config_file, merge_overrides
from ..io import atomic_write
from .config import get_pretrain_cfg
from .data import load_splits
from .engine import check_cfg, evaluate_checkpoint, train

__all__ = ["argument_parser", "setup_cfg", "main"]


def argument_parser():
    p = argparse.ArgumentParser(
        description="Pretrain a resdet ResNet classifier (ImageNet, CIFAR, any class folders).")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="configs/imagenet/*.yaml or configs/cifar/*.yaml")
    p.add_argument("--data", help="dataset root holding <train>/<class>/ and <val>/<class>/ "
                                  "(PRETRAIN.DATA.ROOT)")
    p.add_argument("--output", help="output folder (OUTPUT_DIR)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last_checkpoint")
    p.add_argument("--eval-only", action="store_true",
                   help="evaluate MODEL.WEIGHTS or OUTPUT_DIR/model_final.pth")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="processes on this machine (gloo on CPU)")
    p.add_argument("--num-machines", type=int, default=1)
    p.add_argument("--machine-rank", type=int, default=0)
    p.add_argument("--dist-url", default="auto", help="tcp://HOST:PORT for several machines")
    cli.add_debug_flag(p)
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    return p


def setup_cfg(args):
    """The frozen config of a command line: file, then --data/--output, then KEY VALUE pairs."""
    cfg = get_pretrain_cfg()
    merge_config_file(cfg, args.config)
    if args.data:
        cfg.PRETRAIN.DATA.ROOT = args.data
    if args.output:
        cfg.OUTPUT_DIR = args.output
    merge_overrides(cfg, args.opts)
    cfg.freeze()
    return cfg


def _worker(cfg, resume, eval_only):
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="resdet")
    if comm.is_main_process():
        with atomic_write(Path(cfg.OUTPUT_DIR) / "config.yaml", "w") as f:
            f.write(cfg.dump())
    return evaluate_checkpoint(cfg) if eval_only else train(cfg, resume=resume)


def main(argv=None) -> int:
    """``tools/pretrain_imagenet.py``: exit 0, or 2 with a one-line error on bad input."""
    args = argument_parser().parse_args(argv)

    def run():
        cfg = setup_cfg(args)
        check_cfg(cfg)
        load_splits(cfg)  # fail at start, once, before any process is spawned
        launch(_worker, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url,
               args=(cfg, args.resume, args.eval_only))

    return cli.run(run, debug=args.debug)

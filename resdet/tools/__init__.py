"""resdet's commands: the command layer over the library (nothing in the library imports it).

Each module here is one command, ``main(argv=None) -> int``; the same code runs as

    resdet <command> ...              # the console script of `pip install`
    python -m resdet <command> ...
    python tools/<file>.py ...        # in a checkout (tools/ holds two-line shims)

:func:`main` is the ``resdet`` script: it picks the command and hands it the rest of the
arguments, so ``resdet <command> --help`` is that command's own help.
"""

import argparse
import importlib
import sys

from ..version import __version__

__all__ = ["COMMANDS", "main"]

# command -> (module in resdet.tools, arguments put first, one line of help)
COMMANDS = {
    "train": ("train_det", [], "fine-tune a detector (Detectron2's train_net flags)"),
    "eval": ("train_det", ["--eval-only"], "evaluate a trained detector on its test set"),
    "predict": ("predict", [], "detect in images, folders, globs or videos; draw and save"),
    "evaluate": ("evaluate", [], "score a predictions file against ground truth, no model"),
    "export": ("export", [], "export the whole detector for ONNX Runtime, OpenVINO, torch.export"),
    "pretrain": ("pretrain_imagenet", [], "pretrain a ResNet classifier (ImageNet, CIFAR)"),
    "convert": ("convert_weights", [], "convert ResNet weights into a Detectron2 backbone"),
    "pipeline": ("pipeline", [], "data, pretrain, convert, detect, evaluate, report"),
    "demo": ("demo", [], "the pipeline on built-in data (what `make demo` runs)"),
    "degradation-study": ("degradation_study", [], "plain vs residual CIFAR nets (Figs. 1, 6)"),
    "layer-responses": ("layer_responses", [], "layer response std, plain vs residual (Fig. 7)"),
}


def parser():
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    ap = argparse.ArgumentParser(
        prog="resdet",
        description="ResNet detection on Detectron2: train, evaluate, predict, export, ...",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands:\n{listing}\n\n`resdet COMMAND --help` shows a command's options.",
    )
    ap.add_argument("--version", action="version", version=f"resdet {__version__}")
    ap.add_argument(
        "command", choices=COMMANDS, metavar="COMMAND", help="one of the commands below"
    )
    ap.add_argument("args", nargs=argparse.REMAINDER, help="the command's arguments")
    return ap


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    ap = parser()
    if not argv:  # argparse would also ask for the command's arguments
        ap.error("give a COMMAND; `resdet --help` lists them")
    args = ap.parse_args(argv)
    module, first, _ = COMMANDS[args.command]
    command = importlib.import_module(f"{__name__}.{module}")
    # argparse names a program after sys.argv[0] when its parser is made: make the usage
    # and errors of the command read `resdet train`, not `__main__.py`
    saved = list(sys.argv)
    sys.argv[:1] = [f"resdet {args.command}"]
    try:
        return command.main(first + args.args)
    finally:
        sys.argv[:] = saved

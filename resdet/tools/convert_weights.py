"""Convert ResNet weights (resdet, torchvision, timm, Detectron2/MSRA) into a Detectron2
checkpoint OUT.pth that carries the settings those weights require.

    resdet convert resnet50.pth r50_c4.pth --verify
    resdet convert R-101.pkl r101_fpn.pth --layout fpn --verify cat.jpg

The work is resdet.convert_weights (resdet/api.py); nothing is written unless every
check passed.
"""

import argparse
import logging
import sys

from .. import cli
from ..convert import FORMATS, LAYOUTS, convert_weights


def parser():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="source checkpoint (.pth, .pt or .pkl)")
    ap.add_argument(
        "out", help="Detectron2 checkpoint to write (.pth); its fragment goes to OUT.yaml"
    )
    ap.add_argument("--from", dest="kind", choices=FORMATS, default="auto", help="source format")
    ap.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="c4",
        help="c4: res5 in the RoI head (the paper); fpn: whole trunk in bottom_up",
    )
    ap.add_argument(
        "--depth",
        type=int,
        default=None,
        help="require this depth instead of reading it off the weights",
    )
    ap.add_argument(
        "--config",
        default=None,
        help="for a Detectron2 training checkpoint that carries no settings: its config",
    )
    ap.add_argument(
        "--verify",
        nargs="?",
        const=True,
        default=False,
        metavar="IMAGE",
        help="compare features per stage (on IMAGE, or a fixed tensor); fail above 1e-4",
    )
    return cli.add_debug_flag(ap)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    def work():
        result = convert_weights(
            args.src,
            args.out,
            layout=args.layout,
            verify=args.verify,
            kind=args.kind,
            depth=args.depth,
            config=args.config,
        )
        # resdet reads these from the checkpoint; a plain Detectron2 config needs them set
        keys = " ".join(f"{k} {v!r}".replace("'", '"') for k, v in result["config_keys"].items())
        print(f"wrote {result['out']}; in a plain Detectron2 config set: {keys}")

    return cli.run(work, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())

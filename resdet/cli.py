"""The one way every resdet command fails: ``error: ...`` on stderr, exit status 2.

Each tool is ``main(argv=None) -> int`` that parses its arguments and then calls
:func:`run` with the library function that does the work::

    def main(argv=None) -> int:
        args = parser().parse_args(argv)
        return cli.run(lambda: resdet.convert_weights(...), debug=args.debug)

``--debug`` (:func:`add_debug_flag`) or ``RESDET_DEBUG=1`` shows the traceback instead.
"""

import errno
import os
import sys
import traceback

from .errors import ResdetError, one_line

__all__ = ["run", "add_debug_flag", "parse_args", "one_line", "EXIT_ERROR"]

EXIT_ERROR = 2  # bad input, as argparse's own usage errors


def add_debug_flag(parser):
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of an error (also RESDET_DEBUG=1)",
    )
    return parser


def parse_args(parser, argv=None):
    """``parser.parse_args(argv)`` for a parser that ends in KEY VALUE overrides
    (``nargs=REMAINDER``): an unknown ``--flag`` anywhere is argparse's usage error, instead
    of being swallowed as an override (and a later flag reported missing)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    known = {s for action in parser._actions for s in action.option_strings}
    for token in argv:
        name = token.split("=", 1)[0]
        if token.startswith("--") and not any(k.startswith(name) for k in known):  # or abbreviated
            parser.error(f"unrecognized argument {token} (flags go before the KEY VALUE overrides)")
    return parser.parse_args(argv)


def _os_error(e: OSError) -> str:
    where = e.filename if e.filename is not None else ""
    if e.errno == errno.ENOSPC:
        return (
            f"{where or 'output'}: no space left on the device; free space or choose"
            f" another output folder"
        )
    if isinstance(e, PermissionError):
        return f"{where}: permission denied; choose a folder you can write to"
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return (
            f"{where}: a file stands where a folder is needed (or the reverse); choose"
            f" another output path"
        )
    if isinstance(e, IsADirectoryError):
        return f"{where}: is a folder, a file was expected; choose another path"
    if isinstance(e, FileNotFoundError):
        return f"{where}: no such file or folder"
    return f"{where + ': ' if where else ''}{e.strerror or one_line(e)}"


def _disk_full(e: BaseException) -> bool:
    # torch.save reports a full disk as RuntimeError("... unexpected pos ...") whose cause is
    # the OSError; walk the chain for it
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        e = e.__cause__ or e.__context__
    return False


def run(fn, *, debug: bool = False) -> int:
    """Call ``fn()``; return 0, or print one ``error:`` line and return 2 (130 on Ctrl-C)."""
    debug = debug or os.environ.get("RESDET_DEBUG", "") not in ("", "0")
    try:
        fn()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BaseException as e:  # noqa: BLE001 - the one place that turns errors into lines
        if isinstance(e, SystemExit):
            raise
        if debug:
            traceback.print_exc()
        if isinstance(e, ResdetError):
            msg = one_line(e)
        elif _disk_full(e):
            msg = (
                "no space left on the device while writing; free space or choose another"
                " output folder"
            )
        elif isinstance(e, OSError):
            msg = _os_error(e)
        else:
            msg = (
                f"unexpected {type(e).__name__}: {one_line(e)} (a resdet bug: rerun with --debug "
                "and report the traceback)"
            )
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_ERROR

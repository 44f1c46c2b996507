"""Safe checkpoint I/O shared by every resdet command.

Two rules: nothing a user trained is ever lost half-written (every file is written to a
temporary sibling, fsynced, then renamed over the target), and loading a checkpoint never
executes code from it (``torch.load(weights_only=True)``; pickles go through an
unpickler that only rebuilds numpy arrays, numbers, strings and plain containers).
"""

import argparse
import errno
import io
import os
import pickle
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import (  # CheckpointError re-exported: older code imports it here
    CheckpointError,
    OutputError,
    ResdetError,
    one_line,
)

__all__ = [
    "CheckpointError",
    "atomic_write",
    "atomic_dir",
    "atomic_save",
    "safe_torch_load",
    "safe_pickle_load",
    "load_checkpoint_file",
]


def _why(e: OSError) -> str:
    """What a user can do about an OSError met while writing."""
    if e.errno == errno.ENOSPC:
        return "no space left on the device; free space or choose another output folder"
    if e.errno == errno.EFBIG:
        return (
            "file too large (the file system's or this process's size limit); choose another folder"
        )
    if e.errno == errno.EROFS:
        return "read-only file system; choose another output folder"
    if isinstance(e, PermissionError):
        return "permission denied; choose a folder you can write to"
    if isinstance(e, (FileExistsError, NotADirectoryError)):
        return f"{e.filename} is a file where a folder is needed; choose another output path"
    return f"{e.strerror or e}" + (f" ({e.filename})" if e.filename else "")


def _disk_full(e: BaseException):
    """The ENOSPC OSError behind ``e`` (torch.save reports it as a RuntimeError), or None."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG):
            return e
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path``; on success fsync and rename it to ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(
            f"{path}: is a folder, a file is to be written there; choose another path"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OutputError(f"{path}: cannot be written: {_why(e)}") from None
    # mkstemp creates 0600; give the file the permissions a plain open() would
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, ResdetError):  # already names its own file (a nested atomic write)
            raise
        if _disk_full(e):
            raise OutputError(f"{path}: cannot be written: {_why(_disk_full(e))}") from None
        if isinstance(e, OSError):
            raise OutputError(f"{path}: cannot be written: {_why(e)}") from None
        if isinstance(e, RuntimeError) and "unexpected pos" in str(e):  # torch.save's short write
            raise OutputError(
                f"{path}: cannot be written: the write stopped part-way (disk full or "
                "a file size limit); free space or choose another output folder"
            ) from None
        raise
    # make the rename itself durable
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_dir(path, *, replaceable=lambda folder: False):
    """A temporary folder beside ``path`` that replaces it when the block succeeds, so a
    reader sees the old folder or the whole new one, never half of it.

    ``path`` may exist only empty or when ``replaceable(path)`` says it is an earlier
    result of the same kind (anything else is not ours to replace). The folder gets the
    permissions a plain ``mkdir`` would (``mkdtemp`` makes it 0700: a serving account could
    not read it), and the temporary folders of a killed earlier attempt at ``path`` are
    removed first."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: is a file; choose a folder")
    if out.is_dir() and any(out.iterdir()) and not replaceable(out):
        raise OutputError(f"{out}: exists and holds other files; choose a new or empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        for stale in list(out.parent.glob(f".{out.name}.*.tmp")) + list(
            out.parent.glob(f".{out.name}.*.old")
        ):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError as e:
        raise OutputError(f"{out}: cannot be written: {_why(e)}") from None
    try:
        yield tmp
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.rename(out, old / "x")
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_save(obj, path) -> None:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def safe_torch_load(path, map_location="cpu"):
    """``torch.load(weights_only=True)`` with one-line errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        # torchvision's reference scripts save their argparse.Namespace beside the weights;
        # it is a plain attribute bag, rebuilt without running code
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        not_one = _not_a_checkpoint(path)
        if not_one:
            raise CheckpointError(f"{path}: {not_one}") from None
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than "
            f"tensors and plain data ({_refused_global(e)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = one_line(e)
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first}"
        ) from None


def _not_a_checkpoint(path):
    """Why ``path`` is no PyTorch checkpoint at all, or None when it may be one: a zip
    (torch.save) or a pickle (the legacy format starts with a pickle). torch.load reports
    any other file (a text file, an HTML page saved instead of the weights, a YAML config
    given as weights) as a pickle it refused, and advises loading it unsafely."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    try:
        text = head.decode("utf-8").strip()
    except UnicodeDecodeError:
        return "not a PyTorch checkpoint (neither a torch.save zip nor a pickle)"
    start = text.splitlines()[0][:40] if text else ""
    kind = "an HTML page" if start.lower().startswith(("<!doctype html", "<html")) else "text"
    return (
        f"not a PyTorch checkpoint: the file is {kind} (it starts with {start!r}); give the "
        f"weights file (.pth, .pkl) itself"
    )


def _refused_global(e) -> str:
    """What torch.load's weights-only refusal names (the object it would have built),
    instead of its first line (advice to load the file unsafely)."""
    import re

    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    return f"it names {found.group(1)}" if found else one_line(e)


_SAFE_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bool"),
    ("builtins", "complex"),
    ("builtins", "slice"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how py2/py3 pickles of numpy arrays spell their raw bytes
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is forbidden")


def safe_pickle_load(path):
    """Load a .pkl (Detectron2/MSRA weights) accepting only numpy arrays and plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: {one_line(e)} (only numpy arrays and plain data are allowed)"
        ) from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(
            f"{path}: not a readable pickle (truncated or corrupt?): {one_line(e)}"
        ) from None


def load_checkpoint_file(path):
    """Load .pkl through the restricted unpickler, anything else through torch.load."""
    return safe_pickle_load(path) if str(path).endswith(".pkl") else safe_torch_load(path)

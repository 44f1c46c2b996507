"""One launch for every trainer: Detectron2's ``launch`` with its arguments checked first.

Detectron2's launch trusts its arguments: a machine rank out of range waits forever for
processes that never come, several machines with ``dist_url="auto"`` fail with a bare
assertion, more processes than GPUs fail inside each child. Here they are one-line errors
before any process starts. With CUDA the processes use NCCL, one GPU each; without it,
gloo on the CPU (Detectron2's launch chooses), which is how the tests run two processes.
"""

import re

import torch

from ..errors import ConfigError, ResdetError

__all__ = ["launch", "check_launch"]

_URL = re.compile(r"(tcp://[^:/\s]+:\d+|file://\S+|env://)")


def check_launch(num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto") -> int:
    """The world size of a launch, or a one-line ConfigError for arguments that cannot work."""
    for name, value, least in (
        ("--num-gpus", num_gpus, 1),
        ("--num-machines", num_machines, 1),
        ("--machine-rank", machine_rank, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} {value!r}: must be a whole number of at least {least}")
    if machine_rank >= num_machines:
        raise ConfigError(
            f"--machine-rank {machine_rank}: must be below --num-machines {num_machines} "
            f"(ranks count from 0)"
        )
    if num_machines > 1 and (not dist_url or dist_url == "auto"):
        raise ConfigError(
            f"--num-machines {num_machines} needs --dist-url tcp://HOST:PORT of machine 0, the "
            f"same on every machine"
        )
    if dist_url and dist_url != "auto" and not _URL.fullmatch(str(dist_url)):
        raise ConfigError(
            f"--dist-url {dist_url!r}: expected tcp://HOST:PORT (or file://PATH, env://)"
        )
    if torch.cuda.is_available() and num_gpus > torch.cuda.device_count():
        raise ConfigError(
            f"--num-gpus {num_gpus}: this machine has {torch.cuda.device_count()} GPU(s)"
        )
    return num_gpus * num_machines


def launch(fn, args=(), *, num_gpus=1, num_machines=1, machine_rank=0, dist_url="auto"):
    """``fn(*args)`` in this process when the world is one process (its result is
    returned), else in ``num_gpus`` processes on this machine through Detectron2's
    ``launch`` (None is returned: the run's files hold its results)."""
    world = check_launch(num_gpus, num_machines, machine_rank, dist_url)
    if world == 1:
        return fn(*args)
    from detectron2.engine import launch as d2_launch
    from torch.multiprocessing import ProcessRaisedException

    try:
        d2_launch(
            fn,
            num_gpus,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=tuple(args),
        )
    except ProcessRaisedException as e:
        raise _as_resdet_error(e) or e from None
    return None


def _as_resdet_error(e):
    """A child process's ResdetError (torch reports it as its traceback's text) as the
    same one-line error in the parent, or None for any other failure."""

    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    found = re.match(r"resdet\.errors\.(\w+): (.*)", lines[-1]) if lines else None
    kinds = {k.__name__: k for k in (ResdetError, *ResdetError.__subclasses__())}
    kind = kinds.get(found.group(1)) if found else None
    if kind is not None:
        return kind(found.group(2))
    return None

"""The setup layer every entry point goes through: :func:`load` (one loader for YAML and
LazyConfig configs, weights, overrides, output folder and device), :func:`resolve_device`
(the one device policy), :func:`launch` (one launch, checked) and the training loop's
shared parts (resdet.engine.train)."""

from .launch import check_launch, launch  # noqa: F401
from .setup import Setup, load, resolve_device  # noqa: F401

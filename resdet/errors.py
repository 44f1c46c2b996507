"""resdet's one exception family.

Every error a user can cause (a bad config, dataset, checkpoint or output path) is a
``ResdetError`` whose message is one line naming the file, key or value and what to do.
Commands turn it into ``error: <message>`` on stderr and exit status 2 (``resdet.cli``);
library callers catch ``ResdetError`` (or one kind) like any other exception. Each kind
is also a ``ValueError`` so code written against the earlier ``ValueError`` keeps working.
"""

__all__ = [
    "ResdetError",
    "ConfigError",
    "DatasetError",
    "CheckpointError",
    "OutputError",
    "TrainingError",
    "one_line",
    "cwd_hint",
]


def one_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none: what
    an error line quotes of a library's exception."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def cwd_hint(path) -> str:
    """For a path not found: where a relative one was looked for (a config run from another
    folder than the one its paths were written for), else nothing."""
    import os

    if os.path.isabs(os.path.expanduser(str(path))):
        return ""
    return f" (a relative path is read from the working directory {os.getcwd()})"


class ResdetError(ValueError):
    """Bad input a user can fix; the message is one line saying what and how."""


class ConfigError(ResdetError):
    """A config file, key, value or command-line argument that cannot be used."""


class DatasetError(ResdetError):
    """A dataset that cannot be read or trained on (names the file and the entry)."""


class CheckpointError(ResdetError):
    """A checkpoint that is missing, truncated, unsafe, of an unknown format, or does not
    fit the model."""


class OutputError(ResdetError):
    """An output path that cannot be written (under a file, not writable, disk full)."""


class TrainingError(ResdetError):
    """A run that cannot go on (for example a non-finite loss); nothing non-finite is saved."""

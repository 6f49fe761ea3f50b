"""Errors the command line turns into one line on stderr and a non-zero exit code."""

from __future__ import annotations

import errno
from contextlib import contextmanager

from forecast.data import DataError
from forecast.store import StoreError
from models.checkpoint import CheckpointError
from workflows.config import ConfigError
from workflows.lock import LockHeld

KNOWN_ERRORS = (ConfigError, DataError, CheckpointError, StoreError, LockHeld, ValueError, FileNotFoundError,
                PermissionError, OSError)


def exit_code(error: BaseException) -> int:
    """2 bad input or configuration, 3 a store problem, 4 out of disk space or quota, 5 other system errors,
    6 another ``forecast nightly`` holds the lock (7, a signal, is handled by ``workflows.interrupt``)."""
    if isinstance(error, LockHeld):
        return 6
    if isinstance(error, StoreError):
        return 3
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return 4
    if isinstance(error, (PermissionError,)) or (isinstance(error, OSError) and not isinstance(error, FileNotFoundError)):
        return 5
    return 2


@contextmanager
def naming(path):
    """Give an ``OSError`` raised in the block without a file name (a ``write`` that hit a full disk) the
    name ``path``, so the one-line message says where it happened."""
    try:
        yield
    except OSError as error:
        if error.filename or not error.errno:
            raise
        raise type(error)(error.errno, error.strerror, str(path)) from error


def describe(error: BaseException) -> str:
    """One line for ``error``; a full disk, a quota or a read-only file system says so and names the file.

    >>> describe(OSError(errno.ENOSPC, "No space left on device", "/data/run.zarr/z500/c/0/0/0"))
    'no space left on device writing /data/run.zarr/z500/c/0/0/0; free space and rerun to resume'
    """
    if isinstance(error, OSError) and error.filename and error.errno in _DISK_ERRORS:
        advice = "; free space and rerun to resume" if error.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        return f"{_DISK_ERRORS[error.errno]} writing {error.filename}{advice}"
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and error.errno and text.startswith(f"[Errno {error.errno}] "):
        text = text.removeprefix(f"[Errno {error.errno}] ")
    return text


_DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system"}

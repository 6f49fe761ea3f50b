"""Errors the command line turns into one line on stderr and a non-zero exit code."""

from __future__ import annotations

import errno

from forecast.data import DataError
from forecast.store import StoreError
from models.checkpoint import CheckpointError
from workflows.config import ConfigError

KNOWN_ERRORS = (ConfigError, DataError, CheckpointError, StoreError, ValueError, FileNotFoundError, PermissionError, OSError)


def exit_code(error: BaseException) -> int:
    """2 bad input or configuration, 3 a store problem, 4 out of disk space, 5 other system errors."""
    if isinstance(error, StoreError):
        return 3
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return 4
    if isinstance(error, (PermissionError,)) or (isinstance(error, OSError) and not isinstance(error, FileNotFoundError)):
        return 5
    return 2

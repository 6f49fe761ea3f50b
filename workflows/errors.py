"""How the command line reports errors: one line on stderr and the exit code of the error's kind.

The kinds are the project's own types (``forecast.errors``): ``InputError`` 2 (``ConfigError``, ``DataError``,
``CheckpointError``), ``StoreError`` 3, ``DiskFullError`` 4, ``SystemFailure`` 5 (``SlurmError``), ``LockHeld``
6; a signal is 7 (``workflows.interrupt``). An ``OSError`` met on a user's path is a system problem (4 for a
full disk or quota, else 5). Anything else is a bug: ``forecast: internal error: ...`` and exit 1, with the
traceback in the log (every log file attached, else a file named in the line) and on stderr with ``--debug``.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager

from forecast.errors import DISK_FULL, ForecastError, from_os_error

log = logging.getLogger("forecast")

INTERNAL_ERROR = 1


def exit_code(error: BaseException) -> int:
    """The exit code for ``error``: its kind's ``exit_code``; for a plain ``OSError`` 4 (disk full or quota)
    or 5; 1 for anything else (a bug).

    >>> from forecast.errors import InputError
    >>> exit_code(InputError("x")), exit_code(OSError(errno.ENOSPC, "full")), exit_code(ValueError("x"))
    (2, 4, 1)
    """
    if isinstance(error, ForecastError):
        return error.exit_code
    if isinstance(error, OSError):
        return 4 if error.errno in DISK_FULL else 5
    return INTERNAL_ERROR


def is_known(error: BaseException) -> bool:
    """Whether ``error`` is one the command line reports as a plain one-line error (not a bug)."""
    return isinstance(error, (ForecastError, OSError))


@contextmanager
def naming(path):
    """Turn an ``OSError`` raised in the block into the project's error (``DiskFullError`` for a full disk or
    quota, else ``SystemFailure``), named ``path`` when the OS gave no file name (a ``write`` that hit a full
    disk), so the one-line message says where it happened."""
    try:
        yield
    except ForecastError:
        raise
    except OSError as error:
        raise from_os_error(error, path) from error


def describe(error: BaseException) -> str:
    """One line for ``error``; a full disk, a quota or a read-only file system says so and names the file.

    >>> describe(OSError(errno.ENOSPC, "No space left on device", "/data/run.zarr/z500/c/0/0/0"))
    'no space left on device writing /data/run.zarr/z500/c/0/0/0; free space and rerun to resume'
    """
    if isinstance(error, OSError) and error.filename and error.errno in _DISK_ERRORS:
        advice = "; free space and rerun to resume" if error.errno in DISK_FULL else ""
        return f"{_DISK_ERRORS[error.errno]} writing {error.filename}{advice}"
    text = " ".join(str(error).split())
    if isinstance(error, OSError) and error.errno and text.startswith(f"[Errno {error.errno}] "):
        text = text.removeprefix(f"[Errno {error.errno}] ")
    return text


def report_internal_error(error: BaseException, debug: bool = False) -> str:
    """Keep the traceback of a bug (every log file attached to the root logger gets it, else a file in the
    temporary folder; stderr too with ``debug``) and return the one line for stderr."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    summary = f"{type(error).__name__}: {describe(error)}" if str(error) else type(error).__name__
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler) and h.baseFilename != os.devnull]
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "internal error: %s", (summary,),
                            (type(error), error, error.__traceback__))
    for handler in files:
        handler.handle(record)
    where = ", ".join(h.baseFilename for h in files)
    if not where:
        where = _traceback_file(text)
    if debug:
        print(text, end="", file=sys.stderr)
    return f"internal error (a bug; traceback in {where}): {summary}"


def _traceback_file(text: str) -> str:
    folder = os.path.join(tempfile.gettempdir(), f"forecast-{os.getuid()}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        path = os.path.join(folder, f"internal-error-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path
    except OSError:
        return "no file (the temporary folder is not writable; rerun with --debug)"


_DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system"}

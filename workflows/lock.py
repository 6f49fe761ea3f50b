"""An exclusive, non-blocking lock on a file, so that two cron invocations never run one cycle twice.

The lock is ``fcntl.flock`` on an open file: the kernel releases it when the holder exits for any
reason (a crash or ``kill -9`` included), so a stale lock file never blocks the next night. The file
itself stays in place and records who holds the lock (process id, host, start time, command) for the
message the next invocation prints.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from forecast.errors import LockHeld


@contextmanager
def exclusive_lock(path: str | os.PathLike, what: str = "forecast nightly"):
    """Hold an exclusive lock on ``path`` for the ``with`` block, or raise :class:`LockHeld` at once.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder, exclusive_lock(Path(folder) / "x.lock"):
    ...     try:
    ...         with exclusive_lock(Path(folder) / "x.lock"):
    ...             pass
    ...     except LockHeld as error:
    ...         print(str(error).split(" (")[0])
    forecast nightly already running
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise LockHeld(f"{what} already running ({_holder(fd)}); lock {path}") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        yield holder
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"

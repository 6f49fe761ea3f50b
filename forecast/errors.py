"""The project's error types: one base class, one class per kind, each with the exit code of the command line.

==================  ====  ==========================================================================
class               exit  raised when
==================  ====  ==========================================================================
``InputError``      2     bad input or configuration: a setting, a data file, a checkpoint, an argument
``StoreError``      3     an ensemble store that is missing, unfinished, of another schema or damaged
``DiskFullError``   4     no space left on the device or the quota is used up (names the file)
``SystemFailure``   5     another system problem: a folder that cannot be written, Slurm missing, ...
``LockHeld``        6     another ``forecast nightly`` holds the lock
==================  ====  ==========================================================================

A signal (exit 7) is ``workflows.interrupt.Interrupted``, a ``BaseException`` like ``KeyboardInterrupt`` so
that no ``except Exception`` swallows it. Anything that is not a :class:`ForecastError` reaching the command
line is a bug: ``forecast: internal error: ...`` and exit 1, with the traceback kept.

The kinds are raised where the problem is known, with a message that names the key, file or value; no
builtin exception is taken for bad input because of its type. ``InputError`` is also a ``ValueError`` and
``DiskFullError``/``SystemFailure`` are ``OSError`` s, so library callers that catch those keep working.

>>> from forecast.errors import InputError
>>> InputError("ensemble.perturbation.cycles must be at least 1, got -1").exit_code
2
"""

from __future__ import annotations

import errno


class ForecastError(Exception):
    """Base of every error the project raises on purpose; ``exit_code`` is what ``forecast`` exits with."""

    exit_code = 1


class InputError(ForecastError, ValueError):
    """Bad input or configuration (exit 2): the message names the key, file or value."""

    exit_code = 2


class SettingError(InputError):
    """A field of one of the library's settings dataclasses that cannot be used (exit 2). ``key`` names the
    field (``cycles``, ``mountains[0]``); read from a config, the key path is put in front of it
    (``ensemble.perturbation.cycles must be at least 1, got -1``) by ``workflows.config.build``.

    >>> str(SettingError("cycles", "must be at least 1, got -1"))
    'cycles must be at least 1, got -1'
    """

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key} {problem}" if key else problem)  # no key: the problem of the whole section
        self.key, self.problem = key, problem


class StoreError(ForecastError):
    """A store that does not exist, is unfinished, has another schema or fails its manifest (exit 3)."""

    exit_code = 3


class SystemFailure(ForecastError, OSError):
    """A system problem other than a full disk: permissions, a read-only file system, a missing tool (exit 5)."""

    exit_code = 5


class DiskFullError(SystemFailure):
    """No space left on the device or the disk quota exceeded (exit 4); ``filename`` names the file."""

    exit_code = 4


class LockHeld(ForecastError):
    """Another process holds the lock; the message says who and since when (exit 6)."""

    exit_code = 6


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def from_os_error(error: OSError, path=None) -> ForecastError:
    """The project's error for an ``OSError`` met on a user's path: :class:`DiskFullError` for a full disk or
    quota, else :class:`SystemFailure`; errno, message and file name (``path`` when it has none) are kept."""
    if isinstance(error, ForecastError):
        return error
    kind = DiskFullError if error.errno in DISK_FULL else SystemFailure
    filename = error.filename or (str(path) if path is not None else None)
    if error.errno:
        converted = kind(error.errno, error.strerror or str(error), filename)
    else:
        converted = kind(str(error))
    converted.__cause__ = error
    return converted

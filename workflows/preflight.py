"""Checks before a run creates or touches its store, so that bad input leaves nothing behind.

The engine refuses missing channels, a wrong grid and start dates outside the data when it is built;
these checks add what it would otherwise meet only after the store exists: initial states (and the
analyses the bred vectors are grown from) that are not floating point or hold NaN or Inf, and an output
folder that cannot be written.
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from forecast.data import DataError

log = logging.getLogger(__name__)


def check_initial_states(engine, init_indices=None) -> None:
    """Read the initial state (and breeding history) of each start date the run will use; raise a
    ``DataError`` naming the date and channels for a non-float dtype or a NaN/Inf."""
    indices = range(len(engine.init_times)) if init_indices is None else init_indices
    p = engine.perturbation
    for i in indices:
        t = engine.init_times[i]
        engine.analyses.initial_state(t, engine.channels)
        if p.method == "bred_vector" and p.last_cycle_ends == "t":
            fields = engine.analyses.fields(engine.history_times(t), engine.channels)
            bad = [c for k, c in enumerate(engine.channels) if not np.isfinite(fields[:, k]).all()]
            if bad:
                raise DataError(f"{engine.analyses.name}: analyses before {np.datetime_as_string(t, 'm')} used for "
                                f"breeding have NaN or Inf in {bad}")


def check_writable(path: str | os.PathLike) -> None:
    """Make sure the folder that will hold ``path`` exists (mode from the umask) and accepts a file; raise
    ``PermissionError`` (or the ``OSError`` met) naming the folder."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise PermissionError(error.errno, f"output folder {folder} is not writable ({reason})") from None
        raise

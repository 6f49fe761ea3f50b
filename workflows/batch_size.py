"""``ensemble.batch_size``: a number, or ``auto``, chosen once per store and recorded in it.

The batch size fixes the member windows (``ensembles.plan``), and with them the bits of every member on
a GPU: a member regenerated later must run in a batch of the same size. So ``auto`` is measured once,
by rank 0 of the run that creates the store, and recorded in the store's attributes; every later run
reads it from there, and on a GPU the other ranks of the first run wait for rank 0's store instead of
measuring (free GPU memory differs slightly between processes, and so would their choices). On a CPU
``auto`` is a constant, so no rank waits.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

from forecast.store import EnsembleStore, StoreError
from workflows.config import ConfigError

log = logging.getLogger(__name__)


def recorded_batch_size(path: str | Path) -> int | None:
    """The batch size recorded in the ensemble store at ``path``; ``None`` when there is no store yet."""
    try:
        return int(EnsembleStore.open(path).schema.attrs["batch_size"])
    except StoreError:
        return None


def resolve_batch_size(setting, store_path: str | Path, measure: Callable[[], int], device: str, rank: int = 0,
                       wait_seconds: float = 900.0, poll_seconds: float = 2.0) -> int:
    """The batch size to run with: ``setting`` when it is a number; for ``"auto"`` the store's recorded
    one, else ``measure()`` (rank 0, or any rank on a CPU), else (other ranks on a GPU) the size rank 0
    records once its store appears, waiting up to ``wait_seconds``."""
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ConfigError(f"ensemble.batch_size must be a positive integer or 'auto', got {setting!r}")
        return setting
    recorded = recorded_batch_size(store_path)
    if recorded is not None:
        log.info("batch_size auto: %d, recorded in %s", recorded, store_path)
        return recorded
    if rank == 0 or not device.startswith("cuda"):
        chosen = measure()
        log.info("batch_size auto: %d measured on %s", chosen, device)
        return chosen
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        time.sleep(poll_seconds)
        recorded = recorded_batch_size(store_path)
        if recorded is not None:
            log.info("rank %d: batch_size auto: %d, chosen by rank 0 and read from %s", rank, recorded, store_path)
            return recorded
    raise StoreError(f"rank {rank}: store {store_path} did not appear within {wait_seconds:.0f} s; with "
                     "ensemble.batch_size auto on GPUs rank 0 chooses it and the other ranks read it from the store")

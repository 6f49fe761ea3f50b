"""Every check before a run creates its store, so that bad input leaves nothing behind.

Settings are checked when the config is read (``workflows.config.validate``); the engine refuses missing
channels, a wrong grid and start dates outside the data when it is built. :func:`check_run` adds what the
run would otherwise meet only after the store exists:

- the device (a GPU that is not there);
- every checkpoint: its card parses, its weights are a readable safetensors file that matches the card's
  checksum and architecture (each is loaded once on the CPU and dropped);
- the initial states and the analyses the bred vectors are grown from: floating point, readable (a
  truncated chunk), finite, and within physical bounds: within ``SIGMAS`` standard deviations of the
  checkpoint's mean (its normalisation statistics) and non-negative where the quantity must be;
- the output location: a path the file system accepts, and a folder that can be written. Folders made
  for the check are removed again when it fails;
- the space (:func:`check_space`): a store that cannot fit in the free space of its file system, by the dry
  run's own estimate, is refused before anything is built (a typo such as ``lead_hours=999999996`` used to
  take the machine's memory before any write).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from forecast.data import DataError
from forecast.errors import DiskFullError, InputError, SystemFailure

log = logging.getLogger(__name__)

SIGMAS = 20.0  # an analysis value this many standard deviations from the mean is not weather but damage
STORE_DEPTH = 64  # characters a store adds below its own path (channel/c/0/0/0/0/0, manifest files)
# the dry run's size counts BitRound's kept bits before zstd; zstd has done better (49% on the demo), so a run
# is refused only when even this fraction of the estimate exceeds the free space (and warned below the estimate)
LEAST_FRACTION = 0.25


def check_run(config, engine, path: str | os.PathLike, init_indices=None, experiment: str | None = None) -> None:
    """All checks of a run of ``engine`` (built from ``config`` and ``experiment``) into the store ``path``
    for the start dates ``init_indices`` (default all); raises the project's error naming the device,
    checkpoint, space, date and channel, or path. The cheap space check comes before the data is read."""
    check_device(engine.device)
    check_checkpoints(engine.checkpoints)
    check_space(config, engine, path, experiment)
    check_initial_states(engine, init_indices)
    check_writable(path)


def check_device(device: str) -> None:
    """``device`` exists here: the CPU, or a visible GPU index."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise InputError(f"ensemble.device: {device!r} is not a device") from None
    if parsed.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0 or (parsed.index or 0) >= count:
            raise InputError(f"ensemble.device: {device} was asked for but {count} GPU(s) are visible")
    elif parsed.type != "cpu":
        raise InputError(f"ensemble.device: {device!r} is neither the CPU nor a GPU")


def check_checkpoints(directories) -> None:
    """Load every checkpoint once on the CPU (card, checksum, safetensors format, architecture)."""
    from models.checkpoint import load_checkpoint

    for directory in directories:
        load_checkpoint(directory, "cpu")


def check_initial_states(engine, init_indices=None) -> None:
    """Read the initial state (and breeding history) of each start date the run will use; raise a
    ``DataError`` naming the date and channels for a non-float dtype, an unreadable chunk, a NaN/Inf or a
    value outside the physical bounds of :func:`physical_bounds`."""
    indices = range(len(engine.init_times)) if init_indices is None else init_indices
    p = engine.perturbation
    low, high = physical_bounds(engine.cards[0])
    for i in indices:
        t = engine.init_times[i]
        when = np.datetime_as_string(np.datetime64(t, "m"))
        _check_values(_read(engine, [t], when), low, high, engine, f"initial state at {when}")
        if p.method == "bred_vector" and p.last_cycle_ends == "t":
            fields = _read(engine, engine.history_times(t), when)
            _check_values(fields, low, high, engine, f"analyses before {when} used for breeding")


def physical_bounds(card) -> tuple[np.ndarray, np.ndarray]:
    """Per channel ``(low, high)``: the card's mean -/+ ``SIGMAS`` standard deviations, with ``low`` raised to
    0 for quantities that cannot be negative (``forecast.channels.NON_NEGATIVE``: water vapour, pressure,
    temperature, humidity)."""
    from forecast.channels import NON_NEGATIVE

    mean, std = np.asarray(card.mean), np.asarray(card.std)
    low, high = mean - SIGMAS * std, mean + SIGMAS * std
    floor = np.array([0.0 if c in NON_NEGATIVE else -np.inf for c in card.channels])
    return np.maximum(low, floor), high


def _read(engine, times, when: str) -> np.ndarray:
    """The analyses at ``times``; a chunk that cannot be decoded (truncated, damaged) is a ``DataError``."""
    try:
        return engine.analyses.fields(times, engine.channels)
    except DataError:
        raise
    except (OSError, RuntimeError, ValueError) as error:  # what zarr and its codecs raise for a damaged chunk
        raise DataError(f"{engine.analyses.name}: the analyses at {when} cannot be read (a damaged or truncated "
                        f"chunk?): {type(error).__name__}: {' '.join(str(error).split())[:200]}") from None


def _check_values(fields: np.ndarray, low: np.ndarray, high: np.ndarray, engine, what: str) -> None:
    bad = [c for k, c in enumerate(engine.channels) if not np.isfinite(fields[:, k]).all()]
    if bad:
        raise DataError(f"{engine.analyses.name}: {what} has NaN or Inf in {bad}")
    for k, channel in enumerate(engine.channels):
        values = fields[:, k]
        outside = (values < low[k]) | (values > high[k])
        if outside.any():
            raise DataError(f"{engine.analyses.name}: {what}: {channel} has {int(outside.sum())} value(s) outside its "
                            f"physical range [{low[k]:.4g}, {high[k]:.4g}] (from {values.min():.4g} to {values.max():.4g}): "
                            "damaged input?")


def check_writable(path: str | os.PathLike) -> None:
    """Make sure ``path`` is a name the file system accepts and the folder that will hold it exists
    (mode from the umask) and accepts a file; raise ``InputError`` for a path too long, else ``SystemFailure`` naming
    the folder. Folders created here are removed again when the check fails."""
    path = Path(os.path.abspath(path))
    check_path_length(path)
    folder = path.parent
    made = [p for p in (folder, *folder.parents) if not os.path.exists(p)]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        for p in made:  # deepest first
            try:
                p.rmdir()
            except OSError:
                break
        reason = os.strerror(error.errno) if error.errno else str(error)
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            from forecast.errors import from_os_error

            raise from_os_error(error, folder) from None
        if error.errno == errno.ENAMETOOLONG:
            raise InputError(f"output path {_short(path)} is too long for the file system ({reason})") from None
        raise SystemFailure(error.errno, f"output folder {folder} is not writable ({reason})") from None


def check_path_length(path: str | os.PathLike) -> None:
    """Refuse (``InputError``) a path with a name longer than the file system allows, or one so long that the
    store's own files below it would pass the longest path the file system allows."""
    path = Path(os.path.abspath(path))
    existing = next(p for p in (path, *path.parents) if os.path.exists(p))  # os.path: never raises
    name_max = os.pathconf(existing, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    path_max = os.pathconf(existing, "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
    long_names = [part for part in path.parts if len(os.fsencode(part)) > name_max]
    if long_names:
        raise InputError(f"output path {_short(path)}: the name {_short(Path(long_names[0]))} is longer than the "
                         f"{name_max} bytes the file system allows")
    if len(os.fsencode(str(path))) + STORE_DEPTH >= path_max:
        raise InputError(f"output path {_short(path)} is too long ({len(os.fsencode(str(path)))} bytes): with the "
                         f"store's own files it would pass the {path_max} bytes the file system allows")


def _short(path: Path, keep: int = 60) -> str:
    text = str(path)
    return text if len(text) <= 2 * keep else f"{text[:keep]}...{text[-keep:]}"


def check_space(config, engine, path: str | os.PathLike, experiment: str | None = None) -> None:
    """Refuse (``DiskFullError``, exit 4) a store that cannot fit in the free space of the file system that will
    hold it: the dry run's estimate (:func:`workflows.dryrun.run_size`, this run's batch size) for every start
    date, plus the streaming-statistics parts, which stay until the last block of a start date is done.
    Refused when :data:`LEAST_FRACTION` of it exceeds the free space; a warning when the whole of it does."""
    from workflows.dryrun import decimal_bytes, run_size

    size = run_size(config, experiment)
    size = replace(size, batch_size=engine.batch_size, blocks=engine.plan.n_blocks(engine.batch_size))
    dates = max(1, len(engine.init_times))
    store = dates * size.start_date_bytes(statistics_only=True, compressed=True)
    parts = dates * size.blocks * size.accumulator_bytes
    left = _unfinished_fraction(path)  # a resumed store already holds its finished members
    need = left * (store + parts)
    folder = next(p for p in Path(os.path.abspath(path)).parents if p.is_dir())
    free = shutil.disk_usage(folder).free
    what = (f"{path} would need about {decimal_bytes(need)} ({dates} start date(s) of {decimal_bytes(store / dates)}"
            + (f", plus {decimal_bytes(parts)} of statistics parts while it runs" if parts else "")
            + (f", {left:.0%} of it unfinished" if left < 1 else "")
            + f"; the dry run's estimate) and {folder} has {decimal_bytes(free)} free")
    if LEAST_FRACTION * need > free:
        raise DiskFullError(errno.ENOSPC, f"{what}: it cannot fit. Free space or make the run smaller "
                                          "(forecast run --dry-run shows the sizes)")
    if need > free:
        log.warning("run: %s; it fits only if it compresses better than the estimate", what)


def _unfinished_fraction(path) -> float:
    """The fraction of the members of the store at ``path`` not finished yet (1 for a store not made yet or one
    that cannot be read: the other checks and the store itself say why)."""
    from forecast.errors import StoreError
    from forecast.store import EnsembleStore

    if not (Path(path) / "zarr.json").is_file():
        return 1.0
    try:
        done = np.asarray(EnsembleStore.open(path).done[:])
    except StoreError:
        return 1.0
    return float((done != 1).mean()) if done.size else 1.0

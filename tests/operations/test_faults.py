"""Fault injection: ``forecast run`` killed at random points, stopped by signals, and out of disk space,
then resumed; the resumed store must equal an uninterrupted one value for value."""

import os
import random
import signal
import time

import numpy as np
import pytest
import xarray as xr

from forecast.store import EnsembleStore
from tests.operations.system import remount, tmpfs
from workflows.config import bundled_config

TINY = str(bundled_config("tiny"))
SEED = int(os.environ.get("FORECAST_FAULT_SEED", "20261126"))  # the kill points; printed on failure
TRIALS = 5


def run_args(world, store, *extra):
    return ("-q", "run", TINY, "--workdir", world.paths.workdir, f"paths.store={store}", *extra)


def values(path):
    ds = xr.open_zarr(path, consolidated=False)
    return {name: ds[name].values for name in ds.data_vars}


def assert_identical(path, reference):
    got, want = values(path), values(reference)
    assert got.keys() == want.keys()
    for name in want:
        assert np.array_equal(got[name], want[name]), name  # bit for bit (no NaN: every member is written)
    assert EnsembleStore.open(path).verify() == []


@pytest.fixture(scope="module")
def reference(tiny_world, forecast_processes, tmp_path_factory):
    """An uninterrupted run, and how long it took as a process (the span the kill points are drawn from)."""
    path = tmp_path_factory.mktemp("reference") / "ensemble.zarr"
    result = forecast_processes.run(*run_args(tiny_world, path))
    assert result.returncode == 0, result.stderr
    return path, result.seconds


def members_done(path) -> int:
    return int(EnsembleStore.open(path).done[:].sum()) if (path / "zarr.json").exists() else 0  # created by rename


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_store(tiny_world, forecast_processes, reference,
                                                                           tmp_path):
    """Kill points are placed by progress, not by the clock (a loaded CI machine stretches start-up): trial 0
    at a random time within half the reference run's length (mostly start-up), trial ``t`` once ``t/TRIALS``
    of the members are done plus a random delay of up to one member's share of the reference run."""
    reference_path, seconds = reference
    rng = random.Random(SEED)
    size = EnsembleStore.open(reference_path).done.size
    report, partial = [], 0
    for trial in range(TRIALS):
        target = trial * size // TRIALS
        delay = rng.random() * (seconds / 2 if target == 0 else seconds / size)
        path = tmp_path / f"trial-{trial}.zarr"
        running = forecast_processes.start(*run_args(tiny_world, path))
        while members_done(path) < target and running.running():
            time.sleep(0.01)
        time.sleep(delay)
        running.kill(signal.SIGKILL)
        killed, done = running.wait(), members_done(path)
        partial += killed.returncode == -signal.SIGKILL and 0 < done < size
        report.append(f"trial {trial}: SIGKILL {delay:.2f} s after {target}/{size} members were done, "
                      f"exit {killed.returncode}, {done}/{size} members done")
        resumed = forecast_processes.run(*run_args(tiny_world, path))
        assert resumed.returncode == 0, f"seed {SEED}, {report[-1]}: {resumed.stderr}"
        assert_identical(path, reference_path)
    print("\n".join(report))
    assert partial, f"seed {SEED}: no kill landed while the store was partly written:\n" + "\n".join(report)


def test_sigterm_stops_cleanly_with_exit_code_7_and_the_rerun_resumes(tiny_world, forecast_processes, reference,
                                                                       tmp_path):
    """SIGTERM (scancel, pre-emption) here; SIGUSR1 with its requeue runs under Slurm in tests/operations/test_slurm.py."""
    reference_path, _ = reference
    signum = signal.SIGTERM
    path = tmp_path / "signalled.zarr"
    running = forecast_processes.start(*run_args(tiny_world, path))
    deadline = time.monotonic() + 120
    while not ((path / "zarr.json").exists() and EnsembleStore.open(path).done[:].any()):  # some work is done
        assert running.running() and time.monotonic() < deadline, running.wait().stderr
        time.sleep(0.05)
    running.kill(signum)
    stopped = running.wait()
    name = signal.Signals(signum).name
    assert stopped.returncode == 7, stopped.stderr
    assert stopped.error_lines == [f"forecast: interrupted by {name}: finished work is saved; rerun the same command to "
                                   "resume"], stopped.stderr
    store = EnsembleStore.open(path)
    assert store.done[:].any() and not [p for p in store.problems() if p.damaged]
    assert forecast_processes.run(*run_args(tiny_world, path)).returncode == 0
    assert_identical(path, reference_path)


@pytest.mark.system
def test_disk_full_fails_cleanly_and_resumes_once_there_is_space(tiny_world, forecast_processes, reference, tmp_path):
    """A real full file system: a 400 KiB tmpfs holds the store's metadata but not all of its values."""
    reference_path, _ = reference
    with tmpfs(tmp_path / "disk", "400k") as disk:
        path = disk / "ensemble.zarr"
        full = forecast_processes.run(*run_args(tiny_world, path))
        assert full.returncode == 4, full.stderr
        # the pre-flight estimate (470 kB) is above the free space (about 410 kB) but a quarter of it is not: a
        # warning, then the run, which fills the disk part way through
        warning, error = full.error_lines
        assert warning.endswith("it fits only if it compresses better than the estimate") and f"{disk} has " in warning
        assert error == f"forecast: error: no space left on device writing {path}; free space and rerun to resume"
        store = EnsembleStore.open(path)  # created before the disk filled up
        done = store.done[:]
        assert 0 < done.sum() < done.size  # it filled up part way through the values
        assert not [p for p in store.problems() if p.damaged]  # what is marked done is intact
        remount(disk, "16m")
        assert forecast_processes.run(*run_args(tiny_world, path)).returncode == 0
        assert_identical(path, reference_path)

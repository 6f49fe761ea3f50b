"""Fault injection for scoring: ``forecast score`` (alone and as the nightly's scoring step) SIGKILLed after
it wrote ``scores.nc`` and before its marker ``complete.json``; the output is not taken as scored, and the
rerun writes the whole output, equal to an uninterrupted scoring's."""

import json
import signal
import time
from pathlib import Path

import pytest
import xarray as xr

from workflows.completeness import SCORED, is_scored
from workflows.config import bundled_config

TINY = str(bundled_config("tiny"))
CYCLE = "2000-01-30T00"  # the newest 00 UTC analysis of the tiny planet (as in test_nightly)
ATTEMPTS = 3  # a kill can miss the window between scores.nc and the marker: the scoring had finished


def score_args(world, store, out):
    return ("-q", "score", store, "--truth", world.paths.resolve("nature"), "--out", out, "--workers", "1")


def nightly_args(world, root):
    return ("-q", "nightly", TINY, "--workdir", world.paths.workdir, f"nightly.root={root}", "score.workers=1")


@pytest.fixture(scope="module")
def uninterrupted(tiny_world, forecast_processes, tmp_path_factory):
    """The nightly cycle's store and an uninterrupted scoring of it."""
    folder = tmp_path_factory.mktemp("scoring")
    store = folder / "ensemble.zarr"
    ran = forecast_processes.run("-q", "run", TINY, "--workdir", tiny_world.paths.workdir, f"paths.store={store}",
                                 f"ensemble.init_times.start={CYCLE}", f"ensemble.init_times.stop={CYCLE}")
    assert ran.returncode == 0, ran.stderr
    scored = forecast_processes.run(*score_args(tiny_world, store, folder / "scores"))
    assert scored.returncode == 0, scored.stderr
    return store, folder / "scores"


def killed_once_scores_nc_exists(forecast_processes, args, out: Path):
    """Start ``forecast ARGS``, SIGKILL it as soon as ``out/scores.nc`` exists (by progress, not by the clock);
    returns whether the kill landed before the marker (else the process had finished: try again)."""
    running = forecast_processes.start(*args)
    while running.running() and not (out / "scores.nc").exists():
        time.sleep(0.002)
    running.kill(signal.SIGKILL)
    killed = running.wait()
    return killed.returncode == -signal.SIGKILL and not (out / SCORED).exists()


def assert_same_output(out: Path, reference: Path):
    """The marker lists the same files; scores.nc, the report and the plots are equal to the reference's."""
    files = json.loads((out / SCORED).read_text())["files"]
    assert files == json.loads((reference / SCORED).read_text())["files"] and "report.md" in files
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([*files, SCORED])
    xr.testing.assert_identical(xr.load_dataset(out / "scores.nc"), xr.load_dataset(reference / "scores.nc"))
    for name in files:
        if name.endswith((".md", ".png")):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_scoring_killed_after_scores_nc_is_not_scored_and_the_rerun_completes_it(tiny_world, forecast_processes,
                                                                                 uninterrupted, tmp_path):
    store, reference = uninterrupted
    for attempt in range(ATTEMPTS):
        out = tmp_path / f"scores-{attempt}"
        if killed_once_scores_nc_exists(forecast_processes, score_args(tiny_world, store, out), out):
            break
    else:
        pytest.fail(f"{ATTEMPTS} kills all landed after the marker")
    assert (out / "scores.nc").is_file() and not is_scored(out)
    rerun = forecast_processes.run(*score_args(tiny_world, store, out))
    assert rerun.returncode == 0, rerun.stderr
    assert is_scored(out)
    assert_same_output(out, reference)


def test_a_nightly_killed_while_scoring_scores_again_on_the_next_run(tiny_world, forecast_processes, tmp_path):
    for attempt in range(ATTEMPTS):
        root = tmp_path / f"nightly-{attempt}"
        out = root / "cycles" / CYCLE / "scores"
        if killed_once_scores_nc_exists(forecast_processes, nightly_args(tiny_world, root), out):
            break
    else:
        pytest.fail(f"{ATTEMPTS} kills all landed after the marker")
    assert not is_scored(out)
    rerun = forecast_processes.run(*nightly_args(tiny_world, root))
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.startswith(f"nightly: cycle {CYCLE}: ran nothing, scored ['{CYCLE}']"), rerun.stdout
    reference = tmp_path / "uninterrupted"  # the same store scored without a kill (the report names the store)
    scored = forecast_processes.run(*score_args(tiny_world, out.parent / "ensemble.zarr", reference))
    assert scored.returncode == 0, scored.stderr
    assert_same_output(out, reference)

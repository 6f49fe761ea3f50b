"""``forecast nightly`` as cron runs it: one at a time, resuming, scoring, retention, status, and a rerun
that does nothing."""

import json
import os
import time
from pathlib import Path

import pytest

from forecast.store import EnsembleStore
from workflows.config import bundled_config

TINY = str(bundled_config("tiny"))
CYCLE = "2000-01-30T00"  # the newest 00 UTC analysis of the tiny planet


def nightly(world, root, *extra):
    return ("-q", "nightly", TINY, "--workdir", world.paths.workdir, f"nightly.root={root}", "nightly.keep_cycles=1",
            "score.workers=1", *extra)


def status(root: Path) -> dict:
    return json.loads((root / "status.json").read_text())


def test_two_at_once_one_runs_the_other_exits_already_running_and_a_rerun_does_nothing(tiny_world, forecast_processes,
                                                                                      tmp_path):
    root = tmp_path / "nightly"
    store = root / "cycles" / CYCLE / "ensemble.zarr"
    # yesterday's run died part way through this cycle: three members are done
    partial = forecast_processes.run("-q", "run", TINY, "--workdir", tiny_world.paths.workdir, f"paths.store={store}",
                                     f"ensemble.init_times.start={CYCLE}", f"ensemble.init_times.stop={CYCLE}",
                                     "--members", "0:3")
    assert partial.returncode == 0, partial.stderr
    old = root / "cycles" / "2000-01-20T00"  # an old cycle beyond the retention limit
    (old / "ensemble.zarr").mkdir(parents=True)
    (old / "scores").mkdir()
    (old / "scores" / "scores.nc").write_bytes(b"kept")

    first = forecast_processes.start(*nightly(tiny_world, root))
    deadline = time.monotonic() + 60
    while not ((root / "status.json").exists() and status(root)["state"] == "running"):  # it holds the lock now
        assert first.running() and time.monotonic() < deadline, first.wait().stderr
        time.sleep(0.05)
    second = forecast_processes.run(*nightly(tiny_world, root))
    assert first.running(), "the first nightly ended before the second was tried"
    assert second.returncode == 6, second.stderr
    assert second.error_lines == [f"forecast: error: forecast nightly already running (pid {first.pid} on "
                                  f"{status(root)['host']} since {second.error_lines[0].split(' since ')[1]}"], second.stderr
    assert second.error_lines[0].endswith(f"lock {root / 'nightly.lock'}")
    assert second.seconds < 10

    done = first.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"nightly: cycle {CYCLE}: ran ['{CYCLE}'], scored ['{CYCLE}']")
    record = status(root)
    assert record["state"] == "complete" and record["cycle"] == CYCLE and record["removed"] == ["2000-01-20T00"]
    assert set(record["timings"]) == {"find_cycle", "run", "score", "retention", "total"}
    assert Path(record["scores"]).is_file() and Path(record["scores"]) == store.parent / "scores" / "scores.nc"
    assert "resuming the partial store" in Path(record["log"]).read_text()
    assert EnsembleStore.open(store).verify() == []
    assert not (old / "ensemble.zarr").exists() and (old / "scores" / "scores.nc").read_bytes() == b"kept"
    assert os.stat(root / "status.json").st_mode & 0o007 == 0 and os.stat(store).st_mode & 0o007 == 0

    files = {p: p.stat().st_mtime_ns for p in store.parent.rglob("*") if p.is_file()}
    again = forecast_processes.run(*nightly(tiny_world, root))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"nightly: cycle {CYCLE} is already complete and scored; nothing to do")
    assert status(root)["state"] == "nothing-to-do"
    assert {p: p.stat().st_mtime_ns for p in store.parent.rglob("*") if p.is_file()} == files

    # a scoring killed after scores.nc but before the report and its marker: the next night scores again
    scores = store.parent / "scores"
    (scores / "complete.json").unlink()
    (scores / "report.md").unlink()
    redo = forecast_processes.run(*nightly(tiny_world, root))
    assert redo.returncode == 0, redo.stderr
    assert redo.stdout.startswith(f"nightly: cycle {CYCLE}: ran nothing, scored ['{CYCLE}']")
    assert (scores / "report.md").is_file() and json.loads((scores / "complete.json").read_text())["files"]


def test_a_failed_nightly_says_why_in_one_line_and_in_its_status(tiny_world, forecast_processes, tmp_path):
    root = tmp_path / "nightly"
    result = forecast_processes.run(*nightly(tiny_world, root, "nightly.cycle_hours=[3]"))
    assert result.returncode == 2
    assert len(result.error_lines) == 1 and "no time at the cycle hours [3] UTC" in result.error_lines[0]
    record = status(root)
    assert record["state"] == "failed" and "no time at the cycle hours [3]" in record["error"]


@pytest.mark.parametrize("setting, message", [("nightly.mode=cron", "nightly.mode must be one of"),
                                              ("nightly.keep_cycles=0", "nightly.keep_cycles must be at least 1"),
                                              ("nightly.slurm.ensemble=['--wrap=rm -rf /']", "--wrap is refused")])
def test_bad_nightly_settings_are_refused_before_anything_runs(tiny_world, forecast_processes, tmp_path, setting, message):
    args = nightly(tiny_world, tmp_path / "nightly", setting) + (("nightly.mode=slurm",) if "slurm" in setting else ())
    result = forecast_processes.run(*args)
    assert result.returncode == 2 and len(result.error_lines) == 1 and message in result.error_lines[0], result.stderr
    assert not (tmp_path / "nightly").exists()


def test_the_config_s_score_settings_reach_the_nightly_scoring(tiny_world, tmp_path, monkeypatch):
    """``score:`` keys beyond workers (regions, chunk size, worker memory, allow_partial) reach ``score_store``
    in nightly scoring, and the extra region is in the cycle's scores."""
    import xarray as xr

    from forecast.verify import Region
    from workflows import recipes
    from workflows.config import load_config, with_workdir
    from workflows.nightly import run_nightly

    root = tmp_path / "nightly"
    overrides = [f"nightly.root={root}", "nightly.keep_cycles=1", "score.workers=1", "score.chunk_mb=0.5",
                 "score.worker_memory=3GiB", "score.regions=[europe:35:70:-10:30]", "score.allow_partial=true"]
    config = with_workdir(load_config(TINY, overrides), tiny_world.paths.workdir)
    calls, real = [], recipes.score_store

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(recipes, "score_store", recording)
    run_nightly(config, TINY, overrides)
    assert calls == [{"workers": 1, "scheduler": "", "worker_memory": "3GiB", "chunk_mb": 0.5, "allow_partial": True,
                      "regions": [Region.box("europe", 35, 70, -10, 30)], "slurm": None}]
    scores = xr.open_dataset(root / "cycles" / CYCLE / "scores" / "scores.nc")
    assert "europe" in scores["region"].values.tolist()

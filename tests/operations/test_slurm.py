"""The sbatch scripts in ``slurm/`` on a real one-node Slurm started for this module (``tests/operations/local_slurm.py``):
the nightly chain (a 2-task ensemble job, a requeue after SIGUSR1, the dependent scoring job), an array
over start dates, and DDP training with 2 tasks.

Also ``forecast score --slurm``: Dask workers as Slurm jobs (dask-jobqueue), sized to 2 cores, write the
same ``scores.nc`` as a local cluster, and a worker job cancelled mid-way is replaced.

Needs root and ``slurm-wlm`` + ``munge`` (``.ci/run`` installs them); without them these tests skip with
the reason, and fail where ``FORECAST_REQUIRE_SYSTEM_TESTS=1`` (``.ci/run``).
"""

import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from forecast.store import EnsembleStore
from tests.operations.local_slurm import LocalSlurm, SlurmUnavailable, unavailable_reason
from tests.operations.system import required, unavailable
from workflows.config import bundled_config, load_config

REPOSITORY = Path(__file__).resolve().parents[2]
TINY = str(bundled_config("tiny"))
CYCLE = "2000-01-30T00"
MEMBERS = 40  # per checkpoint: 81 members, long enough to signal the job while it runs

# decided when collected, so a machine without Slurm skips these without building the tiny world first;
# where the system tests are required (CI) the `slurm` fixture fails instead
REASON = unavailable_reason()
pytestmark = [pytest.mark.system, pytest.mark.skipif(REASON is not None and not required(),
                                                     reason=f"no local Slurm: {REASON} (system test; "
                                                            "FORECAST_REQUIRE_SYSTEM_TESTS=1 makes this a failure)")]


@pytest.fixture(scope="module")
def slurm():
    try:
        cluster = LocalSlurm().start()
    except SlurmUnavailable as error:
        unavailable(f"no local Slurm: {error}")
    # jobs use this checkout and the Python environment running the tests
    cluster.env.update(FORECAST_HOME=str(REPOSITORY), FORECAST_VENV=sys.prefix)
    yield cluster
    cluster.stop()


def job_env(slurm):
    return {key: slurm.env[key] for key in ("SLURM_CONF", "FORECAST_HOME", "FORECAST_VENV")}


def test_nightly_chain_with_two_tasks_a_requeue_and_the_dependent_scoring_job(tiny_world, slurm, forecast_processes,
                                                                              tmp_path):
    root = tmp_path / "nightly"
    args = ("-q", "nightly", TINY, "--workdir", tiny_world.paths.workdir, f"nightly.root={root}", "nightly.mode=slurm",
            "nightly.slurm.ensemble=[--ntasks-per-node=2, --cpus-per-task=1, --time=15]",
            "nightly.slurm.score=[--cpus-per-task=2, --time=15]", f"ensemble.members_per_checkpoint={MEMBERS}")
    submitted = forecast_processes.run(*args, env=job_env(slurm))
    assert submitted.returncode == 0, submitted.stderr
    assert "submitted or still queued" in submitted.stdout
    folder = root / "cycles" / CYCLE
    jobs = json.loads((folder / "jobs.json").read_text())
    assert set(jobs) == {"ensemble", "score"}
    assert slurm.job(jobs["score"])["Dependency"].startswith(f"afterok:{jobs['ensemble']}")

    store = folder / "ensemble.zarr"
    deadline = time.monotonic() + 180
    while not ((store / "zarr.json").exists() and EnsembleStore.open(store).done[:].any()):
        assert time.monotonic() < deadline, slurm.job(jobs["ensemble"])
        time.sleep(0.1)
    slurm.run("scancel", "--signal=USR1", jobs["ensemble"])  # as --signal=USR1@180 does before the time limit
    while (record := slurm.job(jobs["ensemble"]))["Restarts"] == "0" or record["JobState"] != "PENDING":
        assert record["JobState"] != "COMPLETED", "the signal came after the job had finished"
        assert time.monotonic() < deadline, record
        time.sleep(0.2)
    # Slurm starts it again after its requeue back-off (the local Slurm's cred_expire, 10 s). Not StartTime=now:
    # a start within the back-off is refused by slurmd ("Job credential revoked") and the job ends FAILED

    ensemble = slurm.wait(jobs["ensemble"])
    score = slurm.wait(jobs["score"])
    log = next(folder.glob(f"ensemble-{jobs['ensemble']}.out")).read_text()
    assert ensemble["JobState"] == "COMPLETED" and ensemble["Restarts"] == "1", log[-3000:]
    assert "forecast: interrupted by SIGUSR1: finished work is saved; Slurm job" in log and "requeued" in log
    last = log.split("CANCELLED AT")[-1]  # the attempt after the requeue
    skipped = [int(n) for n in re.findall(r"rank \d/2, members 0:\d+ into .*'blocks_skipped': (\d+)", last)]
    assert len(skipped) == 2 and sum(skipped) > 0, log[-3000:]  # both ranks ran; they resumed, not restarted
    assert score["JobState"] == "COMPLETED", next(folder.glob("score-*.out")).read_text()[-3000:]
    assert (folder / "scores" / "scores.nc").is_file() and EnsembleStore.open(store).verify() == []

    # members are bit-identical whoever computes them: compare a few with a run in this process
    from workflows.recipes import build_engine
    from workflows.nightly import cycle_config

    config = cycle_config(replace(tiny_world, ensemble=replace(tiny_world.ensemble, members_per_checkpoint=MEMBERS)),
                          np.datetime64(CYCLE), tmp_path / "check")
    engine = build_engine(config)
    for start, stop in ((0, 5), (77, 81)):
        engine.run(engine.create_store(tmp_path / "check.zarr"), start, stop)
    a, b = xr.open_zarr(store, consolidated=False), xr.open_zarr(tmp_path / "check.zarr", consolidated=False)
    for name in a.data_vars:
        for start, stop in ((0, 5), (77, 81)):
            assert np.array_equal(a[name][start:stop].values, b[name][start:stop].values), name

    again = forecast_processes.run(*args, env=job_env(slurm))
    assert again.returncode == 0 and "is already complete and scored; nothing to do" in again.stdout, again.stderr


def test_array_over_start_dates(tiny_world, slurm, tmp_path):
    store = tmp_path / "ensemble.zarr"
    job = slurm.sbatch("--array=0-1", "--ntasks-per-node=1", "--cpus-per-task=1", "--time=15",
                       f"--output={tmp_path}/array-%a.out", REPOSITORY / "slurm" / "ensemble.sbatch", TINY,
                       "--workdir", tiny_world.paths.workdir, f"paths.store={store}", cwd=REPOSITORY)
    record = slurm.wait(job)
    logs = [(tmp_path / f"array-{k}.out").read_text() for k in (0, 1)]
    assert record["JobState"] == "COMPLETED", logs
    for k, date in enumerate(("2000-01-22T00", "2000-01-24T00")):  # each task ran its own start date only
        assert f"init {date} members" in logs[k] and f"init {date}" not in logs[1 - k]
    opened = EnsembleStore.open(store)
    assert opened.done[:].all() and opened.verify() == []


def test_ddp_training_with_two_tasks_matches_one_process(tiny_world, slurm, tmp_path):
    import torch
    from safetensors.torch import load_file

    from workflows.recipes import train_checkpoints

    overrides = ["train.checkpoints=1", "train.steps=10"]
    job = slurm.sbatch("--ntasks-per-node=2", "--cpus-per-task=1", "--time=15", f"--output={tmp_path}/train.out",
                       REPOSITORY / "slurm" / "train.sbatch", TINY, "--workdir", tiny_world.paths.workdir,
                       f"paths.checkpoints={tmp_path / 'ddp'}", *overrides, cwd=REPOSITORY)
    record = slurm.wait(job)
    log = (tmp_path / "train.out").read_text()
    assert record["JobState"] == "COMPLETED", log[-3000:]
    assert "rank 0 of 2 joined the process group" in log and "rank 1 of 2 joined the process group" in log
    single = load_config(TINY, [f"paths.workdir={tiny_world.paths.workdir}", f"paths.checkpoints={tmp_path / 'one'}",
                                *overrides])
    train_checkpoints(single)
    ddp = load_file(tmp_path / "ddp" / "sfno-0" / "weights.safetensors")
    one = load_file(tmp_path / "one" / "sfno-0" / "weights.safetensors")
    # DDP averages the two half-batch gradients: the same steps as one process with the whole batch
    assert ddp.keys() == one.keys()
    assert all(torch.allclose(ddp[k], one[k], rtol=1e-4, atol=1e-5) for k in one)


# -- forecast score --slurm -------------------------------------------------------------------------
SLURM_WORKERS = ("--slurm", "1", "--slurm-cores", "2", "--slurm-memory", "2GB", "--slurm-walltime", "00:15:00")


@pytest.fixture(scope="module")
def scored_locally(tiny_world, forecast_processes, tmp_path_factory):
    """A complete store and its scores from a local cluster of 2 workers."""
    folder = tmp_path_factory.mktemp("score-slurm")
    store = folder / "ensemble.zarr"
    ran = forecast_processes.run("-q", "run", TINY, "--workdir", tiny_world.paths.workdir, f"paths.store={store}",
                                 "ensemble.members_per_checkpoint=20")
    assert ran.returncode == 0, ran.stderr
    local = forecast_processes.run("-q", "score", store, "--truth", tiny_world.paths.resolve("nature"),
                                   "--out", folder / "local", "--workers", "2", "--chunk-mb", "0.2")
    assert local.returncode == 0, local.stderr
    return store, folder / "local" / "scores.nc"


def assert_same_scores(a, b):
    """Bit-identical scores: the fused score pass adds up each tile inside its own task, so neither the
    workers' placement nor PYTHONHASHSEED changes a sum (docs/verification.md, "Are scores bit-reproducible?")."""
    xr.testing.assert_identical(xr.open_dataset(a), xr.open_dataset(b))


def score_on_slurm(slurm, processes, world, store, out, wait=True):
    args = ("score", store, "--truth", world.paths.resolve("nature"), "--out", out, "--chunk-mb", "0.2", *SLURM_WORKERS)
    # the worker jobs run this Python with this checkout importable; their logs go to the output folder's parent
    started = processes.start(*args, cwd=Path(out).parent, env={**job_env(slurm), "PYTHONPATH": str(REPOSITORY)})
    return started.wait(600) if wait else started


def test_score_on_slurm_workers_writes_the_same_scores_as_a_local_cluster(tiny_world, slurm, forecast_processes,
                                                                          scored_locally, tmp_path):
    store, local = scored_locally
    result = score_on_slurm(slurm, forecast_processes, tiny_world, store, tmp_path / "slurm")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 Slurm job(s) of 2 worker(s) requested" in result.stderr
    assert_same_scores(local, tmp_path / "slurm" / "scores.nc")


def test_a_worker_job_cancelled_mid_way_is_replaced_and_the_scores_complete(tiny_world, slurm, forecast_processes,
                                                                            scored_locally, tmp_path):
    store, local = scored_locally
    scoring = score_on_slurm(slurm, forecast_processes, tiny_world, store, tmp_path / "slurm", wait=False)
    deadline = time.monotonic() + 180
    while not (done := re.findall(r"score: (\d+)/(\d+) scores done", scoring.err.read_text() if scoring.err.exists() else "")):
        assert scoring.running() and time.monotonic() < deadline, scoring.wait(1).stderr[-3000:]
        time.sleep(0.05)  # until the workers have finished a first score
    assert int(done[0][0]) < int(done[0][1])
    jobs = [line.split()[0] for line in slurm.squeue() if line.split()[1] == "RUNNING"]
    assert len(jobs) == 1 and scoring.running(), "the scoring ended before its worker job could be cancelled"
    slurm.run("scancel", jobs[0])
    began = time.monotonic()
    result = scoring.wait(300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "submitting 1 replacement job(s) (1 of at most 2)" in result.stderr
    assert time.monotonic() - began < 240
    assert_same_scores(local, tmp_path / "slurm" / "scores.nc")

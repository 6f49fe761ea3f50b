"""``forecast nightly CONFIG``: the cron cycle that issues a forecast every day without a person watching.

One invocation, under an exclusive lock (a second one exits at once, "already running"):

1. find the newest start time in the analyses at one of ``nightly.cycle_hours`` (plus ``catch_up``
   earlier ones);
2. for each such cycle: skip it if its store is complete, resume it if partial, else run it -- here
   (``mode: local``) or as ``slurm/ensemble.sbatch`` (``mode: slurm``; a job still queued is not
   submitted again);
3. score every complete cycle whose verification time (start + lead) is covered by the truth and which
   has no complete scores yet (``scores/complete.json``, written last by ``forecast score``; a killed
   scoring is redone) -- here, or as ``slurm/score.sbatch`` chained with ``--dependency=afterok``;
4. apply the retention policy: keep the stores of the newest ``keep_cycles`` cycles (scores are kept),
   and the newest ``keep_logs`` log files;
5. write ``status.json`` (cycle, state, timings, store, scores, jobs, log) atomically, and log to
   ``logs/nightly-<time>.log``.

Layout under ``nightly.root``: ``nightly.lock``, ``status.json``, ``logs/``, and per cycle
``cycles/<YYYY-MM-DDTHH>/`` with ``ensemble.zarr``, ``scores/`` and, in Slurm mode, ``jobs.json``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from forecast.errors import ForecastError
from forecast.files import write_atomic
from workflows.completeness import is_scored
from workflows.config import Config, TimeRange, expand_workdir
from workflows.lock import exclusive_lock

log = logging.getLogger(__name__)

CYCLE_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}$")


@dataclass
class NightlyRun:
    """What one invocation did; ``status`` is what ``status.json`` holds."""

    root: Path
    status: dict = field(default_factory=dict)

    @property
    def message(self) -> str:
        return self.status.get("message", "")


def nightly_root(config: Config) -> Path:
    return Path(expand_workdir(config.nightly.root, config.paths.workdir))


def run_nightly(config: Config, config_path: str | os.PathLike, overrides=()) -> NightlyRun:
    """Run one nightly cycle for ``config`` (read from ``config_path`` with ``overrides``, which Slurm jobs
    receive too). Raises ``LockHeld`` at once when another invocation is running."""
    # the nightly and slurm sections checked themselves when the config was built (workflows.config)
    root = nightly_root(config)
    root.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(root / "nightly.lock"):
        run = NightlyRun(root)
        handler = _log_to_file(root / "logs")
        began = time.perf_counter()
        run.status = {"state": "running", "cycle": None, "mode": config.nightly.mode, "started": _now(),
                      "pid": os.getpid(), "host": socket.gethostname(), "log": handler.baseFilename, "timings": {}}
        _write_status(root, run.status)
        try:
            _cycle(config, Path(config_path).resolve(), list(overrides), run)
        except BaseException as error:  # record failures and signals, then let the command line report them
            from workflows.errors import describe
            from workflows.interrupt import Interrupted

            run.status["state"] = "interrupted" if isinstance(error, Interrupted) else "failed"
            run.status["error"] = describe(error)
            if not isinstance(error, (Interrupted, ForecastError, OSError)):  # a bug: its traceback goes to the log
                log.error("nightly: internal error", exc_info=error)
            raise
        finally:
            run.status["timings"]["total"] = round(time.perf_counter() - began, 2)
            run.status["finished"] = _now()
            _write_status(root, run.status)
            log.info("nightly: %s: %s", run.status["state"], run.status.get("message") or run.status.get("error"))
            logging.getLogger().removeHandler(handler)
            handler.close()
        return run


def _cycle(config: Config, config_path: Path, overrides: list, run: NightlyRun) -> None:
    n, status, timings = config.nightly, run.status, run.status["timings"]
    began = time.perf_counter()
    cycles = find_cycles(config)
    timings["find_cycle"] = round(time.perf_counter() - began, 2)
    status["cycle"] = _stamp(cycles[-1])
    log.info("nightly: cycle %s (%s mode)%s", status["cycle"], n.mode,
             f", catching up {[_stamp(c) for c in cycles[:-1]]}" if len(cycles) > 1 else "")
    overrides = [*overrides, f"paths.workdir={Path(config.paths.workdir).resolve()}"]

    began = time.perf_counter()
    ran, submitted, jobs = [], {}, {}
    for cycle in cycles:
        folder = cycle_folder(run.root, cycle)
        state = store_state(folder / "ensemble.zarr")
        if state == "done":
            log.info("nightly: cycle %s: forecast already complete, skipping", _stamp(cycle))
            continue
        if n.mode == "local":
            log.info("nightly: cycle %s: %s", _stamp(cycle), "resuming the partial store" if state == "partial" else "running")
            from workflows.recipes import run_ensemble

            run_ensemble(cycle_config(config, cycle, folder))
            ran.append(_stamp(cycle))
        else:
            job = _submit_ensemble(config, config_path, overrides, cycle, folder)
            submitted[_stamp(cycle)] = job
    timings["run"] = round(time.perf_counter() - began, 2)

    began = time.perf_counter()
    scored = _score(config, run.root, submitted, jobs)
    timings["score"] = round(time.perf_counter() - began, 2)

    began = time.perf_counter()
    removed = apply_retention(run.root, n.keep_cycles, n.keep_logs)
    timings["retention"] = round(time.perf_counter() - began, 2)

    folder = cycle_folder(run.root, cycles[-1])
    scores = folder / "scores" / "scores.nc"
    status.update(store=str(folder / "ensemble.zarr"), scores=str(scores) if is_scored(scores.parent) else None, ran=ran,
                  scored=scored, removed=removed, jobs={**{f"ensemble {c}": j for c, j in submitted.items()}, **jobs})
    if submitted or jobs:
        status["state"] = "submitted"
        status["message"] = (f"cycle {status['cycle']}: Slurm job(s) {', '.join(list(submitted.values()) + list(jobs.values()))} "
                             "submitted or still queued")
    elif ran or scored:
        status["state"] = "complete"
        status["message"] = f"cycle {status['cycle']}: ran {ran or 'nothing'}, scored {scored or 'nothing'}"
    else:
        status["state"] = "nothing-to-do"
        scores = " and scored" if status["scores"] else " (not scored: its verification time has not arrived)"
        status["message"] = f"cycle {status['cycle']} is already complete{scores}; nothing to do"
    if removed:
        status["message"] += f"; removed stores of {len(removed)} old cycle(s)"


# -- cycles -----------------------------------------------------------------------------------------
def find_cycles(config: Config) -> list[np.datetime64]:
    """The newest start time in the analyses at one of ``nightly.cycle_hours``, preceded by up to
    ``nightly.catch_up`` earlier ones (oldest first)."""
    from forecast.data import DataError, open_source

    source = open_source(config.paths.resolve("analysis"), name="analyses")
    times = np.asarray(source.times, dtype="datetime64[ns]")
    since_midnight = (times - times.astype("datetime64[D]")).astype("timedelta64[m]").astype(int)
    on_cycle = np.isin(since_midnight, [60 * h for h in config.nightly.cycle_hours])
    candidates = times[on_cycle]
    if len(candidates) == 0:
        raise DataError(f"analyses: no time at the cycle hours {list(config.nightly.cycle_hours)} UTC in the data "
                        f"({_stamp(times[0]) if len(times) else '-'} to {_stamp(times[-1]) if len(times) else '-'})")
    return list(candidates[-(config.nightly.catch_up + 1):])


def cycle_folder(root: Path, cycle) -> Path:
    return root / "cycles" / _stamp(cycle)


def cycle_config(config: Config, cycle, folder: Path) -> Config:
    """``config`` for one cycle: one start date, its own store."""
    stamp = _stamp(cycle)
    ensemble = replace(config.ensemble, init_times=TimeRange(stamp, stamp, config.ensemble.init_times.every_hours))
    return replace(config, ensemble=ensemble, paths=replace(config.paths, store=str(folder / "ensemble.zarr")))


def store_state(path: Path) -> str:
    """``missing``, ``partial`` or ``done`` (every member finished, statistics finalised) from the manifest.

    A cycle store written by an earlier release (a cycle started before an upgrade) is migrated first
    (``forecast check --migrate``), so the cycle finishes after the upgrade; the nightly lock keeps
    other nightly runs off it meanwhile."""
    from forecast.store import STORE_VERSION, EnsembleStore, StoreVersionError
    from forecast.store_migration import migrate_store

    if not path.exists():
        return "missing"
    try:
        store = EnsembleStore.open(path)
    except StoreVersionError:
        if json.loads((path / "zarr.json").read_text()).get("attributes", {}).get("store_version", 1) > STORE_VERSION:
            raise
        for note in migrate_store(path):
            log.info("nightly: %s: %s", path, note)
        store = EnsembleStore.open(path)
    done = bool((store.done[:] == 1).all()) and all(store.statistics_done(i) for i in range(len(store.schema.init_times)))
    return "done" if done else "partial"


def verification_arrives(store_path: Path) -> np.datetime64:
    """The last valid time of a store: when the truth must reach to score it."""
    from forecast.store import EnsembleStore

    schema = EnsembleStore.open(store_path).schema
    return np.datetime64(schema.init_times[-1], "ns") + np.timedelta64(int(max(schema.lead_hours)), "h")


# -- scoring ----------------------------------------------------------------------------------------
def _score(config: Config, root: Path, submitted: dict, jobs: dict) -> list[str]:
    """Score cycles whose verification time has arrived; returns the cycles scored here."""
    from forecast.data import open_source

    truth_path = Path(config.nightly.truth) if config.nightly.truth else config.paths.resolve("nature")
    newest_truth = np.asarray(open_source(truth_path, name="truth").times, dtype="datetime64[ns]").max()
    scored = []
    for folder in sorted(p for p in (root / "cycles").glob("*") if CYCLE_NAME.match(p.name)):
        store, out = folder / "ensemble.zarr", folder / "scores"
        if is_scored(out):  # the marker `forecast score` writes last; a killed scoring is redone
            continue
        pending_job = submitted.get(folder.name)  # Slurm: the store is written by a queued job
        if pending_job is None and (not store.exists() or _state_or_warn(store, folder.name) != "done"):
            continue
        if store.exists():
            arrives = verification_arrives(store)
        else:
            arrives = np.datetime64(folder.name, "ns") + np.timedelta64(config.ensemble.lead_hours, "h")
        if arrives > newest_truth:
            log.info("nightly: cycle %s: verification time %s not in the truth yet (up to %s)", folder.name,
                     _stamp(arrives), _stamp(newest_truth))
            continue
        if config.nightly.mode == "local":
            from workflows.recipes import score_store

            log.info("nightly: cycle %s: scoring", folder.name)
            score_store(store, truth_path, out, **config.score.keywords())  # the config's score section
            scored.append(folder.name)
        else:
            job = _submit_score(config, folder, store, truth_path.resolve(), out, pending_job)
            if job:
                jobs[f"score {folder.name}"] = job
    return scored


def _state_or_warn(store: Path, cycle: str) -> str:
    """:func:`store_state`, or ``damaged`` (with a warning) for a store that cannot be opened: an old cycle's
    broken store does not stop the night."""
    from forecast.store import StoreError

    try:
        return store_state(store)
    except StoreError as error:
        log.warning("nightly: cycle %s: not scored: %s", cycle, error)
        return "damaged"


# -- Slurm ------------------------------------------------------------------------------------------
def _jobs(folder: Path) -> dict:
    path = folder / "jobs.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _record_job(folder: Path, kind: str, job: str) -> None:
    _write_json(folder / "jobs.json", {**_jobs(folder), kind: job})


def _submit_ensemble(config: Config, config_path: Path, overrides: list, cycle, folder: Path) -> str:
    from workflows.slurm import is_active, scripts_folder, submit

    previous = _jobs(folder).get("ensemble")
    if is_active(previous):
        log.info("nightly: cycle %s: ensemble job %s is still queued or running", _stamp(cycle), previous)
        return previous
    if previous:
        log.warning("nightly: cycle %s: ensemble job %s ended without completing the store; resubmitting (it resumes)",
                    _stamp(cycle), previous)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _stamp(cycle)
    arguments = [config_path, *overrides, f"paths.store={(folder / 'ensemble.zarr').resolve()}",
                 f"ensemble.init_times.start={stamp}", f"ensemble.init_times.stop={stamp}"]
    options = [f"--job-name=forecast-{stamp}", f"--output={folder.resolve()}/ensemble-%j.out", "--open-mode=append",
               *config.nightly.slurm.ensemble]
    job = submit(scripts_folder(config.nightly.slurm.scripts) / "ensemble.sbatch", arguments, options)
    _record_job(folder, "ensemble", job)
    return job


def _submit_score(config: Config, folder: Path, store: Path, truth: Path, out: Path, after: str | None) -> str | None:
    from workflows.slurm import is_active, scripts_folder, submit

    previous = _jobs(folder).get("score")
    if is_active(previous):
        log.info("nightly: cycle %s: score job %s is still queued or running", folder.name, previous)
        return previous
    options = [f"--job-name=score-{folder.name}", f"--output={folder.resolve()}/score-%j.out", *config.nightly.slurm.score]
    job = submit(scripts_folder(config.nightly.slurm.scripts) / "score.sbatch",
                 [store.resolve(), "--truth", truth, "--out", out.resolve(), *config.score.arguments()], options, after=after)
    _record_job(folder, "score", job)
    return job


# -- retention --------------------------------------------------------------------------------------
def apply_retention(root: Path, keep_cycles: int, keep_logs: int) -> list[str]:
    """Delete the stores of all but the newest ``keep_cycles`` cycles (their scores and job records stay)
    and all but the newest ``keep_logs`` log files (both at least 1); returns the cycles whose stores
    were removed. Only ``cycles/<YYYY-MM-DDTHH>/ensemble.zarr`` folders are ever deleted, never through a
    symbolic link, and never while a job of that cycle is queued."""
    removed = []
    cycles = sorted(p for p in (root / "cycles").glob("*") if CYCLE_NAME.match(p.name) and p.is_dir() and not p.is_symlink())
    for folder in cycles[:-keep_cycles]:
        store = folder / "ensemble.zarr"
        if not store.exists() or store.is_symlink():
            continue
        if any(_still_queued(job) for job in _jobs(folder).values()):
            log.info("nightly: retention: cycle %s has jobs in the queue, keeping its store", folder.name)
            continue
        shutil.rmtree(store)
        removed.append(folder.name)
        log.info("nightly: retention: removed %s", store)
    logs = sorted((root / "logs").glob("nightly-*.log"))
    for path in logs[:-keep_logs]:
        path.unlink()
    return removed


def _still_queued(job: str) -> bool:
    from workflows.slurm import SlurmError, is_active

    try:
        return is_active(job)
    except SlurmError:  # no Slurm here: nothing can be queued
        return False


# -- status and logs --------------------------------------------------------------------------------
def _stamp(t) -> str:
    return str(np.datetime_as_string(np.datetime64(t, "h"), "h"))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` atomically (``forecast.files.write_atomic``); who may read it is the umask's
    business (the `umask` setting)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n", mode=0o666)


def _write_status(root: Path, status: dict) -> None:
    _write_json(root / "status.json", status)


def _log_to_file(folder: Path) -> logging.FileHandler:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"nightly-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    if root.getEffectiveLevel() > logging.INFO:  # the file gets INFO even under -q; stderr keeps its level
        for other in root.handlers:
            if other.level == logging.NOTSET:
                other.setLevel(root.getEffectiveLevel())
        root.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler

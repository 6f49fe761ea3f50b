"""Recipes behind the command line: each loads what it needs, builds objects and runs one stage.

Every stage can be rerun: it skips what is complete (the planet's stores, valid checkpoints, the
ensemble store's finished blocks) and redoes what is missing.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import numpy as np

from forecast.files import atomic_write
from forecast.machine import available_cores
from workflows.config import Config, ConfigError, ensemble_section, library_settings, store_path
from workflows.training import checkpoint_dirs, model_sets, train_checkpoints  # noqa: F401

log = logging.getLogger(__name__)


# -- planet ---------------------------------------------------------------------------------------
def make_planet(config: Config) -> tuple[Path, Path]:
    """Write the nature run and the analyses (skipped when both already exist)."""
    from forecast.data.planet import analyses, nature_run

    nature_path, analysis_path = config.paths.resolve("nature"), config.paths.resolve("analysis")
    if (nature_path / "zarr.json").is_file() and (analysis_path / "zarr.json").is_file():
        log.info("planet: %s and %s exist, skipping", nature_path, analysis_path)
        return nature_path, analysis_path
    p = config.planet
    settings = p.settings  # a forecast.data.planet.PlanetConfig
    n_times = int(round(p.days * 24 / settings.output_hours))
    began = time.perf_counter()
    log.info("planet: spinning up %g days, then %d states every %d h", p.spinup_days, n_times, settings.output_hours)
    truth = nature_run(settings, np.datetime64(p.start), n_times, spinup_days=p.spinup_days, seed=p.seed)
    truth.attrs.update({"title": "planet nature run (truth)", "planet": repr(settings), "seed": p.seed})
    _write_dataset(truth, nature_path)
    _write_dataset(analyses(truth, settings, seed=p.analysis_seed), analysis_path)
    log.info("planet: wrote %s and %s in %.0f s", nature_path, analysis_path, time.perf_counter() - began)
    return nature_path, analysis_path


def _write_dataset(ds, path: Path) -> None:
    """Write a whole dataset to Zarr atomically (``forecast.files.atomic_write``), every chunk with a zstd
    content checksum, so a damaged chunk is an error when read instead of plausible numbers."""
    import zarr

    from forecast.store import consolidate

    path.parent.mkdir(parents=True, exist_ok=True)
    encoding = {name: {"compressors": [zarr.codecs.ZstdCodec(level=3, checksum=True)]} for name in ds.variables}
    with atomic_write(path) as tmp:
        ds.to_zarr(str(tmp), mode="w", consolidated=False, zarr_format=3, encoding=encoding)
        consolidate(tmp)  # plain xr.open_zarr opens it without a warning


# -- skill ----------------------------------------------------------------------------------------
def compute_skill(config: Config) -> dict:
    """RMSE of each checkpoint at ``skill.lead_hours`` from analyses against the truth; writes skill.json."""
    from ensembles.skill import deterministic_rmse, save_skill
    from forecast.data import open_source
    from models.checkpoint import load_checkpoint, read_card

    card = read_card(checkpoint_dirs(config)[0])
    grid, channels = card.model_grid, card.channels  # ERA5 is read on the model grid (regridded if needed)
    regrid = config.data.regrid
    analyses = open_source(config.paths.resolve("analysis"), name="analyses", grid=grid, channels=channels, regrid=regrid)
    truth = open_source(config.paths.resolve("nature"), name="nature run", grid=grid, channels=channels, regrid=regrid)
    init_times = config.skill.init_times.times()
    from ensembles.ranks import device_for

    device = device_for(config.ensemble.device, 0)  # the device the ensemble's steps run on
    results = {}
    for d in checkpoint_dirs(config, list(model_sets(config))):
        model = load_checkpoint(d, device)
        rmse = deterministic_rmse(model, analyses, truth, init_times, config.skill.lead_hours)
        save_skill(d, rmse, config.skill.lead_hours, len(init_times), str(config.paths.resolve("analysis")))
        log.info("skill: %s RMSE at %d h: %s", d.name, config.skill.lead_hours, {k: round(v, 3) for k, v in rmse.items()})
        results[d.name] = rmse
    return results


# -- ensemble -------------------------------------------------------------------------------------
def perturbation_settings(config: Config, checkpoints: list[Path], section=None):
    """The engine's perturbation settings from the section (:func:`workflows.config.library_settings`), with the
    amplitudes found from the checkpoints' skill when the section names none."""
    from ensembles.plan import PerturbationSettings
    from ensembles.skill import load_skill

    p = (section or config.ensemble).perturbation
    amplitude = dict(p.amplitude)
    factor = p.amplitude_factor  # a number or "auto" (checked when the config was read)
    if p.method != "none" and not amplitude:
        skills = [load_skill(d, config.skill.lead_hours) for d in checkpoints]
        channels = skills[0].keys()
        factor = 1.0 if factor == "auto" else factor  # auto: the RMSE itself, scaled once calibrated
        amplitude = {c: factor * float(np.mean([s[c] for s in skills])) for c in channels}
    return library_settings(PerturbationSettings, p, amplitude=amplitude)


def build_engine(config: Config, local_rank: int = 0, experiment: str | None = None, rank: int = 0):
    from ensembles.engine import EnsembleEngine, auto_batch_size
    from ensembles.plan import MemberPlan
    from ensembles.ranks import device_for
    from ensembles.stats import StatisticsSpec
    from forecast.data import open_source
    from models.checkpoint import read_card
    from models.precision import set_numerical_mode
    from workflows.batch_size import resolve_batch_size

    e = ensemble_section(config, experiment)
    checkpoints = checkpoint_dirs(config, e.models or None)
    card = read_card(checkpoints[0])
    dt = card.dt_hours
    if e.lead_hours % dt:
        raise ConfigError(f"ensemble.lead_hours={e.lead_hours} is not a multiple of the model step ({dt} h)")
    if e.lead_hours < 0:
        raise ConfigError(f"ensemble.lead_hours must be non-negative, got {e.lead_hours}")
    plan = MemberPlan(len(checkpoints), e.members_per_checkpoint, control=e.control,
                      perturbation="none" if e.perturbation.method == "none" else "paired")
    device = device_for(e.device, local_rank)
    set_numerical_mode(e.deterministic, device)  # before the first CUDA operation
    batch_size = resolve_batch_size(e.batch_size, store_path(config, experiment), device=device, rank=rank,
                                    measure=lambda: auto_batch_size(checkpoints[0], device, card.model_grid.shape))
    s = e.statistics
    statistics = library_settings(StatisticsSpec, s) if s.channels else None
    # ERA5 (WeatherBench2, ARCO, CDS) is read through the lexicon; another grid needs data.regrid
    analyses = open_source(config.paths.resolve("analysis"), name="analyses", grid=card.model_grid,
                           channels=card.channels, regrid=config.data.regrid)
    engine = EnsembleEngine(checkpoints=[str(c) for c in checkpoints], plan=plan, analyses=analyses,
                            init_times=e.init_times.times(), lead_steps=e.lead_hours // dt, batch_size=batch_size,
                            base_seed=e.seed, perturbation=perturbation_settings(config, checkpoints, e), device=device,
                            statistics=statistics, statistics_only=s.only,
                            **store_keepbits(store_path(config, experiment), e, card.channels, analyses),
                            zstd_level=e.compression.zstd_level, writer_threads=e.writer_threads,
                            autocast_bf16=e.autocast_bf16)
    p = e.perturbation
    if p.amplitude_factor == "auto" and p.method != "none" and not p.amplitude:
        engine = calibrated_amplitude(config, engine, store_path(config, experiment))
    return engine


CALIBRATION_DATES = 3  # start dates (from skill.init_times, inside the training period) for amplitude_factor: auto


def calibrated_amplitude(config: Config, engine, path: Path):
    """``amplitude_factor: auto``: the engine with the factor of :data:`ensembles.calibration.AMPLITUDE_CANDIDATES`
    whose ensemble has the lowest fair CRPS on training-period start dates (``skill.init_times``); the
    choice and its CRPS curve go into the store's attributes (``amplitude_calibration``). A store that
    exists keeps the factor it was made with."""
    import dataclasses

    from ensembles.calibration import AMPLITUDE_CANDIDATES, calibrate_amplitude_factor
    from forecast.data import open_source
    from forecast.store import EnsembleStore, StoreError

    rmse = dict(engine.perturbation.amplitude)  # the factor-1 amplitudes: the deterministic RMSE
    try:
        record = EnsembleStore.open(path).schema.attrs["amplitude_calibration"]
    except (StoreError, KeyError):
        record = None
    if record is None:
        times = config.skill.init_times.times()
        times = times[np.unique(np.linspace(0, len(times) - 1, min(len(times), CALIBRATION_DATES)).astype(int))]
        truth = open_source(config.paths.resolve("nature"), name="nature run", grid=engine.grid,
                            channels=engine.channels, regrid=config.data.regrid)
        trial = dataclasses.replace(engine, init_times=times, statistics=None, statistics_only=())
        began = time.perf_counter()
        factor, curve = calibrate_amplitude_factor(trial, rmse, truth)
        record = {"chosen": factor, "fair_crps": {f"{k:g}": v for k, v in curve.items()},
                  "init_times": [np.datetime_as_string(t, "h") for t in times], "lead_hours": engine.lead_steps * engine.dt_hours,
                  "measure": "fair CRPS of the whole plan, channels in units of the card's std, leads after 0",
                  "at_edge": factor in (min(curve), max(AMPLITUDE_CANDIDATES))}
        if record["at_edge"]:
            log.warning("run: amplitude_factor %.2f is at the edge of the candidates %s; the best may lie beyond",
                        factor, AMPLITUDE_CANDIDATES)
        log.info("run: amplitude_factor %.2f chosen on %d training-period start dates in %.0f s", factor, len(times),
                 time.perf_counter() - began)
    amplitude = {c: record["chosen"] * v for c, v in rmse.items()}
    return dataclasses.replace(engine, perturbation=dataclasses.replace(engine.perturbation, amplitude=amplitude),
                               attrs={**engine.attrs, "amplitude_calibration": record})


def store_keepbits(path: Path, section, channels, analyses) -> dict:
    """``keepbits`` (and ``attrs`` recording how they were chosen) for the engine: the configured ones, or with ``keepbits: auto``
    the existing store's (a resumed or parallel run), else chosen from the analyses at the start dates."""
    compression = section.compression
    if compression.keepbits != "auto":
        return {"keepbits": compression.keepbits}
    from forecast.bitinfo import keepbits_from_source
    from forecast.store import EnsembleStore, StoreError

    try:
        schema = EnsembleStore.open(path).schema
        if "keepbits_auto" in schema.attrs:
            return {"keepbits": dict(schema.layout["keepbits"]), "attrs": {"keepbits_auto": schema.attrs["keepbits_auto"]}}
    except StoreError:
        pass
    stored = [c for c in channels if c not in section.statistics.only]
    began = time.perf_counter()
    keepbits, record = keepbits_from_source(analyses, stored, section.init_times.times(), compression.information)
    log.info("run: keepbits auto (%.0f%% of the real information, %.1f s): %s", 100 * compression.information,
             time.perf_counter() - began, keepbits)
    return {"keepbits": keepbits, "attrs": {"keepbits_auto": record}}


def run_ensemble(config: Config, members: str | None = None, init_times: str | None = None,
                 experiment: str | None = None, progress=None) -> Path:
    """Generate the ensemble (or an experiment's; this rank's share under srun/torchrun) into its store.

    ``progress``: a :class:`workflows.progress.Progress` (default: a bar on a terminal or in a notebook,
    a log line every 30 s otherwise)."""
    from workflows.progress import Progress

    from ensembles.plan import parse_member_range
    from workflows.launcher import rank_from_environment

    ranks = rank_from_environment()
    engine = build_engine(config, ranks.local_rank, experiment, rank=ranks.rank)
    start, stop = parse_member_range(members, engine.plan.size) if members else (0, engine.plan.size)
    init_indices = None
    if init_times:
        a, b = parse_member_range(init_times, len(engine.init_times), "start date")
        init_indices = range(a, b)
    path = store_path(config, experiment)
    from workflows.preflight import check_path_length, check_run

    check_path_length(path)
    if not (path / "zarr.json").is_file():  # bad input must not leave a store behind
        check_run(config, engine, path, init_indices, experiment)
    from workflows.errors import naming

    with naming(path):  # a full disk names the store
        store = engine.create_store(path)
        label = "run" if ranks.world == 1 else f"run rank {ranks.rank}/{ranks.world}"
        with progress or Progress(label) as shown:
            counts = engine.run(store, start, stop, rank=ranks.rank, world=ranks.world, init_indices=init_indices,
                                progress=shown)
    log.info("run: rank %d/%d, members %d:%d into %s: %s", ranks.rank, ranks.world, start, stop, path, counts)
    return path


# -- scoring --------------------------------------------------------------------------------------
# stores with at most this much float32 data score on threads in this process: each fused scoring task holds one
# tile, so memory stays at a few tiles per thread (docs/scoring-speed.md: a 4.8 GB store peaks at about 2 GB)
IN_PROCESS_BYTES = 16 << 30


def score_store(store_path, truth_path, out_dir, workers: int = 0, scheduler: str = "", slurm=None, regions=(),
                chunk_mb: float = 64, worker_memory: str = "", regrid: bool = False, dims: dict | None = None,
                in_process: bool | None = None, allow_partial: bool = False) -> Path:
    """Score an ensemble store against the truth on Dask; write ``scores.nc`` and the report.

    The truth is a Zarr store or netCDF file in any layout ``forecast run`` reads (the planet's,
    WeatherBench2, ARCO-ERA5, CDS); a truth on another grid is regridded only with ``regrid``. ``dims``
    names the dimensions of a store another tool wrote (:func:`forecast.verify.parse_dims`). The cluster
    is ``scheduler`` (an address), else Slurm jobs (``slurm``: a :class:`workflows.cluster.SlurmOptions`),
    else, by size: a store of at most :data:`IN_PROCESS_BYTES` of data scores on Dask's threaded scheduler
    in this process (``workers`` threads; the kernels release the GIL, and worker processes would only add
    start-up and copies between them), a larger one on a local cluster of ``workers`` processes (default:
    one per core); ``in_process`` forces the choice.
    ``regions`` adds user boxes (:class:`forecast.verify.Region`) to the standard four. Progress is a bar on
    a terminal and a log line per finished score otherwise (on the cluster). Store, truth and their fit are
    checked before anything is written. An unfinished store is refused (``StoreError``) unless
    ``allow_partial``: then the members finished at every start date are scored, and ``scores.nc``
    (attribute ``partial``) and the report say so.
    """
    from forecast import verify
    from forecast.data import DataError
    from forecast.store import undecodable_named
    from forecast.verify.scores import open_ensemble, open_truth, score_ensemble
    from workflows.cluster import LOCAL_WORKER_MEMORY, dask_client
    from workflows.completeness import clear_scored, finished_members, mark_scored, select_members
    from workflows.report import write_report

    members, partial = finished_members(store_path, allow_partial)
    out_dir = Path(out_dir)
    forecast = open_ensemble(store_path, chunk_bytes=int(chunk_mb * 2**20), dims=dims)
    if members is not None:
        log.warning("score: %s", partial)
        forecast = select_members(forecast, members)
    lazy = score_ensemble(forecast, open_truth(truth_path), regions=tuple(verify.REGIONS) + tuple(regions),
                          regrid=regrid)
    with _removed_if_left_empty(out_dir):
        clear_scored(out_dir)
        began = time.perf_counter()
        data_bytes = sum(v.size * 4 for v in forecast.data_vars.values())
        if in_process is None:
            in_process = not scheduler and slurm is None and data_bytes <= IN_PROCESS_BYTES
        # a corrupt chunk of either is named
        with undecodable_named(store_path), undecodable_named(truth_path, DataError, "truth"):
            if in_process:
                import dask

                log.info("score: %.0f MB of data: threaded scheduler in this process", data_bytes / 2**20)
                with dask.config.set(scheduler="threads", num_workers=workers or available_cores()):
                    scores = lazy.compute()
            else:
                with dask_client(workers or available_cores(), scheduler, slurm,
                                 worker_memory or LOCAL_WORKER_MEMORY) as client:
                    scores = _compute_with_progress(client, lazy)
        log.info("score: %s scored in %.1f s", store_path, time.perf_counter() - began)
        rmse = scores["ensemble_mean_rmse"]
        finite = np.isfinite(rmse).all([d for d in rmse.dims if d != "channel"])
        unscored = [str(c) for c in rmse["channel"].values[~finite.values]]
        if unscored:
            log.warning("score: channel(s) %s have NaN or infinite scores: the truth or the forecast holds NaN or Inf "
                        "at some scored valid times", unscored)
        from forecast.cf import plain_strings, time_encoding, with_cf_attributes

        scores = with_cf_attributes(plain_strings(scores))
        scores.attrs["maps_init_time"] = np.datetime_as_string(forecast["init_time"].values[0], "h")  # the maps' date
        if partial:
            scores.attrs["partial"] = partial
        with atomic_write(out_dir / "scores.nc") as tmp:
            scores.to_netcdf(tmp, encoding=time_encoding(scores))
        report = write_report(scores, out_dir, store_path)
        mark_scored(out_dir, [p for p in out_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                              and not p.name.endswith(".partial")])  # last: the whole output is there
        return report


@contextlib.contextmanager
def _removed_if_left_empty(folder: Path):
    """Make ``folder``; if the block fails before writing anything there, remove it again (a folder that was
    already there is kept)."""
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise


def _compute_with_progress(client, lazy, poll: float = 5.0):
    """Compute every score of ``lazy`` in one graph (shared reads are read once), showing progress. On Slurm
    workers, jobs lost mid-way are replaced (:class:`workflows.cluster.LostWorkerJobs`); a task whose workers
    keep dying is a ``SystemFailure``."""
    from distributed import progress, wait
    from distributed.scheduler import KilledWorker

    from forecast.errors import SystemFailure
    from workflows.cluster import LostWorkerJobs

    names = list(lazy.data_vars)
    futures = client.compute([lazy[name] for name in names])
    if sys.stderr.isatty() and log.isEnabledFor(logging.INFO):
        progress(futures)
    watch = LostWorkerJobs(client)
    pending, done, began = set(futures), 0, time.perf_counter()
    while pending:
        try:
            finished, pending = wait(pending, timeout=poll, return_when="FIRST_COMPLETED")
        except TimeoutError:
            watch.check()
            continue
        done += len(finished)
        log.info("score: %d/%d scores done (%.0f s)", done, len(names), time.perf_counter() - began)
    result = lazy.copy()
    try:
        for name, future in zip(names, futures):
            result[name] = future.result()
    except KilledWorker as error:
        raise SystemFailure(f"Dask workers died computing the scores ({error}); out of memory? "
                            "Give workers more memory (--worker-memory, --slurm-memory) and rerun") from None
    return result.compute()


def demo(config: Config) -> Path:
    """planet -> train -> skill -> run -> score, for the ensemble and every experiment; returns the report
    path (with the experiments compared side by side when there are any)."""
    from workflows.compare import append_comparison

    make_planet(config)
    train_checkpoints(config)
    compute_skill(config)
    truth = config.paths.resolve("nature")
    scores_dir = config.paths.resolve("scores")
    report = score_store(run_ensemble(config), truth, scores_dir, **config.score.keywords())
    if not config.experiments:
        return report
    score_files = {"ensemble": scores_dir / "scores.nc"}
    for name in config.experiments:
        out = scores_dir / name
        score_store(run_ensemble(config, experiment=name), truth, out, **config.score.keywords())
        score_files[name] = out / "scores.nc"
    return append_comparison(report, score_files, describe_experiments(config))


def describe_experiments(config: Config) -> dict[str, str]:
    """One line per ensemble: its model sets, members and perturbation."""
    out = {}
    for name in ("ensemble", *config.experiments):
        e = ensemble_section(config, None if name == "ensemble" else name)
        sets = model_sets(config)
        models = e.models or (config.train.model,)
        members = sum(sets[m].checkpoints for m in models) * e.members_per_checkpoint + (1 if e.control else 0)
        out[name] = (f"{members} members from {' + '.join(f'{sets[m].checkpoints} {sets[m].model.upper()}' for m in models)} "
                     f"checkpoint(s); perturbation: {e.perturbation.method}" + ("; with control" if e.control else ""))
    return out

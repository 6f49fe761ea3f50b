"""Recipes behind the command line: each loads what it needs, builds objects and runs one stage.

Every stage can be rerun: it skips what is complete (the planet's stores, valid checkpoints, the
ensemble store's finished blocks) and redoes what is missing.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from workflows.config import Config, ConfigError

log = logging.getLogger(__name__)


def _available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- planet ---------------------------------------------------------------------------------------
def planet_config(config: Config):
    from forecast.planet import PlanetConfig

    known = set(PlanetConfig.__dataclass_fields__)
    unknown = sorted(set(config.planet.settings) - known)
    if unknown:
        import difflib

        hint = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.0)
        raise ConfigError(f"unknown config key 'planet.settings.{unknown[0]}'" + (f"; did you mean '{hint[0]}'?" if hint else ""))
    settings = {k: tuple(tuple(x) for x in v) if k == "mountains" else v for k, v in config.planet.settings.items()}
    return PlanetConfig(**settings)


def make_planet(config: Config) -> tuple[Path, Path]:
    """Write the nature run and the analyses (skipped when both already exist)."""
    from forecast.planet import analyses, nature_run

    nature_path, analysis_path = config.paths.resolve("nature"), config.paths.resolve("analysis")
    if (nature_path / "zarr.json").is_file() and (analysis_path / "zarr.json").is_file():
        log.info("planet: %s and %s exist, skipping", nature_path, analysis_path)
        return nature_path, analysis_path
    p = config.planet
    settings = planet_config(config)
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
    """Write a whole dataset to Zarr atomically (a temporary path renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.to_zarr(str(tmp), mode="w", consolidated=False, zarr_format=3)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


# -- training -------------------------------------------------------------------------------------
def checkpoint_dirs(config: Config) -> list[Path]:
    root = config.paths.resolve("checkpoints")
    return [root / f"{config.train.model}-{k}" for k in range(config.train.checkpoints)]


def train_checkpoints(config: Config) -> list[Path]:
    """Train ``train.checkpoints`` models with seeds ``seed, seed+1, ...`` (valid ones are kept)."""
    from models.checkpoint import CheckpointError, load_checkpoint

    dirs = checkpoint_dirs(config)
    todo = []
    for k, d in enumerate(dirs):
        try:
            load_checkpoint(d)
            log.info("train: %s exists and loads, skipping", d)
        except CheckpointError:
            todo.append(k)
    if not todo:
        return dirs
    from ensembles.ranks import rank_from_environment

    ranks = rank_from_environment()
    if ranks.world > 1:  # srun/torchrun: all ranks train each checkpoint together (DDP), rank 0 writes it
        from workflows.ddp import barrier, process_group

        with process_group(ranks.rank, ranks.world):
            for k in todo:
                train_one(config, k, save=ranks.rank == 0)
                barrier()
        return dirs
    workers = config.train.processes or min(len(todo), _available_cores())
    log.info("train: %d checkpoint(s) in %d process(es)", len(todo), workers)
    if workers == 1:
        for k in todo:
            train_one(config, k)
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                 initializer=_quiet_worker, initargs=(logging.getLogger().level,)) as pool:
            for result in pool.map(train_one, [config] * len(todo), todo):
                log.info("train: wrote %s", result)
    return dirs


def _quiet_worker(level: int) -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=level, format="%(asctime)s %(processName)s %(name)s: %(message)s")


def training_data(config: Config):
    from forecast.data import normalisation_stats, open_source

    source = open_source(config.paths.resolve("nature"), name="nature run")
    times = config.train.period.times()
    source.time_index(times)
    channels = tuple(sorted(source.channels))
    steps = np.diff(source.times).astype("timedelta64[h]").astype(int)
    if len(steps) == 0 or (steps != steps[0]).any():
        raise ConfigError("the training data must have a uniform time step")
    mean, std = normalisation_stats(source, channels, times)
    return source, times, channels, int(steps[0]), mean, std


def train_one(config: Config, k: int, save: bool = True) -> Path:
    from models.card import ModelCard
    from models.checkpoint import build_model, save_checkpoint
    from models.sfno import SFNOConfig
    from models.train import TrainSettings, seeded_init, train

    t = config.train
    if t.model != "sfno":
        raise ConfigError(f"train.model {t.model!r} is not known; expected 'sfno'")
    source, times, channels, dt_hours, mean, std = training_data(config)
    grid = source.grid
    architecture = {"in_channels": len(channels), "out_channels": len(channels), "nlat": grid.nlat, "nlon": grid.nlon,
                    "grid": grid.kind, **t.architecture}
    architecture = SFNOConfig.from_dict(architecture).to_dict()
    seed = t.seed + k
    settings = TrainSettings(steps=t.steps, batch_size=t.batch_size, learning_rate=t.learning_rate, rollout_steps=t.rollout_steps)
    card = ModelCard(family=t.model, channels=channels, grid=grid.to_dict(), dt_hours=dt_hours, mean=mean, std=std,
                     architecture=architecture, name=f"{t.model}-{k}", seed=seed,
                     training={"period": [str(times[0]), str(times[-1])], **asdict(settings)})
    model = seeded_init(lambda: build_model(card), seed)
    data = source.fields(times, channels)
    data = ((data - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)
    began = time.perf_counter()
    losses = train(model, data, settings, seed, grid.area_weights())
    model.card = ModelCard(**{**asdict(card), "training": {**card.training, "final_loss": float(np.mean(losses[-50:])),
                                                             "seconds": round(time.perf_counter() - began, 1)}})
    path = checkpoint_dirs(config)[k]
    if save:
        save_checkpoint(model, path)
    return path


# -- skill ----------------------------------------------------------------------------------------
def compute_skill(config: Config) -> dict:
    """RMSE of each checkpoint at ``skill.lead_hours`` from analyses against the truth; writes skill.json."""
    from ensembles.skill import deterministic_rmse, save_skill
    from forecast.data import open_source
    from models.checkpoint import load_checkpoint

    analyses = open_source(config.paths.resolve("analysis"), name="analyses")
    truth = open_source(config.paths.resolve("nature"), name="nature run")
    init_times = config.skill.init_times.times()
    results = {}
    for d in checkpoint_dirs(config):
        model = load_checkpoint(d)
        rmse = deterministic_rmse(model, analyses, truth, init_times, config.skill.lead_hours)
        save_skill(d, rmse, config.skill.lead_hours, len(init_times), str(config.paths.resolve("analysis")))
        log.info("skill: %s RMSE at %d h: %s", d.name, config.skill.lead_hours, {k: round(v, 3) for k, v in rmse.items()})
        results[d.name] = rmse
    return results


# -- ensemble -------------------------------------------------------------------------------------
def perturbation_settings(config: Config, checkpoints: list[Path]):
    from ensembles.engine import PerturbationSettings
    from ensembles.skill import load_skill

    p = config.ensemble.perturbation
    amplitude = dict(p.amplitude)
    if p.method != "none" and not amplitude:
        skills = [load_skill(d, config.skill.lead_hours) for d in checkpoints]
        channels = skills[0].keys()
        amplitude = {c: p.amplitude_factor * float(np.mean([s[c] for s in skills])) for c in channels}
    return PerturbationSettings(method=p.method, channels=p.channels, amplitude=amplitude,
                                length_scale_km=p.length_scale_km, cycles=p.cycles,
                                boundary_latitude=p.boundary_latitude, last_cycle_ends=p.last_cycle_ends)


def build_engine(config: Config, local_rank: int = 0):
    from ensembles.engine import EnsembleEngine, auto_batch_size
    from ensembles.plan import MemberPlan
    from ensembles.ranks import device_for
    from ensembles.stats import StatisticsSpec
    from forecast.data import open_source
    from forecast.store import EnsembleStore, StoreError
    from models.checkpoint import read_card

    e = config.ensemble
    checkpoints = checkpoint_dirs(config)
    card = read_card(checkpoints[0])
    dt = card.dt_hours
    if e.lead_hours % dt:
        raise ConfigError(f"ensemble.lead_hours={e.lead_hours} is not a multiple of the model step ({dt} h)")
    if e.lead_hours < 0:
        raise ConfigError(f"ensemble.lead_hours must be non-negative, got {e.lead_hours}")
    plan = MemberPlan(len(checkpoints), e.members_per_checkpoint, control=e.control,
                      perturbation="none" if e.perturbation.method == "none" else "paired")
    device = device_for(e.device, local_rank)
    batch_size = e.batch_size
    if batch_size == "auto":
        try:  # a store that exists fixes the batch layout
            batch_size = EnsembleStore.open(config.paths.resolve("store")).schema.attrs["batch_size"]
        except StoreError:
            batch_size = auto_batch_size(checkpoints[0], device, card.model_grid.shape)
    elif not isinstance(batch_size, int):
        raise ConfigError(f"ensemble.batch_size must be a positive integer or 'auto', got {batch_size!r}")
    s = e.statistics
    statistics = None
    if s.channels:
        statistics = StatisticsSpec(channels=s.channels, thresholds=s.thresholds, quantiles=s.quantiles,
                                    tail_members=s.tail_members)
    analyses = open_source(config.paths.resolve("analysis"), name="analyses")
    return EnsembleEngine(checkpoints=[str(c) for c in checkpoints], plan=plan, analyses=analyses,
                          init_times=e.init_times.times(), lead_steps=e.lead_hours // dt, batch_size=batch_size,
                          base_seed=e.seed, perturbation=perturbation_settings(config, checkpoints), device=device,
                          statistics=statistics, statistics_only=s.only, keepbits=e.compression.keepbits,
                          zstd_level=e.compression.zstd_level, writer_threads=e.writer_threads,
                          autocast_bf16=e.autocast_bf16)


def run_ensemble(config: Config, members: str | None = None, init_times: str | None = None) -> Path:
    """Generate the ensemble (this rank's share under srun/torchrun) into ``paths.store``."""
    from ensembles.plan import parse_member_range
    from ensembles.ranks import rank_from_environment

    ranks = rank_from_environment()
    engine = build_engine(config, ranks.local_rank)
    start, stop = parse_member_range(members, engine.plan.size) if members else (0, engine.plan.size)
    init_indices = None
    if init_times:
        a, b = parse_member_range(init_times, len(engine.init_times), "start date")
        init_indices = range(a, b)
    path = config.paths.resolve("store")
    if not (path / "zarr.json").is_file():  # bad input must not leave a store behind
        from workflows.preflight import check_initial_states, check_writable

        check_initial_states(engine, init_indices)
        check_writable(path)
    from workflows.errors import naming

    with naming(path):  # a full disk names the store
        store = engine.create_store(path)
        counts = engine.run(store, start, stop, rank=ranks.rank, world=ranks.world, init_indices=init_indices)
    log.info("run: rank %d/%d, members %d:%d into %s: %s", ranks.rank, ranks.world, start, stop, path, counts)
    return path


# -- scoring --------------------------------------------------------------------------------------
def score_store(store_path, truth_path, out_dir, workers: int = 0, scheduler: str = "") -> Path:
    """Score an ensemble store against the truth on Dask; write ``scores.nc`` and the report."""
    import xarray as xr

    from forecast.scores import open_ensemble, score_ensemble
    from workflows.cluster import dask_client
    from workflows.report import write_report

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    forecast = open_ensemble(store_path)
    truth = xr.open_zarr(str(truth_path), consolidated=False)
    began = time.perf_counter()
    with dask_client(workers or _available_cores(), scheduler) as client:
        lazy = score_ensemble(forecast, truth)
        from distributed import progress

        future = client.compute(lazy)
        if sys.stderr.isatty() and log.isEnabledFor(logging.INFO):
            progress(future)
        scores = future.result()
    log.info("score: %s scored in %.1f s", store_path, time.perf_counter() - began)
    tmp = out_dir / "scores.nc.partial"
    scores.to_netcdf(tmp)
    os.replace(tmp, out_dir / "scores.nc")
    return write_report(scores, out_dir, store_path)


def demo(config: Config) -> Path:
    """planet -> train -> skill -> run -> score; returns the report path."""
    make_planet(config)
    train_checkpoints(config)
    compute_skill(config)
    store = run_ensemble(config)
    return score_store(store, config.paths.resolve("nature"), config.paths.resolve("scores"),
                       workers=config.score.workers, scheduler=config.score.scheduler)

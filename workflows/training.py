"""Training recipes: every model set of the config (``train`` and ``extra_models``), in worker processes
on one machine, or as one DDP job under ``torchrun``/``srun`` (every rank trains every checkpoint)."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from forecast.hashing import checkpoint_seed
from forecast.machine import available_cores
from workflows.config import Config, ConfigError, TrainSection, library_settings

log = logging.getLogger(__name__)
FAMILIES = ("sfno", "vae")


def model_sets(config: Config) -> dict[str, TrainSection]:
    """Model sets by name: ``train`` under its model family's name, then ``extra_models``."""
    sets = {config.train.model: config.train}
    for name, section in config.extra_models.items():
        if name in sets:
            raise ConfigError(f"extra_models.{name} has the name of the train section's model set")
        sets[name] = section
    for name, section in sets.items():
        if section.model not in FAMILIES:
            raise ConfigError(f"model set {name!r} has model {section.model!r}; expected one of {FAMILIES}")
    return sets


def checkpoint_dirs(config: Config, names=None) -> list[Path]:
    """Checkpoint folders of the named model sets (default: the ``train`` set), in order."""
    sets = model_sets(config)
    names = [config.train.model] if names is None else list(names)
    unknown = [n for n in names if n not in sets]
    if unknown:
        raise ConfigError(f"unknown model set(s) {unknown}; the config defines {list(sets)}")
    root = config.paths.resolve("checkpoints")
    return [root / f"{name}-{k}" for name in names for k in range(sets[name].checkpoints)]


def _distributed() -> bool:
    from workflows.launcher import rank_from_environment

    return rank_from_environment().world > 1


def train_checkpoints(config: Config, progress_every: float = 30.0) -> list[Path]:
    """Train every checkpoint of every model set that is missing (checkpoints that load are kept).

    Progress (checkpoints done / total, training steps/s, ETA) is a bar on a terminal or in a notebook and
    a log line at most every ``progress_every`` seconds otherwise."""
    from workflows.progress import Progress

    from models.checkpoint import CheckpointError, load_checkpoint

    jobs, dirs = [], []
    for name, section in model_sets(config).items():
        for k, d in enumerate(checkpoint_dirs(config, [name])):
            dirs.append(d)
            try:
                load_checkpoint(d)
                log.info("train: %s exists and loads, skipping", d)
            except CheckpointError:
                jobs.append((name, k))
    if not jobs:
        return dirs
    jobs.sort(key=lambda job: model_sets(config)[job[0]].model != "vae")  # the slowest (VAE) first
    if _distributed():
        _train_distributed(config, jobs)
        return dirs
    workers = config.train.processes or min(len(jobs), available_cores())
    log.info("train: %d checkpoint(s) in %d process(es)", len(jobs), workers)
    sets = model_sets(config)
    with Progress("train", unit="checkpoints", log_every=progress_every) as progress:
        progress.start(len(jobs), 0, steps=max(sets[name].steps for name, _ in jobs))
        if workers == 1:
            for name, k in jobs:
                train_one(config, name, k)
                progress.advance()
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                     initializer=_quiet_worker, initargs=(logging.getLogger().level,)) as pool:
                for result in pool.map(train_one, [config] * len(jobs), [n for n, _ in jobs], [k for _, k in jobs],
                                       range(len(jobs))):  # the job's index spreads checkpoints over the GPUs
                    log.info("train: wrote %s", result)
                    progress.advance()
    return dirs


def _train_distributed(config: Config, jobs) -> None:
    """Under srun/torchrun every rank trains each checkpoint together (DDP: NCCL on GPUs, gloo on CPU cores)."""
    from workflows.ddp import barrier, choose_backend, process_group
    from workflows.launcher import rank_from_environment

    ranks = rank_from_environment()
    device = training_device(config.train, ranks.local_rank)
    with process_group(ranks.rank, ranks.world, choose_backend(config.train.backend, device), device):
        for name, k in jobs:
            train_one(config, name, k, ranks.local_rank)
            barrier()


def training_device(section: TrainSection, local_rank: int) -> str:
    """The device a training process uses (``train.device``, resolved like ``ensemble.device``), with the
    numerical mode (``train.deterministic``) applied before CUDA starts."""
    from ensembles.ranks import device_for
    from models.precision import set_numerical_mode

    try:
        device = device_for(section.device, local_rank)
    except ValueError as error:
        raise ConfigError(f"train.device: {error}") from None
    set_numerical_mode(section.deterministic, device, warn_only=True)
    return device


def _quiet_worker(level: int) -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=level, format="%(asctime)s %(processName)s %(name)s: %(message)s")


def training_data(config: Config, section: TrainSection):
    from forecast.data import normalisation_stats, open_source

    source = open_source(config.paths.resolve("nature"), name="nature run")
    times = section.period.times()
    source.time_index(times)
    channels = tuple(sorted(source.channels))
    steps = np.diff(source.times).astype("timedelta64[h]").astype(int)
    if len(steps) == 0 or (steps != steps[0]).any():
        raise ConfigError("the training data must have a uniform time step")
    mean, std = normalisation_stats(source, channels, times)
    return source, times, channels, int(steps[0]), mean, std


def architecture_for(section: TrainSection, channels, grid) -> dict:
    """The card's ``architecture``: the section's (checked when the config was read) on the data's grid."""
    from forecast.errors import SettingError
    from models.architecture import CONFIGS

    base = {"in_channels": len(channels), "out_channels": len(channels), "nlat": grid.nlat, "nlon": grid.nlon,
            "grid": grid.kind, **section.architecture}
    if base.get("latent_correlation") == "auto":  # calibrated after training
        base["latent_correlation"] = 0.0
    try:
        return CONFIGS[section.model].from_dict(base).to_dict()
    except SettingError as error:  # only what depends on the data is left to fail here
        raise ConfigError(f"architecture of the {section.model} model set on the training data "
                          f"({len(channels)} channels, {grid.nlat}x{grid.nlon}): {error}") from None


def train_one(config: Config, name: str, k: int, local_rank: int = 0) -> Path:
    """Train checkpoint ``k`` of model set ``name`` on ``train.device`` (``local_rank`` picks the GPU);
    under DDP only rank 0 writes it."""
    from models.card import ModelCard
    from models.checkpoint import build_model, save_checkpoint
    from models.train import TrainSettings, VAELoss, rank_and_world, seeded_init, train

    section = model_sets(config)[name]
    source, times, channels, dt_hours, mean, std = training_data(config, section)
    grid = source.grid
    seed = checkpoint_seed(section.seed, k)
    settings = library_settings(TrainSettings, section)
    loss = library_settings(VAELoss, section.vae_loss) if section.model == "vae" else None
    training = {"period": [str(times[0]), str(times[-1])], **asdict(settings)}
    if loss is not None:
        training["loss"] = {"name": "fair CRPS + beta KL", **asdict(loss)}
    if section.autocast_bf16:
        training["autocast_bf16"] = True
    card = ModelCard(family=section.model, channels=channels, grid=grid.to_dict(), dt_hours=dt_hours, mean=mean, std=std,
                     architecture=architecture_for(section, channels, grid), name=f"{name}-{k}", seed=seed,
                     training=training)
    model = seeded_init(lambda: build_model(card), seed)
    data = source.fields(times, channels)
    data = ((data - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)
    began = time.perf_counter()
    device = training_device(section, local_rank)
    losses = train(model, data, settings, seed, grid.area_weights(), loss_fn=loss, device=device,
                   autocast_bf16=section.autocast_bf16)
    record = {**card.training, "final_loss": float(np.mean(losses[-50:])), "seconds": round(time.perf_counter() - began, 1),
              "loss_curve": _curve(losses)}
    architecture = card.architecture
    if section.model == "vae" and section.architecture.get("latent_correlation") == "auto":
        rho, scores = calibrate_noise_memory(config, section, model)
        architecture = {**architecture, "latent_correlation": rho}
        record["latent_correlation_calibration"] = {"fair_crps": scores, "chosen": rho}
    model.card = ModelCard(**{**asdict(card), "architecture": architecture, "training": record})
    model.network.config = type(model.network.config).from_dict(architecture)
    path = checkpoint_dirs(config, [name])[k]
    if rank_and_world()[0] == 0:
        save_checkpoint(model, path)
        log.info("train: %s final loss %.5f in %.0f s", path.name, record["final_loss"], record["seconds"])
    return path


def _curve(losses: list[float], points: int = 100) -> list[float]:
    """The loss curve as at most ``points`` means over equal runs of steps."""
    stride = max(1, len(losses) // points)
    return [float(np.mean(losses[i:i + stride])) for i in range(0, len(losses), stride)]


def calibrate_noise_memory(config: Config, section: TrainSection, model) -> tuple[float, dict]:
    """Choose the VAE's ``latent_correlation`` on start dates inside its training period (see
    ``ensembles.calibration``): every 4 days, leaving room for the ensemble's longest lead."""
    from ensembles.calibration import calibrate_latent_correlation
    from forecast.data import open_source

    lead_steps = max(1, config.ensemble.lead_hours // model.card.dt_hours)
    times = section.period.times()
    last = times[-1] - np.timedelta64(config.ensemble.lead_hours, "h")
    init_times = np.arange(times[0], last + np.timedelta64(1, "s"), np.timedelta64(96, "h"))[-6:]
    if len(init_times) == 0:
        raise ConfigError("the training period is too short to calibrate latent_correlation for the ensemble's lead")
    analyses = open_source(config.paths.resolve("analysis"), name="analyses")
    truth = open_source(config.paths.resolve("nature"), name="nature run")
    rho, scores = calibrate_latent_correlation(model, analyses, truth, init_times, lead_steps)
    log.info("train: latent_correlation %.2f chosen on %d training-period start dates", rho, len(init_times))
    return rho, scores

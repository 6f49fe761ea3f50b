"""Every setting of a :class:`workflows.config.Config` checked at once, when the file is read.

``workflows.config`` checks each value's type; this module checks what a type cannot say (a positive
length scale, a device that exists, a date that parses), so that a bad setting is refused with a
``ConfigError`` naming its key before any command reads data or writes a file. The library raises its
own ``InputError`` for the same problems later, but without the key.
"""

from __future__ import annotations

import re

from workflows.config import Config, ConfigError, EnsembleSection, TrainSection, parse_time

DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
LAST_CYCLE_ENDS = ("t", "t+6h")
MODEL_FAMILIES = ("sfno", "vae")


def validate(config: Config) -> None:
    """Raise a ``ConfigError`` naming the first setting of ``config`` that cannot be used."""
    for key in ("workdir", "nature", "analysis", "checkpoints", "store", "scores", "experiments"):
        if not str(getattr(config.paths, key)).strip():
            raise ConfigError(f"paths.{key} is empty; give a path or leave the key out for the default")
    _planet(config)
    for where, section in {"train": config.train, **{f"extra_models.{k}": v for k, v in config.extra_models.items()}}.items():
        _train(section, where)
    _positive(config.skill.lead_hours, "skill.lead_hours")
    config.skill.init_times.times("skill.init_times")
    sections = {"ensemble": config.ensemble, **{f"experiments.{k}": v for k, v in config.experiments.items()}}
    for where, section in sections.items():
        _ensemble(section, where)
    _at_least(config.score.workers, 0, "score.workers")


def _positive(value, where: str) -> None:
    if not value > 0:
        raise ConfigError(f"{where} must be positive, got {value}")


def _at_least(value, low, where: str) -> None:
    if not value >= low:
        raise ConfigError(f"{where} must be at least {low}, got {value}")


def _planet(config: Config) -> None:
    p = config.planet
    parse_time(p.start, "planet.start")
    _positive(p.days, "planet.days")
    _at_least(p.spinup_days, 0, "planet.spinup_days")
    if not p.settings:
        return
    from forecast.data.planet import PlanetConfig
    from workflows.config import build

    build(PlanetConfig, p.settings, "planet.settings")  # unknown keys and wrong types, named
    for key in ("nlat", "nlon", "solver_nlat", "solver_nlon", "truncation", "output_hours", "solver_dt"):
        if key in p.settings:
            _positive(p.settings[key], f"planet.settings.{key}")
    for k, mountain in enumerate(p.settings.get("mountains", ())):
        if not (isinstance(mountain, (list, tuple)) and len(mountain) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mountain)):
            raise ConfigError(f"planet.settings.mountains[{k}] must be [latitude, longitude, height_m, width_deg], "
                              f"got {mountain!r}")
    band = p.settings.get("stirring_band")
    if band is not None and not (len(band) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in band)
                                 and 0 < band[0] <= band[1]):
        raise ConfigError(f"planet.settings.stirring_band must be two wavenumbers [low, high], got {list(band)}")


def _train(t: TrainSection, where: str) -> None:
    if t.model not in MODEL_FAMILIES:
        raise ConfigError(f"{where}.model must be one of {MODEL_FAMILIES}, got {t.model!r}")
    for key in ("checkpoints", "steps", "batch_size", "rollout_steps"):
        _at_least(getattr(t, key), 1, f"{where}.{key}")
    _positive(t.learning_rate, f"{where}.learning_rate")
    _at_least(t.processes, 0, f"{where}.processes")
    t.period.times(f"{where}.period")


def _ensemble(e: EnsembleSection, where: str) -> None:
    _at_least(e.lead_hours, 0, f"{where}.lead_hours")
    _at_least(e.members_per_checkpoint, 0, f"{where}.members_per_checkpoint")
    b = e.batch_size
    if b != "auto" and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
        raise ConfigError(f"{where}.batch_size must be a positive integer or 'auto', got {b!r}")
    if not DEVICE.match(str(e.device)):
        raise ConfigError(f"{where}.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {e.device!r}")
    _at_least(e.writer_threads, 1, f"{where}.writer_threads")
    e.init_times.times(f"{where}.init_times")
    p, key = e.perturbation, f"{where}.perturbation"
    from ensembles.engine import METHODS

    if p.method not in METHODS:
        raise ConfigError(f"{key}.method must be one of {METHODS}, got {p.method!r}")
    if p.method == "bred_vector":
        _at_least(p.cycles, 1, f"{key}.cycles")
    if p.method != "none":
        _positive(p.length_scale_km, f"{key}.length_scale_km")
    if isinstance(p.amplitude_factor, (int, float)):
        _at_least(p.amplitude_factor, 0, f"{key}.amplitude_factor")
    for channel, value in p.amplitude.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ConfigError(f"{key}.amplitude.{channel} must be a non-negative number, got {value!r}")
    if not 0 <= p.boundary_latitude < 90:
        raise ConfigError(f"{key}.boundary_latitude must lie in [0, 90) degrees, got {p.boundary_latitude}")
    if p.last_cycle_ends not in LAST_CYCLE_ENDS:
        raise ConfigError(f"{key}.last_cycle_ends must be one of {LAST_CYCLE_ENDS}, got {p.last_cycle_ends!r}")
    s = e.statistics
    if any(isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1 for q in s.quantiles):
        raise ConfigError(f"{where}.statistics.quantiles must be numbers in [0, 1], got {list(s.quantiles)}")
    _at_least(s.tail_members, 0, f"{where}.statistics.tail_members")
    if not 0 <= e.compression.zstd_level <= 22:
        raise ConfigError(f"{where}.compression.zstd_level must lie in 0..22, got {e.compression.zstd_level}")

"""YAML configuration -> frozen, typed dataclasses. Only ``workflows`` reads configuration files.

Unknown keys are errors that name the key and the closest valid one; values are checked against the
field's type. ``key=value`` overrides on the command line use dotted paths (``ensemble.batch_size=4``)
and YAML syntax for the value. Relative paths are taken relative to the current directory.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import numpy as np

from ensembles.plan import PerturbationSettings
from ensembles.stats import StatisticsSpec
from forecast.data.planet_config import PlanetConfig
from forecast.errors import InputError, SettingError
from forecast.settings import at_least, is_number, one_of, positive
from models.architecture import check_architecture
from models.train_settings import TrainSettings, VAELossSettings
from workflows.cluster import LOCAL_WORKER_MEMORY, SlurmOptions
from workflows.slurm import check_options


class ConfigError(InputError):
    """A configuration that cannot be used; the message names the key."""


DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
MODEL_FAMILIES = ("sfno", "vae")


@dataclass(frozen=True)
class TimeRange:
    """Start times from ``start`` to ``stop`` (inclusive) every ``every_hours``."""

    start: str = "2000-01-01T00"
    stop: str = "2000-01-01T00"
    every_hours: int = 24

    def __post_init__(self):
        start, stop = _time(self.start, "start"), _time(self.stop, "stop")
        if stop < start:
            raise SettingError("", f"stops ({self.stop}) before it starts ({self.start})")
        positive(self.every_hours, "every_hours")

    def times(self) -> np.ndarray:
        """The start times (``datetime64[ns]``)."""
        start, stop = parse_time(self.start, "start"), parse_time(self.stop, "stop")
        step = np.timedelta64(self.every_hours, "h")
        return np.arange(start, stop + np.timedelta64(1, "s"), step).astype("datetime64[ns]")


def _time(text: str, key: str) -> np.datetime64:
    """:func:`parse_time` for a settings class: a ``SettingError`` naming ``key`` and the text."""
    try:
        return parse_time(text, key)
    except ConfigError:
        raise SettingError(f"{key}={text!r}", "is not a date and time such as 2000-01-22T00") from None


def parse_time(text: str, where: str) -> np.datetime64:
    """``text`` (ISO 8601, e.g. ``2000-01-22T00``) as ``datetime64[ns]``; a ``ConfigError`` naming ``where``.

    >>> str(parse_time("2000-01-22T06", "planet.start"))
    '2000-01-22T06:00:00.000000000'
    """
    try:
        value = np.datetime64(str(text), "ns")
    except ValueError:
        value = np.datetime64("NaT")
    if np.isnat(value):
        raise ConfigError(f"{where}={text!r} is not a date and time such as 2000-01-22T00")
    return value


@dataclass(frozen=True)
class Paths:
    workdir: str = "forecast-output"
    nature: str = "{workdir}/planet/nature.zarr"
    analysis: str = "{workdir}/planet/analysis.zarr"
    checkpoints: str = "{workdir}/checkpoints"
    store: str = "{workdir}/ensemble.zarr"
    scores: str = "{workdir}/scores"
    experiments: str = "{workdir}/experiments"

    def __post_init__(self):
        for f in fields(self):
            if not str(getattr(self, f.name)).strip():
                raise SettingError(f.name, "is empty; give a path or leave the key out for the default")

    def resolve(self, name: str) -> Path:
        """The path ``name`` with ``{workdir}`` replaced; other braces are part of the path."""
        return Path(expand_workdir(getattr(self, name), self.workdir))


def expand_workdir(path: str, workdir: str) -> str:
    """``path`` with every ``{workdir}`` replaced by ``workdir`` (not ``str.format``: a path may hold braces).

    >>> expand_workdir("{workdir}/runs/{x}", "/data")
    '/data/runs/{x}'
    """
    return path.replace("{workdir}", workdir)


@dataclass(frozen=True)
class PlanetSection:
    start: str = "2000-01-01T00"
    days: float = 330.0
    spinup_days: float = 60.0
    seed: int = 0
    analysis_seed: int = 1
    settings: PlanetConfig = field(default_factory=PlanetConfig)  # the planet's own settings class

    def __post_init__(self):
        _time(self.start, "start")
        positive(self.days, "days")
        at_least(self.spinup_days, 0, "spinup_days")


VAELossSection = VAELossSettings  # train.vae_loss: the loss's own settings class


@dataclass(frozen=True)
class TrainSection(TrainSettings):
    """One set of checkpoints: ``checkpoints`` models of one family, checkpoint ``k`` trained with
    ``forecast.hashing.checkpoint_seed(seed, k)``. The loop's settings are ``models.train_settings.TrainSettings``
    (checked there; the defaults of ``steps`` and ``learning_rate`` are the demo's); the keys after them are
    the workflow's."""

    steps: int = 1000
    learning_rate: float = 5e-3
    model: str = "sfno"
    checkpoints: int = 2
    seed: int = 0
    period: TimeRange = field(default_factory=lambda: TimeRange("2000-01-01T00", "2000-09-30T18", 6))
    architecture: dict = field(default_factory=dict)  # models.architecture.SFNOConfig or VAEConfig fields
    processes: int = 0  # 0: one per checkpoint, at most one per core
    device: str = "auto"  # as ensemble.device: a GPU when one is visible, else the CPU
    autocast_bf16: bool = False  # bf16 autocast of the network (spectral transforms stay float32)
    deterministic: bool = True  # on a GPU: deterministic kernels, no TF32 (models.precision)
    backend: str = "auto"  # process group under srun/torchrun: "auto" (nccl on GPUs, else gloo), "nccl", "gloo"
    vae_loss: VAELossSettings = field(default_factory=VAELossSettings)

    def __post_init__(self):
        super().__post_init__()  # the loop's settings
        one_of(self.model, MODEL_FAMILIES, "model")
        check_architecture(self.model, self.architecture)  # the data's channels and grid are added when training
        at_least(self.checkpoints, 0, "checkpoints")  # 0: train only the extra models
        at_least(self.processes, 0, "processes")


@dataclass(frozen=True)
class SkillSection:
    lead_hours: int = 48
    init_times: TimeRange = field(default_factory=lambda: TimeRange("2000-03-01T00", "2000-09-20T00", 36))

    def __post_init__(self):
        positive(self.lead_hours, "lead_hours")


@dataclass(frozen=True)
class PerturbationSection(PerturbationSettings):
    """``ensemble.perturbation``: the engine's :class:`ensembles.plan.PerturbationSettings` (checked there)
    plus where the amplitudes come from when ``amplitude`` names none: ``amplitude_factor`` times each
    checkpoint's RMSE at ``skill.lead_hours``, or ``"auto"``: the factor calibrated on training-period dates."""

    amplitude_factor: float | str = 0.35

    def __post_init__(self):
        super().__post_init__()
        factor = self.amplitude_factor
        if not (factor == "auto" or is_number(factor)):
            raise SettingError("amplitude_factor", f"must be a number or 'auto', got {factor!r}")
        if factor != "auto":
            at_least(factor, 0, "amplitude_factor")


@dataclass(frozen=True)
class StatisticsSection(StatisticsSpec):
    """``ensemble.statistics``: the engine's :class:`ensembles.stats.StatisticsSpec` (checked there) plus
    ``only``: channels kept as statistics alone (no member fields). No ``channels``: no statistics."""

    channels: tuple = ()
    only: tuple = ()

    def __post_init__(self):
        if any(not is_number(q) or not 0 <= q <= 1 for q in self.quantiles):  # before the spec converts them
            raise SettingError("quantiles", f"must be numbers in [0, 1], got {list(self.quantiles)}")
        for channel, values in self.thresholds.items():
            values = values if isinstance(values, (list, tuple)) else [values]
            if not all(map(is_number, values)):
                raise SettingError(f"thresholds.{channel}", f"must be a list of numbers, got {values!r}")
        object.__setattr__(self, "thresholds", {c: v if isinstance(v, (list, tuple)) else [v]
                                                for c, v in self.thresholds.items()})
        super().__post_init__()
        object.__setattr__(self, "only", tuple(self.only))


@dataclass(frozen=True)
class CompressionSection:
    """``keepbits``: channel -> float32 mantissa bits kept (BitRound, lossy), or ``auto``: per stored
    channel, the fewest bits holding ``information`` of the analyses' real information (``forecast.bitinfo``),
    chosen once when the store is created and recorded in it. ``zstd_level``: Zstandard level, 0..22."""

    keepbits: dict | str = field(default_factory=dict)
    information: float = 0.99
    zstd_level: int = 3

    def __post_init__(self):
        if not (isinstance(self.keepbits, dict) or self.keepbits == "auto"):
            raise SettingError("keepbits", f"must be a mapping of channels to bits or 'auto', got {self.keepbits!r}")
        if not 0 < self.information <= 1:
            raise SettingError("information", f"must be in (0, 1], got {self.information}")
        if not 0 <= self.zstd_level <= 22:
            raise SettingError("zstd_level", f"must lie in 0..22, got {self.zstd_level}")


MEMORY_SIZE = re.compile(r"^\s*(\d+\.?\d*|\.\d+)(e[+-]?\d+)?\s*([kmgtp]i?)?b?\s*$", re.IGNORECASE)


def _memory_size(text: str, key: str) -> None:
    """Refuse ``text`` unless it reads as a size Dask takes (``4GiB``, ``500MB``, ``auto``); no dask import
    (``forecast --help`` builds the defaults).

    >>> _memory_size("lots", "worker_memory")
    Traceback (most recent call last):
    forecast.errors.SettingError: worker_memory must be a size such as 4GiB or 500MB, got 'lots'
    """
    if text.strip().lower() != "auto" and not MEMORY_SIZE.match(text):
        raise SettingError(key, f"must be a size such as 4GiB or 500MB, got {text!r}")


def library_settings(cls, section, **changes):
    """The library's settings ``cls`` from a config ``section`` that is ``cls`` or a subclass of it adding
    keys only the workflows read (``amplitude_factor``, ``only``), with ``changes`` (e.g. the amplitudes
    found from the checkpoints' skill): the one step from a config section to a library object.

    >>> section = PerturbationSection(cycles=2, amplitude_factor=0.5)
    >>> library_settings(PerturbationSettings, section, amplitude={"z500": 40.0})
    PerturbationSettings(method='bred_vector', channels=('z500',), amplitude={'z500': 40.0}, length_scale_km=500.0, cycles=2, boundary_latitude=20.0, last_cycle_ends='t')
    """
    return cls(**{**{f.name: getattr(section, f.name) for f in fields(cls)}, **changes})


@dataclass(frozen=True)
class EnsembleSection:
    models: tuple = ()  # names of model sets (train.model, keys of extra_models); default: the train set
    init_times: TimeRange = field(default_factory=lambda: TimeRange("2000-10-05T00", "2000-11-10T00", 72))
    lead_hours: int = 120
    members_per_checkpoint: int = 8
    control: bool = True
    batch_size: int | str = 8  # or "auto": as many as fit on the GPU (8 on a CPU)
    seed: int = 0
    device: str = "auto"  # "auto": the GPU LOCAL_RANK mod the GPUs visible, else the CPU; or "cuda", "cpu"
    autocast_bf16: bool = False
    deterministic: bool = True  # on a GPU: bit-identical regeneration; false: TF32 and autotuning (faster)
    writer_threads: int = 2
    perturbation: PerturbationSection = field(default_factory=PerturbationSection)
    statistics: StatisticsSection = field(default_factory=StatisticsSection)
    compression: CompressionSection = field(default_factory=CompressionSection)

    def __post_init__(self):  # perturbation, statistics and compression checked themselves when built
        at_least(self.lead_hours, 0, "lead_hours")
        at_least(self.members_per_checkpoint, 0, "members_per_checkpoint")
        b = self.batch_size
        if b != "auto" and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise SettingError("batch_size", f"must be a positive integer or 'auto', got {b!r}")
        if not DEVICE.match(str(self.device)):
            raise SettingError("device", f"must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        at_least(self.writer_threads, 1, "writer_threads")


@dataclass(frozen=True)
class DataSection:
    regrid: bool = False  # regrid sources on another grid to the model grid (else they are refused)


@dataclass(frozen=True)
class ScoreSection:
    """How a store is scored (``forecast demo``, ``forecast nightly``, and ``forecast score --config``, whose
    flags override these): the keyword arguments of :func:`workflows.recipes.score_store`."""

    workers: int = 0  # 0: one per core
    scheduler: str = ""  # address of a running dask scheduler; empty: start a local cluster
    worker_memory: str = LOCAL_WORKER_MEMORY  # memory limit per local Dask worker
    chunk_mb: float = 64  # Dask chunk size: all members x a tile
    regions: tuple = ()  # extra boxes "NAME:SOUTH:NORTH:WEST:EAST" (degrees) beside the standard four
    allow_partial: bool = False  # score the members finished at every start date of an unfinished store
    slurm: SlurmOptions = field(default_factory=SlurmOptions)  # Dask workers in Slurm jobs when slurm.jobs > 0

    def __post_init__(self):
        at_least(self.workers, 0, "workers")
        positive(self.chunk_mb, "chunk_mb")
        if not self.worker_memory.strip():
            raise SettingError("worker_memory", "is empty; give a size such as 4GiB or leave the key out")
        _memory_size(self.worker_memory, "worker_memory")
        object.__setattr__(self, "regions", tuple(self.regions))
        if self.regions:  # only then: forecast.verify imports xarray
            from forecast.errors import InputError
            from forecast.verify import Region

            for i, text in enumerate(self.regions):
                try:
                    Region.parse(str(text))
                except InputError as error:
                    raise SettingError(f"regions[{i}]", f"is unusable: {error}") from None

    def keywords(self) -> dict:
        """The keyword arguments of :func:`workflows.recipes.score_store` these settings give."""
        from forecast.verify import Region

        return {"workers": self.workers, "scheduler": self.scheduler, "worker_memory": self.worker_memory,
                "chunk_mb": self.chunk_mb, "regions": [Region.parse(str(r)) for r in self.regions],
                "allow_partial": self.allow_partial, "slurm": self.slurm if self.slurm.jobs else None}

    def arguments(self) -> list[str]:
        """The same settings as ``forecast score`` options (for the score job ``forecast nightly`` submits);
        ``--workers`` only when set (else the job's allocated cores).

        >>> ScoreSection(chunk_mb=32, regions=("europe:35:70:-10:30",)).arguments()
        ['--chunk-mb', '32.0', '--worker-memory', '1.5GiB', '--region', 'europe:35:70:-10:30']
        """
        out = (["--workers", str(self.workers)] if self.workers else []) + (["--scheduler", self.scheduler] if self.scheduler else [])
        out += ["--chunk-mb", str(float(self.chunk_mb)), "--worker-memory", self.worker_memory]
        out += [item for region in self.regions for item in ("--region", str(region))]
        out += ["--allow-partial"] if self.allow_partial else []
        o = self.slurm
        if o.jobs:
            out += ["--slurm", str(o.jobs), "--slurm-cores", str(o.cores), "--slurm-processes", str(o.processes),
                    "--slurm-memory", o.memory, "--slurm-walltime", o.walltime]
            out += [item for name in ("queue", "account", "interface") if getattr(o, name)
                    for item in (f"--slurm-{name}", getattr(o, name))]
            out += [f"--slurm-job-extra={option}" for option in o.job_extra]
        return out


@dataclass(frozen=True)
class SlurmSection:
    """sbatch options for the jobs ``forecast nightly`` submits in ``slurm`` mode. Each is one option
    (``--partition=gpu``), passed to ``sbatch`` as an argument, never through a shell."""

    ensemble: tuple = ()  # e.g. ["--nodes=2", "--ntasks-per-node=4", "--time=03:00:00"]
    score: tuple = ()  # e.g. ["--cpus-per-task=32"]
    scripts: str = ""  # folder with ensemble.sbatch and score.sbatch; empty: the repository's slurm/

    def __post_init__(self):
        object.__setattr__(self, "ensemble", tuple(check_options(self.ensemble, "ensemble")))
        object.__setattr__(self, "score", tuple(check_options(self.score, "score")))


NIGHTLY_MODES = ("local", "slurm")


@dataclass(frozen=True)
class NightlySection:
    """The cron cycle (``forecast nightly``): one store and one score folder per cycle under ``root``."""

    root: str = "{workdir}/nightly"
    cycle_hours: tuple = (0,)  # hours (UTC) at which cycles start
    catch_up: int = 0  # earlier cycles also completed when missing or partial
    mode: str = "local"  # "local": run and score here; "slurm": submit the jobs
    truth: str = ""  # verifying data; empty: paths.nature
    keep_cycles: int = 7  # newest cycles whose stores are kept; older stores are deleted, scores kept
    keep_logs: int = 60  # newest log files kept
    slurm: SlurmSection = field(default_factory=SlurmSection)

    def __post_init__(self):
        one_of(self.mode, NIGHTLY_MODES, "mode")
        hours = self.cycle_hours
        if not hours or any(not isinstance(h, int) or isinstance(h, bool) or not 0 <= h <= 23 for h in hours):
            raise SettingError("cycle_hours", f"must be hours from 0 to 23, got {list(hours)}")
        if self.catch_up < 0:
            raise SettingError("catch_up", f"must not be negative, got {self.catch_up}")
        for key in ("keep_cycles", "keep_logs"):  # the current cycle and the current log are always kept
            at_least(getattr(self, key), 1, key)


@dataclass(frozen=True)
class SizingSection:
    """What ``--dry-run`` sizes a run with before its checkpoints exist (a checkpoint's card, once there,
    wins). Empty ``channels`` and zero ``nlat``/``nlon``: the planet's."""

    channels: tuple = ()  # the model's channels, in order
    nlat: int = 0  # the model grid (equiangular, poles included)
    nlon: int = 0
    dt_hours: int = 6  # the model's time step
    seconds_per_member_step: float = 0.29  # one H100, TF32, HENS-size SFNO (PERF.md, 2026-11-26)
    assumed_keepbits: int = 10  # mantissa bits assumed for keepbits: auto before the store records them


@dataclass(frozen=True)
class Config:
    """The whole run. ``extra_models`` are model sets trained beside ``train`` (e.g. a VAE next to the
    SFNO checkpoints); ``experiments`` are further ensembles, each the ``ensemble`` section with some keys
    changed, run into ``paths.experiments/<name>.zarr`` and compared in the report."""

    paths: Paths = field(default_factory=Paths)
    data: DataSection = field(default_factory=DataSection)
    planet: PlanetSection = field(default_factory=PlanetSection)
    train: TrainSection = field(default_factory=TrainSection)
    extra_models: dict[str, TrainSection] = field(default_factory=dict)
    skill: SkillSection = field(default_factory=SkillSection)
    ensemble: EnsembleSection = field(default_factory=EnsembleSection)
    experiments: dict[str, EnsembleSection] = field(default_factory=dict)
    score: ScoreSection = field(default_factory=ScoreSection)
    nightly: NightlySection = field(default_factory=NightlySection)
    umask: str | int = "027"  # octal; files of runs and nightly cycles: "027" group-readable, "022" all-readable
    sizing: SizingSection = field(default_factory=SizingSection)

    def __post_init__(self):
        umask_bits(self.umask)  # a bad value is named before anything runs


def umask_bits(value) -> int:
    """The ``umask`` setting as permission bits: an octal string (``"022"``) or the number YAML reads
    from an unquoted ``022`` (octal 18).

    >>> oct(umask_bits("022")), oct(umask_bits(0o27))
    ('0o22', '0o27')
    """
    try:
        bits = int(value, 8) if isinstance(value, str) else value
    except ValueError:
        bits = None
    if isinstance(bits, bool) or not isinstance(bits, int) or not 0 <= bits <= 0o777:
        raise ConfigError(f"umask must be octal permission bits from 000 to 777 (e.g. \"027\"), got {value!r}")
    return bits


# -- building -------------------------------------------------------------------------------------
def _closest(key: str, valid) -> str:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.0)
    return f"; did you mean '{match[0]}'?" if match else ""


def _convert(value, annotation, where: str):
    origin = typing.get_origin(annotation)
    if isinstance(annotation, type) and is_dataclass(annotation):
        return build(annotation, value, where)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return "" if value is None else str(value)  # `key=` (empty) is the empty string, not 'None'
    if annotation is tuple or origin is tuple:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(value)
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2 and isinstance(args[1], type) and is_dataclass(args[1]):
            return {str(k): build(args[1], v, f"{where}.{k}") for k, v in value.items()}
        return dict(value)
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def build(cls, data, where: str = "config"):
    """An instance of dataclass ``cls`` from a mapping, with clear errors for unknown keys and bad types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown config key '{where}.{key}'{_closest(str(key), names)}".replace("'config.", "'"))
    values = {k: _convert(v, hints[k], f"{where}.{k}".replace("config.", "", 1)) for k, v in data.items()}
    try:
        return cls(**values)  # the class checks its own fields (forecast.settings)
    except ConfigError:
        raise
    except SettingError as error:  # a field the class refused: named by its key path
        raise ConfigError(f"{_path(where, error.key)} {error.problem}") from None
    except InputError as error:
        raise ConfigError(f"{where}: {error}") from None


def _path(where: str, key: str) -> str:
    """The key path of ``key`` in the section at ``where`` (an empty key: the section itself)."""
    return key if where == "config" else f"{where}.{key}" if key else where


def load_config(path: str | os.PathLike | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML file (``None``: the defaults) and apply ``key=value`` overrides."""
    import yaml

    data = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (yaml.YAMLError, ValueError) as error:  # ValueError: a date YAML cannot build (2000-13-01)
            raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(error).split())}") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path} cannot be read: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections (paths:, ensemble:, ...), "
                              f"got a {_kind(data)}")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        target = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ConfigError(f"override {key!r}: '{part}' is not a section")
        try:
            target[parts[-1]] = yaml.safe_load(text)
        except (yaml.YAMLError, ValueError) as error:
            raise ConfigError(f"override {key}: {text!r} is not a YAML value ({' '.join(str(error).split())})") from None
    experiments = data.get("experiments") or {}
    if not isinstance(experiments, dict):
        raise ConfigError(f"experiments must be a mapping of names to ensemble settings, got a {_kind(experiments)}")
    for name, changes in experiments.items():
        if changes is not None and not isinstance(changes, dict):
            raise ConfigError(f"experiments.{name} must be a mapping of ensemble keys to change, got a {_kind(changes)}")
    base = data.get("ensemble") or {}
    if not isinstance(base, dict):
        raise ConfigError(f"config.ensemble must be a mapping, got a {_kind(base)}")
    data["experiments"] = {str(name): _merged(base, changes or {}) for name, changes in experiments.items()}
    return build(Config, data)  # every section checks itself (forecast.settings), named by its key path


def _kind(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value),
                                                                                             type(value).__name__)


def _merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied recursively (mappings merge, other values replace)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def with_workdir(config: Config, workdir: str) -> Config:
    return replace(config, paths=replace(config.paths, workdir=workdir))


def bundled_config(name: str) -> Path:
    """Path of a config shipped with the package (``demo``, ``tiny``)."""
    path = Path(__file__).parent / "configs" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no bundled config named {name!r}")
    return path


def ensemble_section(config: Config, experiment: str | None = None):
    """The ``ensemble`` section, or the named experiment's version of it."""
    if experiment is None:
        return config.ensemble
    if experiment not in config.experiments:
        raise ConfigError(f"unknown experiment {experiment!r}; the config defines {sorted(config.experiments)}")
    return config.experiments[experiment]


def store_path(config: Config, experiment: str | None = None) -> Path:
    """The store of the ensemble, or of the named experiment (``paths.experiments/NAME.zarr``)."""
    if experiment is None:
        return config.paths.resolve("store")
    return config.paths.resolve("experiments") / f"{experiment}.zarr"

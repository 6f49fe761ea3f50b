"""``--dry-run``: what a command would do, without loading weights, reading field data or writing anything.

One mechanism for ``run``, ``train``, ``skill`` and ``nightly``: the resolved config (every default filled
in, paths with the workdir substituted), the inputs the command needs and which of them are missing, and
for ``run`` and ``nightly`` the size of the ensemble: member plan, store layout, bytes per member-step,
terabytes and GPU-hours per start date. The model's channels, grid and step come from the first
checkpoint's card when it exists, else from the config's ``sizing`` section, else from the planet. Only
small metadata files are read (the config, a card, an existing store's ``zarr.json``); torch is not imported
unless the planet's settings are needed.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from workflows.config import Config, SizingSection
from workflows.training import checkpoint_dirs, model_sets

COMMANDS = ("run", "train", "skill", "nightly")
SECONDS_DEFAULT_SOURCE = ("default from shared/PERF.md (2026-11-26): HENS-size SFNO (721x1440, 74 channels, embed 620, "
                          "8 blocks) on one H100, TF32, batch 1: 0.298 s per member-step")
CARD_FILE = "card.json"  # models.checkpoint.CARD (not imported here: that module imports torch)
SKILL_FILE = "skill.json"  # ensembles.skill.SKILL_FILE
BITROUND_KEPT = 9  # sign and exponent bits BitRound always keeps


def resolved_config(config: Config) -> dict:
    """The config as plain data with every default filled in and ``{workdir}`` substituted in the paths."""
    data = _plain(asdict(config))
    data["paths"] = {name: (str(config.paths.resolve(name)) if name != "workdir" else config.paths.workdir)
                     for name in data["paths"]}
    data["nightly"]["root"] = config.nightly.root.format(workdir=config.paths.workdir)
    return data


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# -- inputs -----------------------------------------------------------------------------------------
def _exists(path: Path) -> bool:
    return "://" in str(path) or path.exists()


def missing_inputs(config: Config, command: str, experiment: str | None = None) -> list[str]:
    """One line per input ``command`` needs that does not exist yet (nothing is opened)."""
    from workflows.config import ensemble_section

    lines = []
    section = ensemble_section(config, experiment)
    models = list(section.models or [config.train.model]) if command in ("run", "nightly") else list(model_sets(config))
    dirs = checkpoint_dirs(config, models)
    absent = [d for d in dirs if not (d / CARD_FILE).is_file()]
    if absent and command != "train":
        lines.append(f"checkpoints: {len(absent)} of {len(dirs)} missing ({_names(absent)}; `forecast train`, or "
                     "`forecast import-checkpoint` for makani packages)")
    needs = {"train": ["nature"], "skill": ["analysis", "nature"], "run": ["analysis"], "nightly": ["analysis"]}[command]
    for name in needs:
        path = config.paths.resolve(name)
        if not _exists(path):
            lines.append(f"{'analyses' if name == 'analysis' else 'nature run'}: {path} does not exist")
    if command == "nightly":
        truth = Path(config.nightly.truth.format(workdir=config.paths.workdir)) if config.nightly.truth else None
        if truth is not None and not _exists(truth):
            lines.append(f"nightly.truth: {truth} does not exist")
    p = section.perturbation
    if command in ("run", "nightly") and p.method != "none" and not p.amplitude:
        no_skill = [d for d in dirs if not (d / SKILL_FILE).is_file()]
        if no_skill:
            lines.append(f"skill: {len(no_skill)} checkpoint(s) without {SKILL_FILE} for the perturbation amplitude "
                         f"({_names(no_skill)}; `forecast skill`, or set perturbation.amplitude)")
    return lines


def _names(paths: list[Path]) -> str:
    names = [str(p) for p in paths]
    return ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}"


# -- sizing -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSize:
    """The size of one start date of an ensemble run (``run_size``); ``lines()`` says it in words."""

    n_checkpoints: int
    members_per_checkpoint: int
    control: bool
    pairs: int
    members: int
    channels: tuple
    stored: tuple
    statistics_channels: tuple
    nlat: int
    nlon: int
    dt_hours: int
    lead_steps: int
    batch_size: int
    batch_note: str
    lead_chunk: int
    windows: int
    blocks: int  # member blocks per start date (windows split where the checkpoint changes)
    keepbits: dict
    keepbits_note: str
    statistics_fields: int  # statistics arrays per lead, grid point and start date
    thresholds: int  # exceedance thresholds over all statistics channels
    tail_members: int
    seconds_per_member_step: float
    seconds_source: str
    breeding_member_steps: int
    model_source: str

    @property
    def leads(self) -> int:
        return self.lead_steps + 1

    @property
    def field_bytes(self) -> int:
        return self.nlat * self.nlon * 4

    def member_step_bytes(self, statistics_only: bool, compressed: bool) -> float:
        """Bytes of one member at one lead: all channels or the stored ones, float32 or with BitRound
        (``(sign + exponent + kept mantissa bits) / 32`` of float32, before zstd)."""
        names = self.stored if statistics_only else self.channels
        fraction = [(BITROUND_KEPT + self.keepbits[c]) / 32 if compressed and c in self.keepbits else 1.0 for c in names]
        return sum(fraction) * self.field_bytes

    def start_date_bytes(self, statistics_only: bool, compressed: bool) -> float:
        statistics = self.statistics_fields * self.leads * self.field_bytes if statistics_only else 0
        return self.member_step_bytes(statistics_only, compressed) * self.members * self.leads + statistics

    @property
    def shards_per_variable(self) -> int:
        return self.windows * math.ceil(self.leads / self.lead_chunk)

    @property
    def files_per_start_date(self) -> int:
        return len(self.stored) * self.shards_per_variable + self.statistics_fields * math.ceil(self.leads / self.lead_chunk)

    @property
    def gpu_hours(self) -> tuple[float, float]:
        """(rollout, bred-vector breeding) GPU-hours per start date."""
        rollout = self.members * self.lead_steps * self.seconds_per_member_step / 3600
        return rollout, self.breeding_member_steps * self.seconds_per_member_step / 3600

    @property
    def accumulator_bytes(self) -> int:
        """Host memory of one process's streaming-statistics accumulator (``ensembles.stats``): float64
        mean and sum of squares, float32 minimum and maximum, int64 exceedance counts, float32 tails."""
        per_point = len(self.statistics_channels) * (8 + 8 + 4 + 4 + 2 * 4 * self.tail_members) + 8 * self.thresholds
        return per_point * self.leads * self.nlat * self.nlon

    def lines(self) -> list[str]:
        rollout, breeding = self.gpu_hours
        out = [
            f"model: {len(self.channels)} channels on {self.nlat}x{self.nlon}, step {self.dt_hours} h ({self.model_source})",
            f"member plan: {self.n_checkpoints} checkpoint(s) x {self.members_per_checkpoint} members"
            + (f" ({self.pairs} +/- pairs in all, {self.pairs // self.n_checkpoints} per checkpoint)" if self.pairs else "")
            + (" + 1 control" if self.control else "") + f" = {self.members:,} members per start date",
            f"leads: {self.leads} (0 to {self.lead_steps * self.dt_hours} h every {self.dt_hours} h)",
            f"channels: {len(self.stored)} with member fields, {len(self.statistics_channels)} with streaming "
            f"statistics ({len(self.channels) - len(self.stored)} of them statistics only)",
            f"store layout: batch {self.batch_size} ({self.batch_note}); shards of {self.batch_size} member(s) x "
            f"{self.lead_chunk} lead(s) x the whole grid; {self.windows:,} member windows; "
            f"{self.shards_per_variable:,} shard files per variable and start date; "
            f"{self.files_per_start_date:,} files per start date",
            f"keep-bits: {self.keepbits_note}",
        ]
        if self.statistics_channels:
            out.append(f"streaming statistics: {self.statistics_fields} arrays per lead and start date; the accumulator "
                       f"holds {decimal_bytes(self.accumulator_bytes)} of host memory per process; the store keeps one "
                       f"accumulator per block ({self.blocks:,} blocks) in statistics_parts: up to "
                       f"{decimal_bytes(self.blocks * self.accumulator_bytes)} per start date before zstd, removed once "
                       "its statistics are final")
        for label, only, packed in (("all channels, float32", False, False),
                                    ("statistics-only applied, float32", True, False),
                                    ("all channels, BitRound", False, True),
                                    ("statistics-only and BitRound", True, True)):
            out.append(f"  {label:34s} {decimal_bytes(self.member_step_bytes(only, packed)):>10s} per member-step  "
                       f"{decimal_bytes(self.start_date_bytes(only, packed)):>10s} per start date")
        out.append("  (BitRound sizes count the sign, exponent and kept mantissa bits of float32; zstd on top usually "
                   "does better: 49% of float32 measured on the demo with keep-bits 12/8/8/8)")
        out.append(f"GPU time per start date: {rollout:,.4g} GPU-hours rollout + {breeding:,.4g} breeding = "
                   f"{rollout + breeding:,.4g} GPU-hours at {self.seconds_per_member_step:g} s per member-step "
                   f"({self.seconds_source})")
        return out


def decimal_bytes(n: float) -> str:
    """``n`` bytes in decimal units (kB to PB).

    >>> decimal_bytes(307_000_000), decimal_bytes(512)
    ('307 MB', '512 B')
    """
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def _model_shape(config: Config, checkpoint: Path):
    card_path = checkpoint / CARD_FILE
    if card_path.is_file():
        from models.card import ModelCard

        card = ModelCard.from_json(card_path.read_text(), source=str(card_path))
        return card.channels, card.model_grid.nlat, card.model_grid.nlon, card.dt_hours, f"card {card_path}"
    s = config.sizing
    if s.channels and s.nlat and s.nlon:
        return tuple(s.channels), s.nlat, s.nlon, s.dt_hours, "config sizing section (no checkpoint card yet)"
    from forecast.data.planet_config import CHANNELS

    planet = config.planet.settings
    return (tuple(s.channels) or CHANNELS, s.nlat or planet.nlat, s.nlon or planet.nlon, planet.output_hours,
            "the planet's settings (no checkpoint card yet)")


def _existing_layout(path: Path) -> dict:
    """The layout and attributes recorded in an existing store's ``zarr.json`` (metadata only)."""
    try:
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        schema = json.loads(attrs["schema"])
        return {"layout": schema["layout"], "attrs": schema.get("attrs", {})}
    except (OSError, KeyError, TypeError, ValueError):
        return {}


def run_size(config: Config, experiment: str | None = None) -> RunSize:
    """The size of one start date of the ensemble (or experiment) ``config`` describes."""
    from ensembles.plan import MemberPlan
    from forecast.store import STATISTICS, shard_leads
    from workflows.config import ensemble_section, store_path

    e = ensemble_section(config, experiment)
    checkpoints = checkpoint_dirs(config, e.models or None)
    channels, nlat, nlon, dt, model_source = _model_shape(config, checkpoints[0])
    plan = MemberPlan(len(checkpoints), e.members_per_checkpoint, control=e.control,
                      perturbation="none" if e.perturbation.method == "none" else "paired")
    existing = _existing_layout(store_path(config, experiment))
    stored = tuple(c for c in channels if c not in e.statistics.only)
    lead_steps = e.lead_hours // dt
    if isinstance(e.batch_size, int):
        batch, batch_note = e.batch_size, "ensemble.batch_size"
    elif existing:
        batch, batch_note = existing["attrs"].get("batch_size", 1), "auto, fixed by the existing store"
    else:
        batch, batch_note = 1, "auto: chosen on the GPU at run time; sized here with 1"
    keepbits = e.compression.keepbits
    if keepbits == "auto":
        recorded = existing.get("layout", {}).get("keepbits")
        if recorded:
            keepbits, note = dict(recorded), f"auto, as recorded in {store_path(config, experiment)}: {recorded}"
        else:
            keepbits = {c: config.sizing.assumed_keepbits for c in channels}
            note = (f"auto (chosen from the analyses when the store is created); assumed "
                    f"{config.sizing.assumed_keepbits} mantissa bits per channel here (sizing.assumed_keepbits)")
    else:
        keepbits = dict(keepbits)
        note = f"{keepbits}" if keepbits else "none (zstd only, lossless)"
    s = e.statistics
    per_channel = len(STATISTICS) + len(s.quantiles)
    statistics_fields = sum(per_channel + len(s.thresholds.get(c, ())) for c in s.channels)
    seconds = config.sizing.seconds_per_member_step
    default = SizingSection().seconds_per_member_step
    source = SECONDS_DEFAULT_SOURCE if seconds == default else "sizing.seconds_per_member_step in the config"
    breeding = (plan.n_perturbations() + plan.n_checkpoints) * e.perturbation.cycles \
        if e.perturbation.method == "bred_vector" else 0
    return RunSize(n_checkpoints=plan.n_checkpoints, members_per_checkpoint=plan.members_per_checkpoint,
                   control=plan.control, pairs=plan.n_perturbations() if plan.perturbation == "paired" else 0,
                   members=plan.size, channels=tuple(channels), stored=stored, statistics_channels=tuple(s.channels),
                   nlat=nlat, nlon=nlon, dt_hours=dt, lead_steps=lead_steps, batch_size=batch, batch_note=batch_note,
                   lead_chunk=shard_leads(batch, len(stored), nlat * nlon, lead_steps + 1),
                   windows=plan.n_windows(batch), blocks=plan.n_blocks(batch), keepbits={c: b for c, b in keepbits.items() if c in channels},
                   keepbits_note=note, statistics_fields=statistics_fields,
                   thresholds=sum(len(s.thresholds.get(c, ())) for c in s.channels), tail_members=s.tail_members, seconds_per_member_step=seconds,
                   seconds_source=source, breeding_member_steps=breeding, model_source=model_source)


def dry_run(config: Config, command: str, experiment: str | None = None) -> str:
    """The text ``forecast COMMAND --dry-run`` prints: resolved config, missing inputs, and the sizing
    for ``run`` and ``nightly`` (one start date; ``nightly`` runs one per cycle)."""
    import yaml

    if command not in COMMANDS:
        raise ValueError(f"--dry-run is for {COMMANDS}, not {command!r}")
    out = [f"# forecast {command} --dry-run: nothing was loaded, read or written", "# resolved config (every default filled in)"]
    out.append(yaml.safe_dump(resolved_config(config), sort_keys=False, default_flow_style=None, width=110).rstrip())
    missing = missing_inputs(config, command, experiment)
    out.append("# inputs")
    out += [f"missing: {line}" for line in missing] or ["all inputs exist (their contents are checked by the real command)"]
    if command == "train":
        dirs = checkpoint_dirs(config, list(model_sets(config)))
        todo = [d for d in dirs if not (d / CARD_FILE).is_file()]
        out.append(f"# plan\ntrain: {len(todo)} of {len(dirs)} checkpoint(s) to train"
                   + (f" ({_names(todo)})" if todo else "") + "; the others exist and are kept")
    if command in ("run", "nightly"):
        size = run_size(config, experiment)
        from workflows.config import ensemble_section

        starts = 1 if command == "nightly" else len(ensemble_section(config, experiment).init_times.times())
        out.append(f"# sizing (per start date; {'one per nightly cycle' if command == 'nightly' else f'{starts} configured'})")
        out += size.lines()
        if starts > 1:
            total = size.start_date_bytes(True, True) * starts
            out.append(f"all {starts} start dates: {decimal_bytes(total)} (statistics-only and BitRound), "
                       f"{sum(size.gpu_hours) * starts:,.4g} GPU-hours")
    return "\n".join(out) + "\n"

"""The ensemble engine: runs blocks of members in batches, checkpoint by checkpoint, into a store.

Checkpoint-major: each checkpoint is loaded once and all of its pending blocks, for every start
date, run before the next checkpoint is loaded. A block (see ``MemberPlan.blocks``) is perturbed,
rolled out and written lead by lead; its checksums and done flags are written last, so a rerun
skips finished blocks and redoes a block that was cut off.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from itertools import groupby

import numpy as np
import torch

from ensembles.perturb import BredVector, SphericalGaussian, non_negative_floor
from ensembles.plan import MemberPlan
from ensembles.seeds import member_generator, member_seed
from forecast.data import DataError, Source
from forecast.rollout import rollout
from forecast.store import Checksums, EnsembleStore, StoreSchema
from models.checkpoint import load_checkpoint, read_card

log = logging.getLogger(__name__)

METHODS = ("bred_vector", "gaussian", "none")


@dataclass(frozen=True)
class PerturbationSettings:
    """How initial states are perturbed. ``amplitude`` (physical units per channel) is the bred vector's
    target amplitude, or the Gaussian noise's standard deviation; channels not named get none."""

    method: str = "bred_vector"
    channels: tuple = ("z500",)
    amplitude: dict = field(default_factory=dict)
    length_scale_km: float = 500.0
    cycles: int = 3
    boundary_latitude: float = 20.0
    last_cycle_ends: str = "t"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"perturbation method must be one of {METHODS}, got {self.method!r}")
        object.__setattr__(self, "channels", tuple(self.channels))


@dataclass
class EnsembleEngine:
    checkpoints: list  # checkpoint directories, index = Member.checkpoint
    plan: MemberPlan
    analyses: Source
    init_times: np.ndarray
    lead_steps: int
    batch_size: int
    base_seed: int
    perturbation: PerturbationSettings
    device: str = "cpu"

    def __post_init__(self):
        self.init_times = np.atleast_1d(np.asarray(self.init_times, dtype="datetime64[ns]"))
        if len(self.checkpoints) != self.plan.n_checkpoints:
            raise ValueError(f"the member plan has {self.plan.n_checkpoints} checkpoints but {len(self.checkpoints)} were given")
        self.cards = [read_card(path) for path in self.checkpoints]
        first = self.cards[0]
        for path, card in zip(self.checkpoints, self.cards):
            for attribute in ("channels", "grid", "dt_hours"):
                if getattr(card, attribute) != getattr(first, attribute):
                    raise ValueError(f"checkpoint {path} has other {attribute} than {self.checkpoints[0]}: "
                                     f"{getattr(card, attribute)} vs {getattr(first, attribute)}")
        self.channels = first.channels
        self.dt_hours = first.dt_hours
        self.grid = first.model_grid
        if self.lead_steps < 0:
            raise ValueError(f"lead steps must be non-negative, got {self.lead_steps}")
        self.analyses.check_channels(self.channels)
        self.analyses.check_grid(self.grid)
        self.analyses.time_index(self.init_times)
        unknown = [c for c in self.perturbation.channels if c not in self.channels]
        unknown += [c for c in self.perturbation.amplitude if c not in self.channels]
        if unknown:
            raise ValueError(f"perturbation names channel(s) {unknown} that the model does not have {list(self.channels)}")
        if self.perturbation.method == "bred_vector" and self.perturbation.last_cycle_ends == "t":
            for t in self.init_times:
                self.analyses.time_index(self.history_times(t))
        self.plan.blocks(self.batch_size)  # validates the batch size against the plan

    # -- description ------------------------------------------------------------------------------
    def history_times(self, init_time) -> np.ndarray:
        n = self.perturbation.cycles
        return np.datetime64(init_time, "ns") - np.arange(n, 0, -1) * np.timedelta64(self.dt_hours, "h")

    def schema(self) -> StoreSchema:
        members = self.plan.members()
        return StoreSchema(
            channels=self.channels,
            grid=self.grid.to_dict(),
            init_times=tuple(np.datetime_as_string(t, "s") for t in self.init_times),
            lead_hours=tuple(k * self.dt_hours for k in range(self.lead_steps + 1)),
            n_members=self.plan.size,
            lead_chunk=self.lead_chunk(),
            members={
                "checkpoint": [m.checkpoint for m in members],
                "model_family": [self.cards[m.checkpoint].family for m in members],
                "pair": [m.pair for m in members],
                "sign": [m.sign for m in members],
            },
            attrs={
                "checkpoints": [{"name": c.name, "family": c.family, "weights_sha256": c.weights_sha256} for c in self.cards],
                "member_plan": asdict(self.plan),
                "base_seed": self.base_seed,
                "seed_rule": "member_seed(base_seed, init_time, id, purpose): id = pair for 'perturbation', member for 'noise'",
                "perturbation": asdict(self.perturbation),
                "batch_size": self.batch_size,
                "model_dt_hours": self.dt_hours,
            },
        )

    def lead_chunk(self, budget_bytes: int = 256 << 20) -> int:
        """Leads per store chunk: as many as a block can buffer within ``budget_bytes`` (all of them for
        small grids, one for HENS-size states), so writers only ever write whole chunks."""
        per_lead = self.batch_size * len(self.channels) * self.grid.nlat * self.grid.nlon * 4
        return int(max(1, min(self.lead_steps + 1, budget_bytes // per_lead)))

    def seeds(self) -> dict[str, np.ndarray]:
        members = self.plan.members()
        perturbation = np.array([[member_seed(self.base_seed, t, m.pair, "perturbation") if m.pair >= 0 else -1
                                  for m in members] for t in self.init_times], dtype=np.int64)
        noise = np.array([[member_seed(self.base_seed, t, m.index, "noise") for m in members] for t in self.init_times],
                         dtype=np.int64)
        return {"perturbation_seed": perturbation, "noise_seed": noise}

    def create_store(self, path) -> EnsembleStore:
        return EnsembleStore.create(path, self.schema(), self.seeds())

    # -- running ----------------------------------------------------------------------------------
    def run(self, store: EnsembleStore, start: int = 0, stop: int | None = None) -> dict:
        """Generate members ``start:stop`` into ``store``, skipping finished blocks. Returns counts."""
        stop = self.plan.size if stop is None else stop
        if store.schema.differences(self.schema()):
            raise ValueError(f"store {store.path} was created for another run (differs in {store.schema.differences(self.schema())})")
        blocks = self.plan.blocks_for(start, stop, self.batch_size)
        counts = {"blocks_run": 0, "blocks_skipped": 0, "member_steps": 0}
        began = time.perf_counter()
        for checkpoint, group in groupby(blocks, key=lambda b: self.plan.member(b[0]).checkpoint):
            pending = []
            group = list(group)
            for i in range(len(self.init_times)):
                for a, b in group:
                    lo, hi = max(a, start), min(b, stop)
                    if store.is_done(i, lo, hi):
                        counts["blocks_skipped"] += 1
                    else:
                        pending.append((i, a, b, lo, hi))
            if not pending:
                continue
            model = load_checkpoint(self.checkpoints[checkpoint], self.device)
            log.info("checkpoint %d (%s): %d block(s) to run", checkpoint, self.cards[checkpoint].name, len(pending))
            chunk = store.schema.lead_chunk
            for i, a, b, lo, hi in pending:
                checksums = Checksums(hi - lo, len(self.channels))
                buffer = []
                for lead, state in self.run_block(model, i, a, b):
                    values = state[lo - a:hi - a]
                    checksums.update(values)
                    buffer.append(values)
                    if len(buffer) == chunk or lead == self.lead_steps:
                        store.write(i, lo, hi, lead + 1 - len(buffer), np.stack(buffer, axis=1))
                        buffer = []
                store.finish(i, lo, hi, checksums.result())
                counts["blocks_run"] += 1
                counts["member_steps"] += (b - a) * self.lead_steps
                log.info("init %s members %d:%d done", np.datetime_as_string(self.init_times[i], "h"), lo, hi)
        counts["seconds"] = time.perf_counter() - began
        return counts

    def initial_state(self, model, init_index: int) -> torch.Tensor:
        x = self.analyses.initial_state(self.init_times[init_index], self.channels)
        return model.normalise(torch.from_numpy(x).to(self.device))

    def perturbation_for(self, model, init_index: int):
        p = self.perturbation
        card = model.card
        amplitude = torch.tensor([p.amplitude.get(c, 0.0) / s for c, s in zip(card.channels, card.std)])
        if p.method == "gaussian":
            return SphericalGaussian(self.grid, amplitude, p.length_scale_km)
        if p.method == "bred_vector":
            history = None
            if p.last_cycle_ends == "t":
                times = self.history_times(self.init_times[init_index])
                fields = self.analyses.fields(times, self.channels)
                if not np.isfinite(fields).all():
                    raise DataError(f"analyses before {np.datetime_as_string(self.init_times[init_index], 'm')} "
                                    "used for breeding have NaN or Inf")
                history = model.normalise(torch.from_numpy(fields).to(self.device))
            seed_channels = torch.tensor([c in p.channels for c in card.channels])
            if getattr(model, "needs_time", False):  # cos-zenith models: each cycle steps from a known time
                init = np.datetime64(self.init_times[init_index], "ns")
                times = list(self.history_times(init)) if p.last_cycle_ends == "t" else [init] * p.cycles
                return BredVector(lambda x, t: model.step(x, None, time=t), self.grid, amplitude, seed_channels,
                                  p.length_scale_km, p.cycles, p.boundary_latitude, p.last_cycle_ends, history, times)
            return BredVector(lambda x: model.step(x, None), self.grid, amplitude, seed_channels, p.length_scale_km,
                              p.cycles, p.boundary_latitude, p.last_cycle_ends, history)
        return None

    def run_block(self, model, init_index: int, start: int, stop: int):
        """Yield ``(lead_index, values)`` for members ``start:stop`` (one block) in physical units."""
        init_time = self.init_times[init_index]
        members = self.plan.members(start, stop)
        card = model.card
        floor = non_negative_floor(card.channels, card.mean, card.std).to(self.device)
        with torch.inference_mode():
            x0 = self.initial_state(model, init_index)
            x = x0.expand(len(members), -1, -1, -1).clone()
            pairs = sorted({m.pair for m in members if m.pair >= 0})
            perturbation = self.perturbation_for(model, init_index) if pairs else None
            if perturbation is not None:
                generators = [member_generator(self.base_seed, init_time, p, "perturbation") for p in pairs]
                dx = perturbation(x0, generators)
                for row, m in enumerate(members):
                    if m.pair >= 0:
                        x[row] = x0[0] + m.sign * dx[pairs.index(m.pair)]
                x = torch.maximum(x, floor)
            noise = [member_generator(self.base_seed, init_time, m.index, "noise") for m in members]
            start_time = init_time if getattr(model, "needs_time", False) else None
            for lead, state in rollout(model, x, self.lead_steps, noise, floor, start_time=start_time):
                yield lead, model.denormalise(state).float().cpu().numpy()


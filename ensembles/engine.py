"""The ensemble engine: runs blocks of members in batches, checkpoint by checkpoint, into a store.

Checkpoint-major: each rank loads each checkpoint once and runs all of its pending blocks, for every
start date, before loading the next. A block (see ``MemberPlan.blocks``) is perturbed, rolled out and
handed lead by lead to a sink thread that computes checksums and streaming statistics and queues the
Zarr writes on a pool of writer threads, so the model never waits for the disk. On a GPU each state
leaves the device through a pinned host buffer with an asynchronous copy.

Ranks (``srun -n R``, ``torchrun``) split the plan's windows (``MemberPlan.windows``) into contiguous
runs, so each rank writes only its own shards; no communication is needed.

Resume: a block's done flags are written after its values; with streaming statistics, after the
block's statistics part too (one part per block, at a place fixed by the block, so a recomputed block
replaces its own part). The statistics of a start date are finalised (parts merged in block order) by
whichever rank finds every part stored; finalising is idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import groupby

import numpy as np
import torch

from ensembles.perturb import BredVector, SphericalGaussian, non_negative_floor
from ensembles.plan import MemberPlan, PerturbationSettings  # noqa: F401  (PerturbationSettings: re-exported)
from ensembles.ranks import split_windows
from ensembles.seeds import member_generator, member_seed
from ensembles.stats import EnsembleAccumulator, StatisticsSpec, finalise_statistics
from forecast.data import DataError, Source
from forecast.errors import InputError, StoreError
from forecast.rollout import rollout
from forecast.store import Checksums, EnsembleStore, StoreLayout, StoreSchema, shard_leads
from models.checkpoint import load_checkpoint, read_card

log = logging.getLogger(__name__)


@dataclass
class EnsembleEngine:
    """Runs the members of a plan, checkpoint by checkpoint and batch window by window, into a store.

    Each rank loads each of its checkpoints once, perturbs the initial states (bred vectors seeded per
    pair), rolls a window of members forward together and hands every lead to writer threads (values,
    checksums, streaming statistics). A member is bit-identical on the CPU whichever rank or run computes
    it, because its window and its seeds depend only on its identity.

    Parameters
    ----------
    checkpoints : list
        Checkpoint folders; index ``k`` is ``Member.checkpoint == k``. They must share channels, grid and
        time step.
    plan : MemberPlan
        Which checkpoint, perturbation pair and sign each member has.
    analyses : forecast.data.Source
        Initial states (and, for bred vectors ending at ``t``, the analyses before them).
    init_times : array of datetime64
        Start dates.
    lead_steps : int
        Model steps per member (lead = ``lead_steps * dt``).
    batch_size : int
        Members per window; fixes the store's shard layout.
    base_seed : int
        Base of every member's seeds (``ensembles.seeds.member_seed``).
    perturbation : PerturbationSettings
        Initial-state perturbation.
    device : str
        Torch device of this rank.
    statistics : ensembles.stats.StatisticsSpec, optional
        Streaming statistics to accumulate.
    statistics_only : tuple
        Channels kept as statistics alone (no member fields).
    keepbits : dict
        Channel -> float32 mantissa bits kept (BitRound before zstd).
    zstd_level : int
        Compression level.
    writer_threads : int
        Threads writing Zarr chunks.
    autocast_bf16 : bool
        Run the pointwise parts in bfloat16 on a GPU.

    Examples
    --------
    ``workflows.recipes.build_engine`` builds one from a config; then ``engine.run(engine.create_store(path),
    0, engine.plan.size, rank=0, world=1)``.
    """

    checkpoints: list  # checkpoint directories, index = Member.checkpoint
    plan: MemberPlan
    analyses: Source
    init_times: np.ndarray
    lead_steps: int
    batch_size: int
    base_seed: int
    perturbation: PerturbationSettings
    device: str = "cpu"
    statistics: StatisticsSpec | None = None
    statistics_only: tuple = ()  # channels not kept per member
    keepbits: dict = field(default_factory=dict)
    zstd_level: int = 3
    writer_threads: int = 2
    autocast_bf16: bool = False
    attrs: dict = field(default_factory=dict)  # more run description for the store (e.g. amplitude_calibration)

    def __post_init__(self):
        self.init_times = np.atleast_1d(np.asarray(self.init_times, dtype="datetime64[ns]"))
        self._diverged: set = set()  # (start date, block) already reported as NaN or Inf
        if len(self.checkpoints) != self.plan.n_checkpoints:
            raise InputError(f"the member plan has {self.plan.n_checkpoints} checkpoints but {len(self.checkpoints)} were given")
        self.cards = [read_card(path) for path in self.checkpoints]
        first = self.cards[0]
        for path, card in zip(self.checkpoints, self.cards):
            for attribute in ("channels", "grid", "dt_hours"):
                if getattr(card, attribute) != getattr(first, attribute):
                    raise InputError(f"checkpoint {path} has other {attribute} than {self.checkpoints[0]}: "
                                     f"{getattr(card, attribute)} vs {getattr(first, attribute)}")
        self.channels = first.channels
        self.dt_hours = first.dt_hours
        self.grid = first.model_grid
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.lead_steps < 0:
            raise InputError(f"lead steps must be non-negative, got {self.lead_steps}")
        self.analyses.check_channels(self.channels)
        self.analyses.check_grid(self.grid)
        self.analyses.time_index(self.init_times)
        p = self.perturbation
        unknown = [c for c in (*p.channels, *p.amplitude, *self.statistics_only, *self.keepbits) if c not in self.channels]
        if self.statistics is not None:
            unknown += [c for c in self.statistics.channels if c not in self.channels]
            self.statistics.check_members(self.plan.size)
        if unknown:
            raise InputError(f"channel(s) {sorted(set(unknown))} named in the ensemble settings are not model channels {list(self.channels)}")
        missing = [c for c in self.statistics_only if self.statistics is None or c not in self.statistics.channels]
        if missing:
            raise InputError(f"statistics-only channel(s) {missing} must also be statistics channels")
        self.stored = tuple(c for c in self.channels if c not in self.statistics_only)
        if p.method == "bred_vector" and p.last_cycle_ends == "t":
            for t in self.init_times:
                self.analyses.time_index(self.history_times(t))
        StoreLayout(keepbits=self.keepbits)  # validates keepbits

    # -- description ------------------------------------------------------------------------------
    def history_times(self, init_time) -> np.ndarray:
        """The analysis times the bred vector breeds over before ``init_time`` (``cycles`` steps)."""
        n = self.perturbation.cycles
        return np.datetime64(init_time, "ns") - np.arange(n, 0, -1) * np.timedelta64(self.dt_hours, "h")

    def lead_chunk(self) -> int:
        """Leads per shard (:func:`forecast.store.shard_leads`)."""
        return shard_leads(self.batch_size, len(self.stored), self.grid.nlat * self.grid.nlon, self.lead_steps + 1)

    def layout(self) -> StoreLayout:
        """The store layout: one batch window per shard, ``lead_chunk`` leads, compression."""
        return StoreLayout(shard_members=self.batch_size, lead_chunk=self.lead_chunk(), keepbits=dict(self.keepbits),
                           zstd_level=self.zstd_level)

    def schema(self) -> StoreSchema:
        """The store schema (coordinates, member plan, checkpoints, seed rule, settings): the store is created
        from it and checked against it."""
        members = self.plan.members()
        return StoreSchema(
            channels=self.stored,
            grid=self.grid.to_dict(),
            init_times=tuple(np.datetime_as_string(t, "s") for t in self.init_times),
            lead_hours=tuple(k * self.dt_hours for k in range(self.lead_steps + 1)),
            n_members=self.plan.size,
            layout=asdict(self.layout()),
            members={
                "checkpoint": [m.checkpoint for m in members],
                "model_family": [self.cards[m.checkpoint].family for m in members],
                "pair": [m.pair for m in members],
                "sign": [m.sign for m in members],
            },
            statistics=asdict(self.statistics) if self.statistics else {},
            attrs={
                "checkpoints": [{"name": c.name, "family": c.family, "weights_sha256": c.weights_sha256} for c in self.cards],
                "member_plan": asdict(self.plan),
                "base_seed": self.base_seed,
                "seed_rule": "member_seed(base_seed, init_time, id, purpose): id = pair for 'perturbation', member for 'noise'",
                "perturbation": asdict(self.perturbation),
                "batch_size": self.batch_size,
                "model_dt_hours": self.dt_hours,
                "statistics_only": list(self.statistics_only),
                **self.attrs,
            },
        )

    def seeds(self) -> dict[str, np.ndarray]:
        """Every member's perturbation and noise seed per start date (stored so any member can be regenerated alone)."""
        members = self.plan.members()
        perturbation = np.array([[member_seed(self.base_seed, t, m.pair, "perturbation") if m.pair >= 0 else -1
                                  for m in members] for t in self.init_times], dtype=np.int64)
        noise = np.array([[member_seed(self.base_seed, t, m.index, "noise") for m in members] for t in self.init_times],
                         dtype=np.int64)
        return {"perturbation_seed": perturbation, "noise_seed": noise}

    def create_store(self, path) -> EnsembleStore:
        """Create the store at ``path`` for this run's schema, or open the existing one if it has the same schema."""
        return EnsembleStore.create(path, self.schema(), self.seeds())

    # -- running ----------------------------------------------------------------------------------
    def rank_blocks(self, start: int, stop: int, rank: int, world: int) -> list[tuple[int, int]]:
        """The blocks rank ``rank`` of ``world`` runs for members ``start:stop``: whole windows only."""
        windows = [w for w in self.plan.windows(self.batch_size) if w[0] < stop and w[1] > start]
        mine = split_windows(windows, world)[rank]
        blocks = self.plan.blocks_for(start, stop, self.batch_size)
        return [b for b in blocks if any(a <= b[0] and b[1] <= z for a, z in mine)]

    def run(self, store: EnsembleStore, start: int = 0, stop: int | None = None, rank: int = 0, world: int = 1,
            init_indices=None, progress=None) -> dict:
        """Generate members ``start:stop`` (this rank's share) for the start dates ``init_indices`` (default
        all) into ``store``, skipping finished blocks.

        ``progress`` (optional) is told ``start(total, done, steps)`` (members x start dates of this share,
        those finished before, steps per member) and then ``advance(members)`` after each finished block,
        from the sink thread (``workflows.progress.Progress`` draws a bar or logs from it)."""
        stop = self.plan.size if stop is None else stop
        init_indices = range(len(self.init_times)) if init_indices is None else list(init_indices)
        diff = store.schema.differences(self.schema())
        if diff:
            raise StoreError(f"store {store.path} was created for another run (differs in {', '.join(diff)})")
        counts = {"blocks_run": 0, "blocks_skipped": 0, "member_steps": 0}
        began = time.perf_counter()
        blocks = self.rank_blocks(start, stop, rank, world)
        if progress is not None:
            spans = [(max(a, start), min(b, stop)) for a, b in blocks]
            progress.start(total=sum(hi - lo for lo, hi in spans) * len(init_indices),
                           done=sum(hi - lo for i in init_indices for lo, hi in spans if store.is_done(i, lo, hi)),
                           steps=self.lead_steps)
        with _Sink(store, self.writer_threads, self.device) as sink:  # drained on exit: every block is finished
            self.output_timeline = sink.timeline  # live: a monitor can read it while the run goes on
            for checkpoint, group in groupby(blocks, key=lambda b: self.plan.member(b[0]).checkpoint):
                group = list(group)
                model = None
                for i in init_indices:
                    pending = []
                    for a, b in group:
                        lo, hi = max(a, start), min(b, stop)
                        if store.is_done(i, lo, hi):
                            counts["blocks_skipped"] += 1
                        else:
                            pending.append((a, b, lo, hi))
                    if not pending:
                        continue
                    if model is None:
                        model = load_checkpoint(self.checkpoints[checkpoint], self.device)
                        log.info("rank %d: checkpoint %d (%s) loaded", rank, checkpoint, self.cards[checkpoint].name)
                    self._run_group(model, store, sink, i, pending, progress)
                    counts["blocks_run"] += len(pending)
                    counts["member_steps"] += sum(b - a for a, b, _, _ in pending) * self.lead_steps
                del model
        if self.statistics is not None:
            for i in init_indices:
                self.finalise_statistics(store, i)
        counts["seconds"] = time.perf_counter() - began
        counts["output_wait_seconds"] = sink.waited
        return counts

    def _run_group(self, model, store, sink, init_index: int, pending, progress=None) -> None:
        """Run one (checkpoint, start date) group of blocks; each block's statistics part is stored
        before its done flags."""
        stat_index = [self.channels.index(c) for c in self.statistics.channels] if self.statistics else []
        store_index = [self.channels.index(c) for c in self.stored]
        for a, b, lo, hi in pending:
            accumulator = None
            if self.statistics is not None:  # one per block: a block's part depends on its members alone
                accumulator = EnsembleAccumulator(self.statistics, self.lead_steps + 1, self.grid.shape)
            checksums = Checksums(hi - lo, len(self.stored))
            buffer = []
            for lead, state in self.run_block(model, init_index, a, b):
                rows = slice(lo - a, hi - a)
                sink.submit(self._consume, lead, state, rows, store_index, stat_index, checksums, accumulator, buffer,
                            init_index, lo, hi)
            # the ordered sink thread runs this after the block's leads: the next block need not wait
            sink.submit(self._finish_block, store, init_index, (a, b), lo, hi, checksums, accumulator, progress)

    def _finish_block(self, store, init_index: int, block, lo: int, hi: int, checksums, accumulator, progress,
                      sink) -> None:
        if accumulator is not None:
            store.write_statistics_part(init_index, block, accumulator.to_arrays())
        sink.wait_writes()
        store.finish(init_index, lo, hi, checksums.result())
        if progress is not None:
            progress.advance(hi - lo)
        log.info("init %s members %d:%d done", np.datetime_as_string(self.init_times[init_index], "h"), lo, hi)

    def _consume(self, lead, state, rows, store_index, stat_index, checksums, accumulator, buffer, init_index, lo, hi,
                 sink):
        """Sink-thread work for one lead of a block: host copy, checksums, statistics, shard writes."""
        values = _to_numpy(state)
        stored = values[rows][:, store_index]
        checksums.update(stored)
        if not np.isfinite(stored).all() and (init_index, lo) not in self._diverged:  # stored as computed
            self._diverged.add((init_index, lo))
            bad = lo + np.flatnonzero(~np.isfinite(stored).reshape(len(stored), -1).all(axis=1))
            log.warning("init %s: member(s) %s have NaN or Inf from lead step %d on (the model diverged)",
                        np.datetime_as_string(self.init_times[init_index], "h"), bad.tolist(), lead)
        if accumulator is not None:  # every member of the block, also those outside start:stop
            every = stat_index == list(range(values.shape[1]))  # all channels in order: no copy
            accumulator.update(lead, values if every else values[:, stat_index], threads=sink.statistics_threads)
        if not self.stored:
            return
        buffer.append(stored)
        chunk = sink.store.schema.layout["lead_chunk"]
        if len(buffer) == chunk or lead == self.lead_steps:
            sink.write(init_index, lo, hi, lead + 1 - len(buffer), np.stack(buffer, axis=1))
            buffer.clear()

    def finalise_statistics(self, store: EnsembleStore, init_index: int) -> bool:
        """Finalise a start date's statistics once every block's part is stored (see :func:`finalise_statistics`)."""
        return finalise_statistics(store, init_index)

    # -- numerics ---------------------------------------------------------------------------------
    def initial_state(self, model, init_index: int) -> torch.Tensor:
        """The normalised analysis at start date ``init_index``, ``(1, channel, lat, lon)``."""
        x = self.analyses.initial_state(self.init_times[init_index], self.channels)
        return model.normalise(torch.from_numpy(x).to(self.device))

    def perturbation_for(self, model, init_index: int):
        """The initial-state perturbation for ``model`` at start date ``init_index`` (``None`` for none)."""
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
            times, step = None, (lambda x: self._step(model, x, None))
            if model.needs_time:  # cos-zenith models: each cycle steps from a known time
                init = np.datetime64(self.init_times[init_index], "ns")
                times = list(self.history_times(init)) if p.last_cycle_ends == "t" else [init] * p.cycles
                step = lambda x, t: self._step(model, x, None, t)  # noqa: E731
            return BredVector(step=step, grid=self.grid, amplitude=amplitude, seed_channels=seed_channels,
                              length_scale_km=p.length_scale_km, cycles=p.cycles, boundary=p.boundary_latitude,
                              last_cycle_ends=p.last_cycle_ends, history=history, times=times)
        return None

    def _step(self, model, x, generators, time=None):
        with torch.autocast(device_type=torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
            if time is None:
                return model.step(x, generators).float()
            return model.step(x, generators, time=time).float()

    def run_block(self, model, init_index: int, start: int, stop: int):
        """Yield ``(lead_index, values)`` for members ``start:stop`` (one block) in physical units, as
        tensors on the engine's device (GPU: already queued for an asynchronous host copy)."""
        init_time = self.init_times[init_index]
        members = self.plan.members(start, stop)
        card = model.card
        floor = non_negative_floor(card.channels, card.mean, card.std).to(self.device)
        stepper = _Stepper(self, model)
        with torch.inference_mode():
            x0 = self.initial_state(model, init_index)
            x = x0.expand(len(members), -1, -1, -1).clone()
            pairs = sorted({m.pair for m in members if m.pair >= 0})
            perturbation = self.perturbation_for(model, init_index) if pairs else None
            if perturbation is not None:
                dx = {}
                for group in self.plan.perturbation_groups(pairs, self.batch_size):
                    generators = [member_generator(self.base_seed, init_time, p, "perturbation") for p in group]
                    dx.update(zip(group, perturbation(x0, generators)))
                for row, m in enumerate(members):
                    if m.pair >= 0:
                        x[row] = x0[0] + m.sign * dx[m.pair]
                x = torch.maximum(x, floor)
            noise = [member_generator(self.base_seed, init_time, m.index, "noise") for m in members]
            start_time = init_time if model.needs_time else None
            for lead, state in rollout(stepper, x, self.lead_steps, noise, floor, start_time=start_time):
                yield lead, _to_host(model.denormalise(state))


def auto_batch_size(checkpoint, device: str, grid_shape: tuple[int, int], cpu_default: int = 8,
                    memory_fraction: float = 0.8) -> int:
    """Members per batch: on a GPU as many as fit in ``memory_fraction`` of the free memory, measured
    by running one step of one member; on a CPU ``cpu_default``. Even, so +/- pairs share a batch."""
    if not device.startswith("cuda"):
        return cpu_default
    model = load_checkpoint(checkpoint, device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    valid_time = np.datetime64("2000-01-01T00", "ns") if getattr(model, "needs_time", False) else None
    with torch.inference_mode():  # cos-zenith models need a valid time (any one: the memory is the same)
        model.step(torch.zeros((1, len(model.card.channels), *grid_shape), device=device), None, time=valid_time)
    per_member = max(1, torch.cuda.max_memory_allocated(device) - before)
    free, _ = torch.cuda.mem_get_info(device)
    del model
    batch = int(memory_fraction * free // per_member)
    return max(2, batch - batch % 2)


class _Stepper:
    """The model's step with the engine's precision settings (bf16 autocast outside the spectral parts)."""

    def __init__(self, engine: EnsembleEngine, model):
        self.engine, self.model, self.card = engine, model, model.card

    def step(self, x, generators=None, time=None):
        return self.engine._step(self.model, x, generators, time)


def _to_host(state: torch.Tensor):
    """CPU tensors pass through; CUDA tensors start an asynchronous copy into pinned memory."""
    if state.device.type != "cuda":
        return state
    host = torch.empty(state.shape, dtype=state.dtype, pin_memory=True)
    host.copy_(state, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _to_numpy(state) -> np.ndarray:
    if isinstance(state, tuple):
        host, event = state
        event.synchronize()
        return host.numpy()
    return state.numpy()


class _Sink:
    """One ordered worker thread for per-lead host work, plus a pool of writer threads for Zarr writes.

    At most ``2 * writers + 2`` items are in flight, which bounds host memory. ``waited`` is the time the
    model loop spent blocked on a full queue after the GPU's queued work finished (the GPU waiting on
    output); ``timeline`` holds ``(time, waited so far)`` after each submission, for windows of it.
    """

    def __init__(self, store: EnsembleStore, writers: int, device: str = "cpu"):
        self.store = store
        self.device, self.cuda = device, device.startswith("cuda")
        # on a GPU the host's statistics must keep up with it: spare cores share them (a CPU run leaves
        # its cores to torch)
        self.statistics_threads = min(8, max(1, (os.cpu_count() or 2) // 2)) if self.cuda else 1
        self.ordered = ThreadPoolExecutor(1, thread_name_prefix="sink")
        self.pool = ThreadPoolExecutor(max(1, writers), thread_name_prefix="writer") if writers > 0 else None
        self.limit = 2 * max(1, writers) + 2
        self.items: deque = deque()
        self.writes: deque = deque()
        self.waited = 0.0
        self.timeline: list[tuple[float, float]] = []

    def submit(self, func, *args) -> None:
        self.items.append(self.ordered.submit(func, *args, self))
        if self.cuda and len(self.items) > self.limit:
            torch.cuda.synchronize(self.device)  # the GPU finishes its queued work: the wait below is idle GPU
        began = time.perf_counter()
        while len(self.items) > self.limit:
            self.items.popleft().result()
        now = time.perf_counter()
        self.waited += now - began
        self.timeline.append((now, self.waited))

    def write(self, *args) -> None:  # called from the sink thread
        if self.pool is None:
            self.store.write(*args)
            return
        self.writes.append(self.pool.submit(self.store.write, *args))
        while len(self.writes) > self.limit:
            self.writes.popleft().result()

    def wait_writes(self) -> None:  # called from the sink thread, or after the items are drained
        while self.writes:
            self.writes.popleft().result()

    def drain(self) -> None:
        while self.items:
            self.items.popleft().result()
        self.wait_writes()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        try:
            if exc_type is None:
                self.drain()  # a failed write (a full disk, say) surfaces here
            else:
                with contextlib.suppress(Exception):
                    self.drain()
        finally:
            self.ordered.shutdown(wait=True)
            if self.pool is not None:
                self.pool.shutdown(wait=True)
        return False

"""The ensemble store: one Zarr store per run, created once, written region by region, with a manifest.

Layout (``xarray.open_zarr(path)``): dims ``member, init_time, lead_time, lat, lon``; one float32
variable per channel kept in full, with CF attributes; coordinates ``valid_time(init_time, lead_time)``
and, per member, ``checkpoint``, ``model_family``, ``pair`` and ``sign``; per member and start date the
seeds ``perturbation_seed`` and ``noise_seed``. Channels with streaming statistics get variables without a
member dimension: ``<c>_ensemble_mean``, ``_std``, ``_min``, ``_max``, ``<c>_exceedance_probability``
(dim ``<c>_threshold``) and ``<c>_quantile`` (dim ``quantile``). Attributes record the checkpoints (names,
families, SHA-256), the member plan, the base seed, the perturbation settings, the batch size, the
layout (with BitRound ``keepbits`` when lossy compression is on) and the code version, as JSON strings,
plus ``schema``: the JSON of everything that defines the run.

Zarr v3 with sharding: a shard holds ``layout.shard_members`` members (the batch size: a window of the
member plan, which one rank writes) x one start date x ``layout.lead_chunk`` leads x the whole grid,
so one write call fills one shard file; inside, each member's fields form their own chunks (one per
lead at HENS size, a run of leads of about 1 MB on small grids: :func:`inner_leads`), so a reader can
take one member without reading the rest. A HENS run (7,424 members, 61 leads,
batch 4) holds 1,856 x 61 files per variable and date instead of 452,864.

The store is created from the full coordinates (metadata only; unwritten values read as NaN) in a
temporary folder that is renamed into place, so concurrent creators (ranks, array tasks) race safely:
one rename wins, the others find the store and check its schema. The ``manifest`` subgroup (invisible
to ``open_zarr``) holds ``done(init_time, member)`` and ``checksum(init_time, member, channel)``: a
block's checksums and done flags are written after all of its values (and after its partial statistics),
so a killed run leaves no member marked done that is not complete, and a rerun skips exactly the
finished blocks. Manifest flags have one chunk (one file) per member, so concurrent writers of
neighbouring blocks never overwrite each other's flags.

Streaming statistics are stored per block (``statistics_parts``: one accumulator per start date and
block of :meth:`StoreSchema.blocks`, keyed by the members it covers, plus a ``complete`` flag written
after it). A recomputed block rewrites its own part, two writers of one block write the same files,
and finalisation folds the parts in block order, so the statistics are bit-identical however the work
was split, interrupted or repeated. Once a start date's final statistics are durable its parts are
removed (:meth:`EnsembleStore.drop_statistics_parts`): a part is the size of about ``24 + 8 *
tail_members`` bytes per lead, channel and grid point, so keeping one per block would outgrow the
member fields at scale. A part counts as stored only while its flag is set and its ``counts`` chunk (the
first written, the last removed) exists.

Every chunk is zstd-compressed with a content checksum, so a damaged chunk fails to decode instead of
reading as plausible numbers. The group attribute ``store_version`` (:data:`STORE_VERSION`) names the
layout; a store of another version is refused with the command that migrates it
(:func:`forecast.store_migration.migrate_store`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from forecast.errors import InputError, StoreError
from forecast.files import atomic_write, fsync_files
from forecast.grid import Grid
from forecast.hashing import content_hash, digest_to_int

STATISTICS = ("mean", "std", "min", "max")
STORE_VERSION = 2  # 1: releases up to 2026-11-28 (no checksums, statistics parts per rank); 2: this layout
MIGRATE_COMMAND = "forecast check --migrate"


class StoreVersionError(StoreError):
    """A store written with another layout version than this release's :data:`STORE_VERSION`."""


@dataclass(frozen=True)
class StoreLayout:
    """How values are laid out on disk. ``keepbits`` (channel -> mantissa bits kept) turns on BitRound
    before zstd: lossy with relative error at most ``2**-(keepbits + 1)``."""

    shard_members: int = 1
    lead_chunk: int = 1
    keepbits: dict = field(default_factory=dict)
    zstd_level: int = 3

    def __post_init__(self):
        if self.shard_members < 1 or self.lead_chunk < 1:
            raise InputError("shard_members and lead_chunk must be at least 1")
        bad = {c: b for c, b in self.keepbits.items() if not (isinstance(b, int) and 1 <= b <= 23)}
        if bad:
            raise InputError(f"keepbits must be integers from 1 to 23 (float32 mantissa bits), got {bad}")


@dataclass(frozen=True)
class StoreSchema:
    """Everything that defines a run's store; two runs may share a store only if these are equal."""

    channels: tuple  # channels kept for every member
    grid: dict
    init_times: tuple  # ISO strings
    lead_hours: tuple
    n_members: int
    layout: dict  # StoreLayout as a dict
    members: dict  # coordinate name -> list per member (checkpoint, model_family, pair, sign)
    statistics: dict = field(default_factory=dict)  # StatisticsSpec fields, or {} for none
    attrs: dict = field(default_factory=dict)  # JSON-able run description

    def to_json(self) -> str:
        d = asdict(self)
        d["channels"], d["init_times"], d["lead_hours"] = list(self.channels), list(self.init_times), list(self.lead_hours)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "StoreSchema":
        d = json.loads(text)
        d.update(channels=tuple(d["channels"]), init_times=tuple(d["init_times"]), lead_hours=tuple(d["lead_hours"]))
        return cls(**d)

    @property
    def store_layout(self) -> StoreLayout:
        return StoreLayout(**self.layout)

    def blocks(self) -> list[tuple[int, int]]:
        """The member blocks ``(start, stop)`` writers run: windows of ``layout.shard_members`` members,
        split where the checkpoint changes (``MemberPlan.blocks`` of the run's batch size)."""
        size, checkpoint = self.layout["shard_members"], self.members.get("checkpoint", [0] * self.n_members)
        blocks = []
        for start in range(0, self.n_members, size):
            first = start
            for index in range(start + 1, min(start + size, self.n_members)):
                if checkpoint[index] != checkpoint[index - 1]:
                    blocks.append((first, index))
                    first = index
            blocks.append((first, min(start + size, self.n_members)))
        return blocks

    def differences(self, other: "StoreSchema") -> list[str]:
        a, b = json.loads(self.to_json()), json.loads(other.to_json())
        keys = [k for k in a if a[k] != b[k]]
        if "attrs" in keys:
            keys.remove("attrs")
            keys += [f"attrs.{k}" for k in sorted(set(a["attrs"]) | set(b["attrs"])) if a["attrs"].get(k) != b["attrs"].get(k)]
        return keys


def _checksum(values: np.ndarray) -> int:
    data = np.ascontiguousarray(values, dtype=np.float32).tobytes()
    return content_hash(data)


class EnsembleStore:
    """Open with :meth:`create` (makes it or checks an existing one) or :meth:`open`."""

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = Path(path)
        if not (self.path / "zarr.json").is_file():
            raise StoreError(f"{self.path} is not an ensemble store (no zarr.json)")
        with warnings.catch_warnings():  # BitRound is a numcodecs codec outside the v3 spec
            warnings.simplefilter("ignore")
            # the group's own metadata, never the consolidated copy (written for readers: parts come and go)
            try:
                self.group = zarr.open_group(str(self.path), mode="r+" if os.access(self.path, os.W_OK) else "r",
                                             use_consolidated=False)
            except (ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
                raise StoreError(f"{self.path / 'zarr.json'} cannot be read ({type(error).__name__}: "
                                 f"{' '.join(str(error).split())[:200]}): the store's metadata is damaged") from None
        attrs = dict(self.group.attrs)
        if "schema" not in attrs or "manifest" not in self.group:
            raise StoreError(f"{self.path} is not a complete ensemble store of forecast run (no schema or manifest): "
                             "it may be half-created, or another kind of store (a planet or truth store)")
        check_version(self.path, attrs)
        try:
            self.schema = StoreSchema.from_json(attrs["schema"])
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(f"{self.path} has an unreadable schema ({error})") from None
        self.channels = tuple(self.schema.channels)
        self._fields = {}  # the member-field arrays, opened once: every chunk is stored, NaN ones too (a diverged
        for name in self.channels:  # member), so a missing shard means damage and NaN keeps its checksummed bits
            try:
                self._fields[name] = self.group[name].with_config({"write_empty_chunks": True})
            except (ValueError, KeyError, TypeError) as error:  # its own metadata (readers use the consolidated copy)
                raise StoreError(f"{self.path / name / 'zarr.json'} cannot be read ({type(error).__name__}): the "
                                 "array's metadata is damaged or missing; copy it from a store of the same run "
                                 "configuration, or rerun into a new store") from None
        self.blocks = self.schema.blocks()
        self.done = self.group["manifest/done"]
        self.checksums = self.group["manifest/checksum"]

    @classmethod
    def open(cls, path) -> "EnsembleStore":
        return cls(path)

    @classmethod
    def create(cls, path, schema: StoreSchema, seeds: dict[str, np.ndarray] | None = None,
               title: str = "ensemble forecast") -> "EnsembleStore":
        """Create the store at ``path`` for ``schema``, or check that the existing one has this schema.

        Safe to call from many processes at once: the store is built in a temporary folder beside
        ``path`` and renamed into place; losers of the race open the winner's store.
        """
        path = Path(path)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(path, replace=False) as tmp:  # a loser of the race keeps the winner's store
                tmp.mkdir()  # who may read it is the process umask's business (the `umask` setting)
                _write_template(tmp, schema, seeds or {}, title)
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path} exists and is not an ensemble store")
        store = cls(path)
        diff = store.schema.differences(schema)
        if diff:
            raise StoreError(f"existing store {path} has another schema (differs in {', '.join(diff)}); "
                             "refusing to append: write to a new path or delete it")
        return store

    # -- writing ----------------------------------------------------------------------------------
    def write(self, init_index: int, start: int, stop: int, lead_start: int, values: np.ndarray) -> None:
        """Write ``values`` ``(stop - start, lead, channel, lat, lon)`` for members ``start:stop`` from lead
        index ``lead_start``; writers pass whole chunks of ``schema.lead_chunk`` leads (the last may be short).

        Zarr merges a write into the shard file already there; a shard file that cannot be decoded is
        removed first when it holds no finished member outside ``start:stop``, else this is a
        :class:`StoreError` naming the file (``forecast check --repair`` resets its members)."""
        leads = values.shape[1]
        shards = self.schema.layout["shard_members"]
        whole = start % shards == 0 and (stop % shards == 0 or stop == self.schema.n_members)
        with contextlib.nullcontext() if whole else self.exclusive():
            for k, name in enumerate(self.channels):
                region = (slice(start, stop), init_index, slice(lead_start, lead_start + leads))
                array = self._fields[name]
                try:
                    array[region] = values[:, :, k]
                except OSError:
                    raise
                except Exception:
                    if not self._remove_undecodable_shards(name, init_index, start, stop, lead_start, leads):
                        raise
                    array[region] = values[:, :, k]

    @contextlib.contextmanager
    def exclusive(self):
        """An exclusive lock on the store, for read-modify-write steps that concurrent runs must not
        interleave: merging a block that fills part of a shard (a window split where the checkpoint
        changes) into the shard file, and finalising a start date's statistics then removing its parts.
        The lock is on the store's folder (no file is added to the hierarchy); where the file system has
        no locks, there is none."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def finish(self, init_index: int, start: int, stop: int, checksums: np.ndarray) -> None:
        """Record members ``start:stop`` as complete with their checksums ``(stop - start, channel)``."""
        self.checksums[init_index, start:stop] = checksums
        self.done[init_index, start:stop] = 1

    def is_done(self, init_index: int, start: int, stop: int) -> bool:
        return bool(np.all(self.done[init_index, start:stop] == 1))

    # -- streaming statistics ---------------------------------------------------------------------
    def block_index(self, start: int, stop: int) -> int:
        """Index of the block ``start:stop`` among :meth:`StoreSchema.blocks`."""
        try:
            return self.blocks.index((int(start), int(stop)))
        except ValueError:
            raise StoreError(f"members {start}:{stop} are not a block of {self.path} (blocks of "
                             f"{self.schema.layout['shard_members']} members)") from None

    def write_statistics_part(self, init_index: int, block: tuple[int, int], arrays: dict) -> None:
        """Persist the accumulator of one block (``EnsembleAccumulator.to_arrays()`` of all its members) at
        start date ``init_index``; it counts once its ``complete`` flag is written, after its arrays.

        The part's place is fixed by the block, so a recomputed block overwrites its own part, and writers
        of the same block (concurrent runs) write the same bytes to the same files."""
        b = self.block_index(*block)
        parts = self.group["statistics_parts"]
        unknown = sorted(set(arrays) - set(_part_arrays(self.schema)) - {"top", "bottom"})  # tails may be empty
        if unknown:
            raise StoreError(f"statistics part arrays {unknown} have no place in {self.path}")
        if self.statistics_done(init_index):  # a block recomputed after finalisation (a repaired shard)
            return
        for name in sorted(arrays, key=lambda name: name != "counts"):  # counts first: removed last
            if name in parts:
                parts[name][init_index, b] = arrays[name]
        parts["complete"][init_index, b] = 1

    def statistics_complete(self, init_index: int) -> np.ndarray:
        """Per block (:meth:`StoreSchema.blocks`): 1 where its statistics part is stored (its flag is set
        and its ``counts`` chunk, written first and removed last, exists)."""
        complete = self.group["statistics_parts/complete"][init_index]
        for b in np.flatnonzero(complete):
            complete[b] = self._counts_stored(init_index, b)
        return complete

    def statistics_part_stored(self, init_index: int, block_index: int) -> bool:
        """Whether one block's statistics part is stored (see :meth:`statistics_complete`)."""
        return bool(self.group["statistics_parts/complete"][init_index, block_index] == 1) and \
            self._counts_stored(init_index, block_index)

    def _counts_stored(self, init_index: int, block_index: int) -> bool:
        return self._chunk_file("statistics_parts/counts", (init_index, block_index)).is_file()

    def _chunk_file(self, name: str, index) -> Path:
        """The file of array ``name``'s chunk at ``index`` (chunk coordinates; missing trailing ones are 0)."""
        array = self.group[name]
        return self.path / name / array.metadata.encode_chunk_key(tuple(index) + (0,) * (array.ndim - len(index)))

    def statistics_part(self, init_index: int, block_index: int) -> dict[str, np.ndarray]:
        """The stored accumulator arrays of one block (empty tails when ``tail_members`` is 0)."""
        parts = self.group["statistics_parts"]
        arrays = {name: parts[name][init_index, block_index] for name in _part_arrays(self.schema) if name in parts}
        if "top" not in arrays:
            shape = arrays["mean"].shape
            arrays["top"] = arrays["bottom"] = np.zeros((*shape[:2], 0, *shape[2:]), dtype=np.float32)
        return arrays

    def statistics_part_files(self, init_index: int) -> list[Path]:
        """The chunk files of start date ``init_index``'s statistics parts (flags included) on disk: the
        parts of blocks, until finalisation removes them."""
        files = []
        for name, _ in self.group["statistics_parts"].arrays():
            folder = self.path / "statistics_parts" / name
            chunks = [self._chunk_file(f"statistics_parts/{name}", (init_index, b)) for b in range(len(self.blocks))]
            if all(chunk.parent == folder for chunk in chunks):  # flat keys: one listing of the folder
                names = set(os.listdir(folder)) if folder.is_dir() else set()
                files += [chunk for chunk in chunks if chunk.name in names]
            else:  # nested keys (stores created before flat keys)
                files += [chunk for chunk in chunks if chunk.is_file()]
        return files

    def drop_statistics_parts(self, init_index: int) -> int:
        """Remove the statistics parts of a start date whose final statistics are written (raises
        :class:`StoreError` otherwise); returns how many chunk files were removed.

        The final statistics are made durable first (fsync). Then the ``complete`` flags go, then the
        parts' arrays with ``counts`` last, so a kill at any point leaves every part still flagged
        complete whole; removing again finishes the job (idempotent)."""
        if not self.statistics_done(init_index):
            raise StoreError(f"{self.path}: the statistics of start date {self.schema.init_times[init_index]} are not "
                             "final; their parts are still needed")
        files = self.statistics_part_files(init_index)
        if not files:
            return 0
        fsync_files([*self._statistics_files(init_index), self._chunk_file("manifest/statistics_done", (init_index,))])
        order = {"complete": 0, "counts": 2}
        files.sort(key=lambda f: order.get(f.relative_to(self.path).parts[1], 1))
        for file in files:
            file.unlink(missing_ok=True)
        return len(files)

    def _statistics_files(self, init_index: int) -> list[Path]:
        """The chunk files of the final statistics of start date ``init_index``."""
        files = []
        for name in self.statistics_variables():
            array = self.group[name]
            axis = 0 if "_ensemble_" in name else 1  # dims (init, ...) or (threshold or quantile, init, ...)
            grid = [-(-size // step) for size, step in zip(array.shape, array.chunks)]
            grid[axis] = 1
            for index in np.ndindex(*grid):
                files.append(self._chunk_file(name, index[:axis] + (init_index // array.chunks[axis],) + index[axis + 1:]))
        return files

    def statistics_done(self, init_index: int) -> bool:
        return bool(self.group["manifest/statistics_done"][init_index] == 1) if "manifest/statistics_done" in self.group else True

    def write_statistics(self, init_index: int, result: dict) -> None:
        """Write final statistics (``EnsembleAccumulator.result()``) for one start date."""
        spec = self.schema.statistics
        for k, channel in enumerate(spec["channels"]):
            for name in STATISTICS:
                self.group[f"{channel}_ensemble_{name}"][init_index] = result[name][:, k]
            if channel in spec.get("thresholds", {}):
                self.group[f"{channel}_exceedance_probability"][:, init_index] = result[f"exceedance_{channel}"].transpose(1, 0, 2, 3)
            if spec.get("quantiles"):
                self.group[f"{channel}_quantile"][:, init_index] = result["quantile"][:, k].transpose(1, 0, 2, 3)
        self.group["manifest/statistics_done"][init_index] = 1

    def statistics_variables(self) -> list[str]:
        spec = self.schema.statistics
        names = []
        for channel in spec.get("channels", ()):
            names += [f"{channel}_ensemble_{name}" for name in STATISTICS]
            names += [f"{channel}_exceedance_probability"] if channel in spec.get("thresholds", {}) else []
            names += [f"{channel}_quantile"] if spec.get("quantiles") else []
        return names

    def member_checksums(self, init_index: int, start: int, stop: int) -> np.ndarray:
        """Checksums ``(stop - start, channel)`` of the stored values, all leads in order."""
        out = np.zeros((stop - start, len(self.channels)), dtype=np.int64)
        for k, name in enumerate(self.channels):
            values = self.group[name][start:stop, init_index]
            for i in range(stop - start):
                out[i, k] = _checksum(values[i])
        return out

    # -- checking and repair ----------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Problems found, one line each, naming the piece: members not finished; finished members whose
        shard file is missing, cannot be decoded (corrupt), or whose values no longer match the manifest
        checksum; statistics not finalised although every block's part is stored, finished members
        without a statistics part, statistics parts or final statistics that cannot be decoded.

        Reads every finished value once, shard by shard (a full scan of the store).
        """
        return [problem.message for problem in self.problems()]

    def problems(self) -> list["StoreProblem"]:
        """:meth:`verify`'s findings with the start date, members and files each concerns."""
        try:
            done = self.done[:]
            expected = self.checksums[:]
            if self.schema.statistics.get("channels"):
                self.group["manifest/statistics_done"][:], self.group["statistics_parts/complete"][:]
        except Exception as error:  # zarr and its codecs raise many types for a damaged chunk
            return self._bookkeeping_problems(error)
        problems = []
        shard = self.schema.store_layout.shard_members
        for i, init in enumerate(self.schema.init_times):
            missing = np.flatnonzero(done[i] != 1)
            if len(missing):
                problems.append(StoreProblem(f"init {init}: {len(missing)} member(s) not finished (first: "
                                             f"{missing[:5].tolist()})", i))
            finished = np.flatnonzero(done[i] == 1)
            for start, stop in (_runs(finished) if len(finished) else ()):
                for a in range(start - start % shard, stop, shard):  # one shard of members at a time
                    lo, hi = max(a, start), min(a + shard, stop)
                    for k, name in enumerate(self.channels):
                        problem, files = self._verify_piece(name, i, lo, hi, expected[i, lo:hi, k])
                        if problem:
                            members = (a, min(a + shard, self.schema.n_members)) if files is not None else (lo, hi)
                            problems.append(StoreProblem(f"init {init} members {lo}:{hi} channel {name}: {problem}",
                                                         i, members, damaged=True, files=tuple(files or ())))
            if self.schema.statistics.get("channels"):
                problems += self._statistics_problems(i, init, done[i])
        return problems

    def _bookkeeping_problems(self, error: Exception) -> list["StoreProblem"]:
        """Manifest and statistics-part flags that cannot be decoded, one chunk (one member, block or
        start date) each: repair removes the chunk, which reads as unfinished, and resets its members."""
        bad = [(f"manifest/{name}", index, file) for name, index, file in _undecodable_chunks(self.path / "manifest")]
        if "statistics_parts" in self.group:
            bad += [(f"statistics_parts/{name}", index, file)
                    for name, index, file in _undecodable_chunks(self.path / "statistics_parts", ("complete",))]
        if not bad:
            return [StoreProblem(f"manifest of {self.path} is unreadable ({type(error).__name__}: {error})")]
        problems = []
        for name, index, file in bad:
            where = f"{name} chunk {file.relative_to(self.path)} cannot be decoded (corrupt chunk)"
            if name == "manifest/statistics_done":
                problems.append(StoreProblem(where, index[0], files=(file,), finalise=True))
                continue
            members = self.blocks[index[1]] if name == "statistics_parts/complete" else (index[1], index[1] + 1)
            problems.append(StoreProblem(f"init {self.schema.init_times[index[0]]} members {members[0]}:{members[1]}: "
                                         f"{where}", index[0], members, damaged=True, files=(file,)))
        return problems

    def _statistics_problems(self, i: int, init: str, done: np.ndarray) -> list["StoreProblem"]:
        try:
            complete = self.statistics_complete(i)
        except Exception as error:
            return [StoreProblem(f"init {init}: statistics part flags cannot be decoded ({type(error).__name__})", i,
                                 (0, self.schema.n_members), damaged=True)]
        problems, final = [], self.statistics_done(i)
        for b, (lo, hi) in enumerate(self.blocks if not final else ()):  # final statistics need no parts
            if not complete[b]:
                if done[lo:hi].any():
                    problems.append(StoreProblem(f"init {init} members {lo}:{hi}: finished but their statistics part "
                                                 "is missing (inconsistent statistics)", i, (lo, hi), damaged=True))
                continue
            try:
                self.statistics_part(i, b)
            except Exception as error:
                problems.append(StoreProblem(f"init {init} members {lo}:{hi}: statistics part cannot be decoded "
                                             f"(corrupt chunk: {type(error).__name__})", i, (lo, hi), damaged=True))
        if not final:
            if complete.all() and not problems:
                problems.append(StoreProblem(f"init {init}: every block's statistics part is stored but the ensemble "
                                             "statistics were not finalised", i, finalise=True))
            return problems
        for name in self.statistics_variables():
            try:
                self.group[name][i] if "_ensemble_" in name else self.group[name][:, i]  # dims (init, ...) or (q, init, ...)
            except Exception as error:
                problems.append(StoreProblem(f"init {init}: final statistics {name} cannot be decoded (corrupt chunk: "
                                             f"{type(error).__name__})", i, finalise=True))
        return problems

    def reset(self, init_index: int, start: int, stop: int) -> list[tuple[int, int]]:
        """Mark members ``start:stop`` of a start date unfinished, so that a rerun computes them again.

        With streaming statistics not yet final, whole blocks are reset: the block's statistics part is
        dropped and the start date's statistics unfinalised; finished blocks without a part (a migrated
        store, or parts removed after finalisation) are reset too, since finalisation needs every part.
        Final statistics stay as they are (they came from the members as computed, not as stored; the
        rerun recomputes the same members). Returns the member ranges reset.
        """
        if not self.schema.statistics.get("channels") or self.statistics_done(init_index):
            self.done[init_index, start:stop] = 0
            return [(start, stop)] if stop > start else []
        complete = self.statistics_complete(init_index).copy()
        chosen = [b for b, (lo, hi) in enumerate(self.blocks) if lo < stop and start < hi]
        chosen += [b for b, (lo, hi) in enumerate(self.blocks) if not complete[b] and self.done[init_index, lo:hi].any()]
        chosen = sorted(set(chosen))
        for b in chosen:  # unfinished first: a crash in between leaves a part without done flags (rewritten)
            self.done[init_index, slice(*self.blocks[b])] = 0
        self.group["manifest/statistics_done"][init_index] = 0
        for b in chosen:
            self.group["statistics_parts/complete"][init_index, b] = 0
        return _merge([self.blocks[b] for b in chosen])

    def unfinalise(self, init_index: int) -> None:
        """Mark a start date's statistics not final (a rerun or ``check --repair`` finalises them again)."""
        self.group["manifest/statistics_done"][init_index] = 0

    def shard_files(self, name: str, member: int, init_index: int) -> list[Path]:
        """The files holding variable ``name`` for ``member`` at start date ``init_index`` (all leads)."""
        return [file for file, _, _ in self._shards(name, member, member + 1, init_index)]

    def _shards(self, name: str, lo: int, hi: int, init_index: int, lead_lo: int = 0, lead_hi: int | None = None):
        """``(file, members, leads)`` of the shards of ``name`` holding members ``lo:hi`` at leads ``lead_lo:lead_hi``."""
        array = self.group[name]
        shards = array.shards or array.chunks
        lead_hi = array.shape[2] if lead_hi is None else lead_hi
        for m in range(lo - lo % shards[0], hi, shards[0]):
            for lead in range(lead_lo - lead_lo % shards[2], lead_hi, shards[2]):
                yield (self._chunk_file(name, (m // shards[0], init_index // shards[1], lead // shards[2])),
                       (m, min(m + shards[0], array.shape[0])),
                       (lead, min(lead + shards[2], array.shape[2])))

    def _decodes(self, name: str, init_index: int, members: tuple, leads: tuple) -> bool:
        try:
            self.group[name][slice(*members), init_index, slice(*leads)]
            return True
        except Exception:
            return False

    def _remove_undecodable_shards(self, name, init_index, start, stop, lead_start, leads) -> bool:
        removed = False
        for file, members, lead_range in self._shards(name, start, stop, init_index, lead_start, lead_start + leads):
            if not file.is_file() or self._decodes(name, init_index, members, lead_range):
                continue
            others = [m for m in range(*members) if not start <= m < stop and self.done[init_index, m] == 1]
            if others:
                raise StoreError(f"shard file {file} cannot be decoded (corrupt chunk) and holds finished members "
                                 f"{others}: run `forecast check --repair {self.path}`, then rerun")
            file.unlink(missing_ok=True)
            removed = True
        return removed

    def _verify_piece(self, name: str, init_index: int, lo: int, hi: int, expected: np.ndarray):
        """``(problem, files)``: ``files`` lists the undecodable shard files to remove (``[]`` when the
        shard is missing), ``None`` when the files decode but values differ from the manifest."""
        files = self.shard_files(name, lo, init_index)
        absent = [str(f.relative_to(self.path)) for f in files if not f.is_file()]
        if absent:
            return f"shard file {', '.join(absent)} is missing (deleted chunk)", []
        where = ", ".join(str(f.relative_to(self.path)) for f in files)
        try:
            values = self.group[name][lo:hi, init_index]
        except Exception as error:  # a damaged shard fails in the sharding index, the codec or the shape check
            bad = [f for f, members, leads in self._shards(name, lo, hi, init_index)
                   if not self._decodes(name, init_index, members, leads)]
            where = ", ".join(str(f.relative_to(self.path)) for f in bad) or where
            return f"shard file {where} cannot be decoded (corrupt chunk: {type(error).__name__})", bad
        bad = [lo + m for m in range(hi - lo) if _checksum(values[m]) != expected[m]]
        if bad:
            return f"values of member(s) {bad} in {where} do not match the manifest checksum (corrupt chunk)", None
        return "", None


@dataclass(frozen=True)
class StoreProblem:
    """One finding of :meth:`EnsembleStore.problems`. ``damaged`` pieces hold wrong or missing values:
    repair removes ``files`` (undecodable shards) and resets ``members``; ``finalise`` problems are
    repaired by finalising the start date's statistics again from its parts."""

    message: str
    init_index: int | None = None
    members: tuple[int, int] | None = None
    damaged: bool = False
    files: tuple = ()
    finalise: bool = False


class Checksums:
    """Running checksums ``(member, channel)`` of a block's values fed lead by lead in order (arrays
    ``(member, channel, lat, lon)``); they equal what :meth:`EnsembleStore.member_checksums` computes
    from the stored values."""

    def __init__(self, n_members: int, n_channels: int):
        self.hashes = [[hashlib.sha256() for _ in range(n_channels)] for _ in range(n_members)]

    def update(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=np.float32)
        for m, row in enumerate(self.hashes):
            for k, h in enumerate(row):
                h.update(values[m, k].tobytes())

    def result(self) -> np.ndarray:
        return np.array([[digest_to_int(h.digest()) for h in row] for row in self.hashes], dtype=np.int64)


def check_version(path: Path, attrs: dict) -> None:
    """Refuse a store whose ``store_version`` is not this release's, with one line naming both versions
    and what to do (stores of release 1 carry no version attribute)."""
    version = attrs.get("store_version", 1)
    if version == STORE_VERSION:
        return
    writer = f"forecast {attrs.get('code_version', 'of an unknown version')}"
    if isinstance(version, int) and version < STORE_VERSION:
        raise StoreVersionError(f"store {path} has store layout version {version} (written by {writer}); this release "
                                f"reads and writes version {STORE_VERSION}: run `{MIGRATE_COMMAND} {path}` to convert it, "
                                "then rerun")
    raise StoreVersionError(f"store {path} has store layout version {version} (written by {writer}); this release "
                            f"reads version {STORE_VERSION} only: use the release that wrote it or a newer one")


def undecodable_files(path) -> list[Path]:
    """The chunk (or shard) files of the Zarr store at ``path`` (its top-level arrays) that cannot be
    decoded: where a checksum or codec error raised while reading it comes from. Reads the whole store."""
    return [file for _, _, file in _undecodable_chunks(path)]


def _undecodable_chunks(path, names=None) -> list[tuple[str, tuple, Path]]:
    """``(array, chunk index, file)`` of each chunk (or shard) of the group at ``path`` (its arrays
    ``names``, default all) that is stored but cannot be decoded."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(path), mode="r", use_consolidated=False)  # each array's own metadata
    bad = []
    for name, array in group.arrays():
        if names is not None and name not in names:
            continue
        grid = array.shards or array.chunks
        for index in np.ndindex(*(-(-size // step) for size, step in zip(array.shape, grid))):
            try:
                array[tuple(slice(i * step, (i + 1) * step) for i, step in zip(index, grid))]
            except Exception:
                bad.append((name, index, Path(path) / name / array.metadata.encode_chunk_key(index)))
    return bad


@contextlib.contextmanager
def undecodable_named(path, error: type = StoreError, what: str = "store"):
    """Turn a codec or checksum failure raised while reading the Zarr store at ``path`` into ``error``
    naming the chunk file (found by :func:`undecodable_files`, a full read, done only on failure); any
    other failure passes through unchanged."""
    try:
        yield
    except (OSError, StoreError):
        raise
    except (ValueError, RuntimeError) as failure:  # what crc32c, zstd and the shard index raise
        if isinstance(failure, error) or not Path(path).is_dir():
            raise
        files = undecodable_files(path)
        if not files:
            raise
        more = f" (and {len(files) - 1} more)" if len(files) > 1 else ""
        raise error(f"{what} {path}: chunk file {files[0]}{more} cannot be decoded (corrupt: "
                    f"{type(failure).__name__}: {failure})") from None


def _merge(ranges) -> list[tuple[int, int]]:
    """Sorted ranges with touching or overlapping ones joined."""
    out = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _runs(indices: np.ndarray):
    start = prev = int(indices[0])
    for i in indices[1:]:
        i = int(i)
        if i != prev + 1:
            yield start, prev + 1
            start = i
        prev = i
    yield start, prev + 1


INNER_CHUNK_BYTES = 1 << 20
SHARD_BUFFER_BYTES = 256 << 20


def shard_leads(batch_size: int, channels: int, grid_points: int, leads: int, budget: int = SHARD_BUFFER_BYTES) -> int:
    """Leads per shard: as many as a block of ``batch_size`` members can buffer within ``budget`` bytes
    (all of them for small grids, one for HENS-size states), so writers only ever write whole shards.

    >>> shard_leads(8, 4, 33 * 64, 21), shard_leads(2, 74, 721 * 1440, 61)
    (21, 1)
    """
    per_lead = batch_size * max(1, channels) * grid_points * 4
    return int(max(1, min(leads, budget // per_lead)))


def inner_leads(lead_chunk: int, field_bytes: int, target: int = INNER_CHUNK_BYTES) -> int:
    """Leads per inner chunk: the largest divisor of ``lead_chunk`` whose fields fit ``target`` bytes
    (at least one). A HENS field (4 MB) is its own chunk; on small grids a member's run of leads is one
    chunk, since reading thousands of tiny chunks one by one costs far more than their bytes.

    >>> inner_leads(21, 33 * 64 * 4), inner_leads(61, 721 * 1440 * 4), inner_leads(12, 300_000)
    (21, 1, 3)
    """
    fit = max(1, target // max(1, field_bytes))
    return max(k for k in range(1, lead_chunk + 1) if lead_chunk % k == 0 and k <= fit)


def _zstd(level: int = 3):
    """zstd with a content checksum: a damaged chunk fails to decode instead of giving wrong numbers."""
    import zarr

    return zarr.codecs.ZstdCodec(level=level, checksum=True)


def _codecs(layout: StoreLayout, channel: str) -> dict:
    encoding = {"compressors": [_zstd(layout.zstd_level)]}
    if channel in layout.keepbits:
        from zarr.codecs.numcodecs import BitRound

        encoding["filters"] = [BitRound(keepbits=layout.keepbits[channel])]
    return encoding


def _lazy_zeros(shape: tuple):
    """Float32 zeros of ``shape`` as one lazy Dask chunk: a data variable of the template, never computed."""
    import dask.array as da

    return da.zeros(shape, chunks=shape, dtype=np.float32)


def _write_template(path: Path, schema: StoreSchema, seeds: dict, title: str) -> None:
    import xarray as xr
    import zarr

    from forecast import __version__
    from forecast.cf import time_encoding, with_cf_attributes
    from forecast.channels import channel_attrs

    grid = Grid.from_dict(schema.grid)
    layout = schema.store_layout
    n_members, n_init, n_lead = schema.n_members, len(schema.init_times), len(schema.lead_hours)
    fields = (grid.nlat, grid.nlon)
    shard = (min(layout.shard_members, n_members), 1, min(layout.lead_chunk, n_lead), *fields)
    inner = (1, 1, inner_leads(shard[2], grid.nlat * grid.nlon * 4), *fields)
    init_times = np.array(schema.init_times, dtype="datetime64[ns]")
    lead_times = np.array(schema.lead_hours, dtype="timedelta64[h]").astype("timedelta64[ns]")
    coords = {
        "member": ("member", np.arange(n_members)),
        "init_time": ("init_time", init_times),
        "lead_time": ("lead_time", lead_times),
        "lat": ("lat", grid.lat, {"units": "degrees_north", "standard_name": "latitude"}),
        "lon": ("lon", grid.lon, {"units": "degrees_east", "standard_name": "longitude"}),
        "valid_time": (("init_time", "lead_time"), init_times[:, None] + lead_times[None, :], {"standard_name": "time"}),
    }
    for name, values in schema.members.items():
        values = np.asarray(values)
        coords[name] = ("member", values.astype(object) if values.dtype.kind == "U" else values)
    for name, values in seeds.items():
        coords[name] = (("init_time", "member"), np.asarray(values, dtype=np.int64))
    dims = ("member", "init_time", "lead_time", "lat", "lon")
    data, encoding = {}, {}
    for name in schema.channels:
        attrs = channel_attrs(name)
        if name in layout.keepbits:
            attrs["bitround_keepbits"] = layout.keepbits[name]
        data[name] = (dims, _lazy_zeros((n_members, n_init, n_lead, *fields)), attrs)
        encoding[name] = {"chunks": inner, "shards": shard, **_codecs(layout, name)}
    spec = schema.statistics
    stat_chunks = (1, shard[2], *fields)
    for channel in spec.get("channels", ()):
        attrs = channel_attrs(channel)
        for stat in STATISTICS:
            name = f"{channel}_ensemble_{stat}"
            data[name] = (dims[1:], _lazy_zeros((n_init, n_lead, *fields)),
                          {**attrs, "long_name": f"ensemble {stat} of {attrs['long_name']}", "cell_methods": f"member: {stat}"})
            encoding[name] = {"chunks": stat_chunks}
        thresholds = spec.get("thresholds", {}).get(channel)
        if thresholds:
            name, dim = f"{channel}_exceedance_probability", f"{channel}_threshold"
            coords[dim] = (dim, np.asarray(thresholds, dtype=np.float64), {"units": attrs["units"]})
            data[name] = ((dim, *dims[1:]), _lazy_zeros((len(thresholds), n_init, n_lead, *fields)),
                          {"units": "1", "long_name": f"fraction of members with {channel} above the threshold"})
            encoding[name] = {"chunks": (1, *stat_chunks)}
        if spec.get("quantiles"):
            coords["quantile"] = ("quantile", np.asarray(spec["quantiles"], dtype=np.float64))
            name = f"{channel}_quantile"
            data[name] = (("quantile", *dims[1:]), _lazy_zeros((len(spec["quantiles"]), n_init, n_lead, *fields)),
                          {**attrs, "long_name": f"ensemble quantile of {attrs['long_name']} (exact, from the tails)"})
            encoding[name] = {"chunks": (1, *stat_chunks)}
    attrs = {"title": title, "Conventions": "CF-1.10", "code_version": __version__,
             "layout": json.dumps(schema.layout), "statistics": json.dumps(spec)}
    attrs.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in schema.attrs.items()})
    ds = with_cf_attributes(xr.Dataset(data, coords=coords, attrs=attrs))
    encoding.update(time_encoding(ds))
    for name in ds.variables:  # every chunk the store holds is checksummed, coordinates included
        encoding.setdefault(name, {}).setdefault("compressors", [_zstd(layout.zstd_level)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BitRound is a numcodecs codec outside the v3 spec
        # metadata and coordinates only: the data variables' (never computed) zeros are one Dask chunk each, so
        # their chunks need not line up with the store's; one task per shard made a HENS store take hours
        ds.to_zarr(str(path), mode="w-", compute=False, consolidated=False, zarr_format=3, encoding=encoding,
                   safe_chunks=False)
    group = zarr.open_group(str(path), mode="r+")
    _create_manifest(group, schema)
    _create_statistics_parts(group, schema)
    group.attrs.update({"store_version": STORE_VERSION, "schema": schema.to_json()})  # written last
    consolidate(path)


def _create_manifest(group, schema: StoreSchema, values: dict | None = None) -> None:
    """The ``manifest`` arrays, one chunk per member (concurrent writers of neighbouring blocks never
    rewrite each other's flags), optionally filled with ``values`` (name -> array)."""
    n_init, n_members, n_channels = len(schema.init_times), schema.n_members, max(1, len(schema.channels))
    manifest = group.require_group("manifest")
    shapes = {"done": ((n_init, n_members), (1, 1), "uint8"),
              "checksum": ((n_init, n_members, n_channels), (1, 1, n_channels), "int64")}
    if schema.statistics.get("channels"):
        shapes["statistics_done"] = ((n_init,), (1,), "uint8")
    for name, (shape, chunks, dtype) in shapes.items():
        if name in manifest:
            continue
        array = manifest.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, compressors=[_zstd()])
        if values is not None and name in values:
            array[...] = values[name]


def _part_arrays(schema: StoreSchema) -> dict[str, tuple[tuple, str]]:
    """Shape (after start date and block) and dtype of each array of a block's statistics part: the
    fields of ``ensembles.stats.EnsembleAccumulator.to_arrays``."""
    spec, grid = schema.statistics, Grid.from_dict(schema.grid)
    leads, channels, fields = len(schema.lead_hours), len(spec["channels"]), (grid.nlat, grid.nlon)
    arrays = {"counts": ((leads,), "int64"), "mean": ((leads, channels, *fields), "float64"),
              "m2": ((leads, channels, *fields), "float64"), "min": ((leads, channels, *fields), "float32"),
              "max": ((leads, channels, *fields), "float32")}
    if spec.get("tail_members"):
        for name in ("top", "bottom"):
            arrays[name] = ((leads, channels, spec["tail_members"], *fields), "float32")
    for channel, thresholds in spec.get("thresholds", {}).items():
        arrays[f"exceed_{channel}"] = ((leads, len(thresholds), *fields), "int64")
    return arrays


FLAT_CHUNK_KEYS = {"name": "default", "separator": "."}


def _create_statistics_parts(group, schema: StoreSchema) -> None:
    """``statistics_parts``: one accumulator per (start date, block), each its own chunk, and the
    ``complete`` flags (one chunk each) written after them. Chunk keys are flat (``c.<init>.<block>.0``),
    so removing a part's chunks leaves no empty folders behind."""
    if not schema.statistics.get("channels"):
        return
    n_init, n_blocks = len(schema.init_times), len(schema.blocks())
    parts = group.require_group("statistics_parts")
    for name, (shape, dtype) in _part_arrays(schema).items():
        if name not in parts:
            parts.create_array(name, shape=(n_init, n_blocks, *shape), chunks=(1, 1, *shape), dtype=dtype,
                               fill_value=0, compressors=[_zstd()], chunk_key_encoding=FLAT_CHUNK_KEYS)
    if "complete" not in parts:
        parts.create_array("complete", shape=(n_init, n_blocks), chunks=(1, 1), dtype="uint8", fill_value=0,
                           compressors=[_zstd()], chunk_key_encoding=FLAT_CHUNK_KEYS)


def consolidate(path) -> None:
    """Rewrite the store's consolidated metadata (one read opens it: ``xr.open_zarr`` without a warning,
    :func:`forecast.open_store`). Call it after changing the attributes or arrays of the root group."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not yet in the v3 spec; BitRound neither
        zarr.consolidate_metadata(str(path))

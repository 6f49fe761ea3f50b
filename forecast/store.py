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
finished blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from forecast.errors import InputError, StoreError
from forecast.grid import Grid

STATISTICS = ("mean", "std", "min", "max")


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

    def differences(self, other: "StoreSchema") -> list[str]:
        a, b = json.loads(self.to_json()), json.loads(other.to_json())
        keys = [k for k in a if a[k] != b[k]]
        if "attrs" in keys:
            keys.remove("attrs")
            keys += [f"attrs.{k}" for k in sorted(set(a["attrs"]) | set(b["attrs"])) if a["attrs"].get(k) != b["attrs"].get(k)]
        return keys


def _checksum(values: np.ndarray) -> int:
    data = np.ascontiguousarray(values, dtype=np.float32).tobytes()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


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
            self.group = zarr.open_group(str(self.path), mode="r+" if os.access(self.path, os.W_OK) else "r",
                                         use_consolidated=False)
        attrs = dict(self.group.attrs)
        if "schema" not in attrs or "manifest" not in self.group:
            raise StoreError(f"{self.path} is not a complete ensemble store (no schema or manifest): it may be half-created")
        try:
            self.schema = StoreSchema.from_json(attrs["schema"])
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(f"{self.path} has an unreadable schema ({error})") from None
        self.channels = tuple(self.schema.channels)
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
            tmp = path.with_name(f".{path.name}.creating-{uuid.uuid4().hex[:12]}")
            try:
                tmp.mkdir()  # who may read it is the process umask's business (the `umask` setting)
                _write_template(tmp, schema, seeds or {}, title)
                os.rename(tmp, path)
            except OSError:
                if not path.exists():
                    raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
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
        index ``lead_start``; writers pass whole chunks of ``schema.lead_chunk`` leads (the last may be short)."""
        leads = values.shape[1]
        for k, name in enumerate(self.channels):
            self.group[name][start:stop, init_index, lead_start:lead_start + leads] = values[:, :, k]

    def finish(self, init_index: int, start: int, stop: int, checksums: np.ndarray) -> None:
        """Record members ``start:stop`` as complete with their checksums ``(stop - start, channel)``."""
        self.checksums[init_index, start:stop] = checksums
        self.done[init_index, start:stop] = 1

    def is_done(self, init_index: int, start: int, stop: int) -> bool:
        return bool(np.all(self.done[init_index, start:stop] == 1))

    # -- streaming statistics ---------------------------------------------------------------------
    def write_statistics_part(self, init_index: int, intervals: list[tuple[int, int]], arrays: dict) -> None:
        """Persist one accumulator covering members ``intervals`` at start date ``init_index``; it counts
        only once its ``complete`` flag is written, after its arrays."""
        group = self.group.require_group(f"statistics_parts/i{init_index}").create_group(uuid.uuid4().hex)
        for name, values in arrays.items():
            values = np.asarray(values)
            array = group.create_array(name, shape=values.shape, dtype=values.dtype, chunks=values.shape or None)
            array[...] = values
        group.attrs["members"] = [list(map(int, iv)) for iv in intervals]
        group.attrs["complete"] = True

    def statistics_parts(self, init_index: int) -> list[tuple[list, dict]]:
        """Complete parts ``(intervals, arrays)`` for a start date, ordered by their first member."""
        key = f"statistics_parts/i{init_index}"
        if key not in self.group:
            return []
        parts = []
        for _, group in self.group[key].groups():
            attrs = dict(group.attrs)
            if attrs.get("complete"):
                parts.append((attrs["members"], {name: array[...] for name, array in group.arrays()}))
        return sorted(parts, key=lambda part: part[0][0][0])

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

    def member_checksums(self, init_index: int, start: int, stop: int) -> np.ndarray:
        """Checksums ``(stop - start, channel)`` of the stored values, all leads in order."""
        out = np.zeros((stop - start, len(self.channels)), dtype=np.int64)
        for k, name in enumerate(self.channels):
            values = self.group[name][start:stop, init_index]
            for i in range(stop - start):
                out[i, k] = _checksum(values[i])
        return out

    def verify(self) -> list[str]:
        """Problems found, one line each, naming the piece: members not finished; finished members whose
        shard file is missing, cannot be decoded (corrupt), or whose values no longer match the manifest
        checksum; statistics not finalised although every member is done.

        Reads every finished value once, shard by shard (a full scan of the store).
        """
        return [problem.message for problem in self.problems()]

    def problems(self) -> list["StoreProblem"]:
        """:meth:`verify`'s findings with the start date and members each concerns."""
        try:
            done = self.done[:]
            expected = self.checksums[:]
        except Exception as error:  # zarr and its codecs raise many types for a damaged chunk
            return [StoreProblem(f"manifest of {self.path} is unreadable ({type(error).__name__}: {error})")]
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
                        problem = self._verify_piece(name, i, lo, hi, expected[i, lo:hi, k])
                        if problem:
                            problems.append(StoreProblem(f"init {init} members {lo}:{hi} channel {name}: {problem}",
                                                         i, (lo, hi), damaged=True))
            if len(missing) == 0 and not self.statistics_done(i):
                problems.append(StoreProblem(f"init {init}: every member is done but the ensemble statistics were "
                                             "not finalised", i))
        return problems

    def reset(self, init_index: int, start: int, stop: int) -> list[tuple[int, int]]:
        """Mark members ``start:stop`` of a start date unfinished, so that a rerun computes them again.

        With streaming statistics, a stored partial accumulator that includes any of these members is
        dropped and all of its members are reset too (they are recomputed together). Returns the member
        ranges reset.
        """
        ranges = [(start, stop)]
        key = f"statistics_parts/i{init_index}"
        parts = []
        if key in self.group:
            for name, group in self.group[key].groups():
                intervals = [tuple(iv) for iv in dict(group.attrs).get("members", [])]
                if any(lo < stop and start < hi for lo, hi in intervals):
                    ranges += intervals
                    parts.append(name)
        for lo, hi in ranges:  # unfinished first: a crash in between leaves a loud overlap, never a silent gap
            self.done[init_index, lo:hi] = 0
        for name in parts:
            del self.group[key][name]
        if "manifest/statistics_done" in self.group:
            self.group["manifest/statistics_done"][init_index] = 0
        return sorted(set(ranges))

    def shard_files(self, name: str, member: int, init_index: int) -> list[Path]:
        """The files holding variable ``name`` for ``member`` at start date ``init_index`` (all leads)."""
        array = self.group[name]
        shards = array.shards or array.chunks
        leads = range(0, array.shape[2], shards[2])
        keys = [array.metadata.encode_chunk_key((member // shards[0], init_index // shards[1], lead // shards[2], 0, 0))
                for lead in leads]
        return [self.path / name / key for key in keys]

    def _verify_piece(self, name: str, init_index: int, lo: int, hi: int, expected: np.ndarray) -> str:
        files = self.shard_files(name, lo, init_index)
        absent = [str(f.relative_to(self.path)) for f in files if not f.is_file()]
        if absent:
            return f"shard file {', '.join(absent)} is missing (deleted chunk)"
        where = ", ".join(str(f.relative_to(self.path)) for f in files)
        try:
            values = self.group[name][lo:hi, init_index]
        except Exception as error:  # a damaged shard fails in the sharding index, the codec or the shape check
            return f"shard file {where} cannot be decoded (corrupt chunk: {type(error).__name__})"
        bad = [lo + m for m in range(hi - lo) if _checksum(values[m]) != expected[m]]
        if bad:
            return f"values of member(s) {bad} in {where} do not match the manifest checksum (corrupt chunk)"
        return ""


@dataclass(frozen=True)
class StoreProblem:
    """One finding of :meth:`EnsembleStore.problems`; ``damaged`` pieces hold wrong values."""

    message: str
    init_index: int | None = None
    members: tuple[int, int] | None = None
    damaged: bool = False


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
        return np.array([[int.from_bytes(h.digest()[:8], "little") >> 1 for h in row] for row in self.hashes], dtype=np.int64)


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


def inner_leads(lead_chunk: int, field_bytes: int, target: int = INNER_CHUNK_BYTES) -> int:
    """Leads per inner chunk: the largest divisor of ``lead_chunk`` whose fields fit ``target`` bytes
    (at least one). A HENS field (4 MB) is its own chunk; on small grids a member's run of leads is one
    chunk, since reading thousands of tiny chunks one by one costs far more than their bytes.

    >>> inner_leads(21, 33 * 64 * 4), inner_leads(61, 721 * 1440 * 4), inner_leads(12, 300_000)
    (21, 1, 3)
    """
    fit = max(1, target // max(1, field_bytes))
    return max(k for k in range(1, lead_chunk + 1) if lead_chunk % k == 0 and k <= fit)


def _codecs(layout: StoreLayout, channel: str) -> dict:
    import zarr

    encoding = {"compressors": [zarr.codecs.ZstdCodec(level=layout.zstd_level)]}
    if channel in layout.keepbits:
        from zarr.codecs.numcodecs import BitRound

        encoding["filters"] = [BitRound(keepbits=layout.keepbits[channel])]
    return encoding


def _write_template(path: Path, schema: StoreSchema, seeds: dict, title: str) -> None:
    import dask.array as da
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
        data[name] = (dims, da.zeros((n_members, n_init, n_lead, *fields), chunks=shard, dtype=np.float32), attrs)
        encoding[name] = {"chunks": inner, "shards": shard, **_codecs(layout, name)}
    spec = schema.statistics
    stat_chunks = (1, shard[2], *fields)
    for channel in spec.get("channels", ()):
        attrs = channel_attrs(channel)
        for stat in STATISTICS:
            name = f"{channel}_ensemble_{stat}"
            data[name] = (dims[1:], da.zeros((n_init, n_lead, *fields), chunks=stat_chunks, dtype=np.float32),
                          {**attrs, "long_name": f"ensemble {stat} of {attrs['long_name']}", "cell_methods": f"member: {stat}"})
            encoding[name] = {"chunks": stat_chunks}
        thresholds = spec.get("thresholds", {}).get(channel)
        if thresholds:
            name, dim = f"{channel}_exceedance_probability", f"{channel}_threshold"
            coords[dim] = (dim, np.asarray(thresholds, dtype=np.float64), {"units": attrs["units"]})
            data[name] = ((dim, *dims[1:]), da.zeros((len(thresholds), n_init, n_lead, *fields), chunks=(1, *stat_chunks),
                                                    dtype=np.float32),
                          {"units": "1", "long_name": f"fraction of members with {channel} above the threshold"})
            encoding[name] = {"chunks": (1, *stat_chunks)}
        if spec.get("quantiles"):
            coords["quantile"] = ("quantile", np.asarray(spec["quantiles"], dtype=np.float64))
            name = f"{channel}_quantile"
            data[name] = (("quantile", *dims[1:]), da.zeros((len(spec["quantiles"]), n_init, n_lead, *fields),
                                                         chunks=(1, *stat_chunks), dtype=np.float32),
                          {**attrs, "long_name": f"ensemble quantile of {attrs['long_name']} (exact, from the tails)"})
            encoding[name] = {"chunks": (1, *stat_chunks)}
    attrs = {"title": title, "Conventions": "CF-1.10", "code_version": __version__,
             "layout": json.dumps(schema.layout), "statistics": json.dumps(spec)}
    attrs.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in schema.attrs.items()})
    ds = with_cf_attributes(xr.Dataset(data, coords=coords, attrs=attrs))
    encoding.update(time_encoding(ds))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BitRound is a numcodecs codec outside the v3 spec
        ds.to_zarr(str(path), mode="w-", compute=False, consolidated=False, zarr_format=3, encoding=encoding)
    group = zarr.open_group(str(path), mode="r+")
    manifest = group.create_group("manifest")
    manifest.create_array("done", shape=(n_init, n_members), chunks=(1, shard[0]), dtype="uint8", fill_value=0)
    manifest.create_array("checksum", shape=(n_init, n_members, max(1, len(schema.channels))),
                          chunks=(1, shard[0], max(1, len(schema.channels))), dtype="int64", fill_value=0)
    if spec.get("channels"):
        manifest.create_array("statistics_done", shape=(n_init,), chunks=(1,), dtype="uint8", fill_value=0)
    group.attrs["schema"] = schema.to_json()  # written last
    consolidate(path)


def consolidate(path) -> None:
    """Rewrite the store's consolidated metadata (one read opens it: ``xr.open_zarr`` without a warning,
    :func:`forecast.open_store`). Call it after changing the attributes or arrays of the root group."""
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not yet in the v3 spec; BitRound neither
        zarr.consolidate_metadata(str(path))

"""The ensemble store: one Zarr store per run, created once, written region by region, with a manifest.

Layout (``xarray.open_zarr(path)``): dims ``member, init_time, lead_time, lat, lon``; one float32
variable per channel with CF attributes; coordinates ``valid_time(init_time, lead_time)`` and, per
member, ``checkpoint``, ``model_family``, ``pair`` and ``sign``; per member and start date the seeds
``perturbation_seed`` and ``noise_seed``. Attributes record the checkpoints (names, families,
SHA-256), the member plan, the base seed, the perturbation settings, the batch size and the code
version, all as JSON strings, plus ``schema``: the JSON of everything that defines the run.

The store is created from the full coordinates (metadata only; unwritten values read as NaN). A
writer then writes only the members of its own blocks. The ``manifest`` subgroup (invisible to
``open_zarr``) holds ``done(init_time, member)`` and ``checksum(init_time, member, channel)``: a
block's checksums and done flags are written after all of its values, so a killed run leaves no
member marked done that is not complete, and a rerun skips exactly the finished blocks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from forecast.grid import Grid

MEMBER_COORDS = ("checkpoint", "model_family", "pair", "sign")


class StoreError(ValueError):
    """A store that does not exist, has another schema, or fails its manifest."""


@dataclass(frozen=True)
class StoreSchema:
    """Everything that defines a run's store; two runs may share a store only if these are equal."""

    channels: tuple
    grid: dict
    init_times: tuple  # ISO strings
    lead_hours: tuple
    n_members: int
    lead_chunk: int  # leads per Zarr chunk; writers write whole chunks of leads
    members: dict  # coordinate name -> list per member (checkpoint, model_family, pair, sign)
    attrs: dict  # JSON-able run description (checkpoints, plan, seed, perturbation, batch size)

    def to_json(self) -> str:
        return json.dumps(
            {"channels": list(self.channels), "grid": self.grid, "init_times": list(self.init_times),
             "lead_hours": list(self.lead_hours), "n_members": self.n_members, "lead_chunk": self.lead_chunk,
             "members": self.members,
             "attrs": self.attrs}, sort_keys=True)

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
        self.group = zarr.open_group(str(self.path), mode="r+" if os.access(self.path, os.W_OK) else "r")
        attrs = dict(self.group.attrs)
        if "schema" not in attrs or "manifest" not in self.group:
            raise StoreError(f"{self.path} is not a complete ensemble store (no schema or manifest): it may be half-created")
        self.schema = StoreSchema(**_schema_from_json(attrs["schema"]))
        self.channels = tuple(self.schema.channels)
        self.done = self.group["manifest/done"]
        self.checksums = self.group["manifest/checksum"]

    @classmethod
    def open(cls, path) -> "EnsembleStore":
        return cls(path)

    @classmethod
    def create(cls, path, schema: StoreSchema, seeds: dict[str, np.ndarray] | None = None,
               title: str = "ensemble forecast") -> "EnsembleStore":
        """Create the store at ``path`` for ``schema``, or check that the existing one has this schema."""
        path = Path(path)
        if path.exists():
            if not (path / "zarr.json").is_file() and any(path.iterdir()):
                raise StoreError(f"{path} exists and is not an ensemble store")
            if (path / "zarr.json").is_file():
                store = cls(path)
                diff = store.schema.differences(schema)
                if diff:
                    raise StoreError(f"existing store {path} has another schema (differs in {', '.join(diff)}); "
                                     "refusing to append: write to a new path or delete it")
                return store
        _write_template(path, schema, seeds or {}, title)
        return cls(path)

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

    def member_checksums(self, init_index: int, start: int, stop: int) -> np.ndarray:
        """Checksums ``(stop - start, channel)`` of the stored values, all leads in order."""
        out = np.zeros((stop - start, len(self.channels)), dtype=np.int64)
        for k, name in enumerate(self.channels):
            values = self.group[name][start:stop, init_index]
            for i in range(stop - start):
                out[i, k] = _checksum(values[i])
        return out

    def verify(self) -> list[str]:
        """Problems found: members not done, or whose values no longer match their checksums."""
        problems = []
        done = self.done[:]
        for i, init in enumerate(self.schema.init_times):
            missing = np.flatnonzero(done[i] != 1)
            if len(missing):
                problems.append(f"init {init}: {len(missing)} member(s) not finished (first: {missing[:5].tolist()})")
            finished = np.flatnonzero(done[i] == 1)
            if len(finished) == 0:
                continue
            expected = self.checksums[i]
            for start, stop in _runs(finished):
                actual = self.member_checksums(i, start, stop)
                bad = np.argwhere(actual != expected[start:stop])
                for m, k in bad:
                    problems.append(f"init {init} member {start + m} channel {self.channels[k]}: values do not match "
                                    "the manifest checksum (missing or corrupt chunk)")
        return problems


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


def _schema_from_json(text: str) -> dict:
    d = json.loads(text)
    return {"channels": tuple(d["channels"]), "grid": d["grid"], "init_times": tuple(d["init_times"]),
            "lead_hours": tuple(d["lead_hours"]), "n_members": d["n_members"], "lead_chunk": d["lead_chunk"],
            "members": d["members"], "attrs": d["attrs"]}


def _write_template(path: Path, schema: StoreSchema, seeds: dict, title: str) -> None:
    import dask.array as da
    import xarray as xr
    import zarr

    from forecast import __version__
    from forecast.channels import channel_attrs

    grid = Grid.from_dict(schema.grid)
    n_members, n_init, n_lead = schema.n_members, len(schema.init_times), len(schema.lead_hours)
    shape = (n_members, n_init, n_lead, grid.nlat, grid.nlon)
    chunks = (1, 1, schema.lead_chunk, grid.nlat, grid.nlon)
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
    data = {
        name: (("member", "init_time", "lead_time", "lat", "lon"), da.zeros(shape, chunks=chunks, dtype=np.float32), channel_attrs(name))
        for name in schema.channels
    }
    attrs = {"title": title, "Conventions": "CF-1.10", "code_version": __version__, "schema": schema.to_json()}
    attrs.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in schema.attrs.items()})
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    encoding = {name: {"chunks": chunks} for name in schema.channels}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_attrs = dict(attrs)
    del tmp_attrs["schema"]  # written last: a store without it is known to be half-created
    ds.attrs = tmp_attrs
    ds.to_zarr(str(path), mode="w-", compute=False, consolidated=False, zarr_format=3, encoding=encoding)
    group = zarr.open_group(str(path), mode="r+")
    manifest = group.create_group("manifest")
    manifest.create_array("done", shape=(n_init, n_members), chunks=(1, 1), dtype="uint8", fill_value=0)
    manifest.create_array("checksum", shape=(n_init, n_members, len(schema.channels)), chunks=(1, 1, len(schema.channels)),
                          dtype="int64", fill_value=0)
    group.attrs["schema"] = schema.to_json()

"""Synthetic ensembles and truths with known statistics, for tests, notebooks and benchmarks.

Each channel at each (start date, lead) is ``signal + noise``: the signal is a smooth field shared by
truth and members, the truth adds one draw of spatially smooth noise and every member its own, so the
members and the truth are exchangeable (a perfectly reliable ensemble) when ``spread_factor == 1``;
``spread_factor < 1`` makes it under-dispersive. Noise amplitude grows with lead time.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from forecast.channels import channel_attrs
from forecast.grid import Grid
from forecast.hashing import derived_seed

MOCK_SCALE = {"z500": 400.0, "t2m": 2.0, "u500": 3.0, "v500": 3.0, "tcwv": 2.0}
MOCK_MEAN = {"z500": 55000.0, "t2m": 285.0, "u500": 5.0, "v500": 0.0, "tcwv": 20.0}


def _rng(seed, *identity):
    """A numpy generator for one draw, seeded from its identity by the project's one seed derivation."""
    return np.random.default_rng(derived_seed("mock", seed, *identity))


def _smooth_noise(rng, shape, nlat, nlon):
    """Gaussian noise smoothed by a 3x3 box (twice), unit variance."""
    noise = rng.standard_normal(shape + (nlat, nlon))
    for _ in range(2):
        padded = np.pad(noise, [(0, 0)] * len(shape) + [(1, 1), (0, 0)], mode="edge")
        noise = sum(np.roll(padded[..., i:i + nlat, :], s, axis=-1) for i in range(3) for s in (-1, 0, 1)) / 9.0
    return noise / noise.std()


def mock_times(init_times: int = 2, leads: int = 4, dt_hours: int = 6, start: str = "2001-01-01T00"):
    init = np.datetime64(start, "ns") + np.arange(init_times) * np.timedelta64(24, "h")
    lead = (np.arange(leads) * np.timedelta64(dt_hours, "h")).astype("timedelta64[ns]")
    return init, lead


def mock_truth(channels=("z500", "t2m"), init_times: int = 2, leads: int = 4, nlat: int = 17, nlon: int = 32,
               dt_hours: int = 6, seed: int = 0, extra_days: int = 30) -> xr.Dataset:
    """The truth on a 6-hourly ``time`` axis covering every valid time plus ``extra_days`` before (a
    climate sample): dims ``(time, lat, lon)``, one float32 variable per channel."""
    grid = Grid(nlat, nlon)
    init, lead = mock_times(init_times, leads, dt_hours)
    first = init[0] - np.timedelta64(extra_days * 24, "h")
    last = init[-1] + lead[-1]
    time = np.arange(first, last + np.timedelta64(1, "s"), np.timedelta64(dt_hours, "h")).astype("datetime64[ns]")
    rng = _rng(seed, "truth")
    data = {}
    for k, name in enumerate(channels):
        scale, mean = MOCK_SCALE.get(name, 1.0), MOCK_MEAN.get(name, 0.0)
        signal = mean + scale * 3 * np.sin(np.radians(grid.lat))[:, None] * np.cos(np.radians(grid.lon) + k)[None, :]
        values = signal + scale * _smooth_noise(rng, (len(time),), nlat, nlon)
        data[name] = (("time", "lat", "lon"), values.astype(np.float32), channel_attrs(name))
    return xr.Dataset(data, coords={"time": time, "lat": grid.lat, "lon": grid.lon})


def mock_members(truth: xr.Dataset, members: int, init_times: int = 2, leads: int = 4, dt_hours: int = 6,
                 spread_factor: float = 1.0, seed: int = 0, member_offset: int = 0, member_count: int | None = None):
    """Member values ``(member, init_time, lead_time, channel, lat, lon)`` float32 for members
    ``member_offset : member_offset + member_count``; each member's noise comes from its own generator,
    so a block of members is the same whether made alone or with the rest.

    For start ``i`` and lead ``j`` the forecast centre is ``c = y - s_j e_0`` (``y`` the truth at the
    valid time, ``e_0`` a smooth unit-variance draw shared by the members) and member ``m`` is
    ``c + spread_factor * s_j e_m`` with its own draw ``e_m``: truth and members are exchangeable
    around ``c`` when ``spread_factor == 1``. The error scale ``s_j`` grows with lead.
    """
    count = members - member_offset if member_count is None else member_count
    init, lead = mock_times(init_times, leads, dt_hours)
    channels = list(truth.data_vars)
    nlat, nlon = truth.sizes["lat"], truth.sizes["lon"]
    out = np.empty((count, init_times, leads, len(channels), nlat, nlon), dtype=np.float32)
    error_scale = np.linspace(0.3, 1.0, leads) if leads > 1 else np.array([0.5])
    for k, name in enumerate(channels):
        scale = MOCK_SCALE.get(name, 1.0)
        for i, t in enumerate(init):
            for j, lt in enumerate(lead):
                y = truth[name].sel(time=t + lt).values.astype(np.float64)
                s = scale * error_scale[j]
                centre = y - s * _smooth_noise(_rng(seed, "centre", name, i, j), (), nlat, nlon)
                for m in range(count):
                    error = _smooth_noise(_rng(seed, "member", name, i, j, member_offset + m), (), nlat, nlon)
                    out[m, i, j, k] = centre + spread_factor * s * error
    return out


def mock_ensemble(members: int = 8, channels=("z500", "t2m"), init_times: int = 2, leads: int = 4, nlat: int = 17,
                  nlon: int = 32, spread_factor: float = 1.0, seed: int = 0):
    """An in-memory ``(forecast, truth)`` pair: forecast dims ``(member, init_time, lead_time, lat, lon)``
    like a store, truth dims ``(time, lat, lon)``.

    >>> forecast, truth = mock_ensemble(members=4, leads=2)
    >>> dict(forecast.sizes)
    {'member': 4, 'init_time': 2, 'lead_time': 2, 'lat': 17, 'lon': 32}
    """
    truth = mock_truth(channels, init_times, leads, nlat, nlon, seed=seed)
    values = mock_members(truth, members, init_times, leads, spread_factor=spread_factor, seed=seed)
    init, lead = mock_times(init_times, leads)
    coords = {"member": np.arange(members), "init_time": init, "lead_time": lead, "lat": truth["lat"], "lon": truth["lon"],
              "valid_time": (("init_time", "lead_time"), init[:, None] + lead[None, :])}
    forecast = xr.Dataset({name: (("member", "init_time", "lead_time", "lat", "lon"), values[:, :, :, k], truth[name].attrs)
                           for k, name in enumerate(truth.data_vars)}, coords=coords)
    return forecast, truth


def write_mock_store(path, members: int, channels=("z500", "t2m"), init_times: int = 1, leads: int = 4, nlat: int = 17,
                     nlon: int = 32, block: int = 256, spread_factor: float = 1.0, seed: int = 0, control: bool = False,
                     checkpoints: int = 1):
    """Write a synthetic ensemble store through :class:`forecast.store.EnsembleStore` (create, write block
    by block, finish) and its truth next to it (``<path>.truth.zarr``); returns ``(store_path, truth_path)``.
    Memory stays at one block of ``block`` members. ``checkpoints`` labels contiguous member blocks with
    checkpoint numbers (the values stay exchangeable)."""
    from pathlib import Path

    from dataclasses import asdict

    from forecast.store import Checksums, EnsembleStore, StoreLayout, StoreSchema

    path = Path(path)
    truth = mock_truth(channels, init_times, leads, nlat, nlon, seed=seed)
    init, lead = mock_times(init_times, leads)
    schema = StoreSchema(
        channels=tuple(channels), grid=Grid(nlat, nlon).to_dict(),
        init_times=tuple(np.datetime_as_string(t, "s") for t in init),
        lead_hours=tuple(int(h) for h in lead / np.timedelta64(1, "h")), n_members=members,
        layout=asdict(StoreLayout(shard_members=min(block, members), lead_chunk=leads + 1)),
        members={"checkpoint": [m * checkpoints // members for m in range(members)], "model_family": ["mock"] * members, "pair": list(range(members)),
                 "sign": [1] * members},
        attrs={"member_plan": {"control": control}, "mock": {"seed": seed, "spread_factor": spread_factor}},
    )
    store = EnsembleStore.create(path, schema)
    for i in range(init_times):
        for start in range(0, members, block):
            stop = min(members, start + block)
            if store.is_done(i, start, stop):
                continue
            values = mock_members(truth, members, init_times, leads, spread_factor=spread_factor, seed=seed,
                                  member_offset=start, member_count=stop - start)[:, i]
            store.write(i, start, stop, 0, values)
            sums = Checksums(stop - start, len(channels))
            for j in range(leads):
                sums.update(values[:, j])
            store.finish(i, start, stop, sums.result())
    truth_path = path.with_name(path.name.removesuffix(".zarr") + ".truth.zarr")
    if not truth_path.exists():
        truth.to_zarr(str(truth_path), mode="w", consolidated=False, zarr_format=3)
    return path, truth_path

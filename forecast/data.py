"""Data sources: where initial states, training samples and verifying truth come from.

A source is an ``xarray.Dataset`` in the system's layout: dims ``time, lat, lon``, one variable per
channel, latitudes north to south, longitudes east from 0. The planet writes this layout; real-data
readers convert their layouts to it. ``Source`` wraps such a dataset and answers with float32 arrays,
refusing what it cannot serve with a ``DataError`` that names the problem.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from forecast.grid import Grid


class DataError(ValueError):
    """Input data that cannot be used: missing channels or times, wrong grid, non-finite values."""


@dataclass
class Source:
    dataset: object  # xarray.Dataset
    name: str = "source"

    def __post_init__(self):
        ds = self.dataset
        for dim in ("time", "lat", "lon"):
            if dim not in ds.dims:
                raise DataError(f"{self.name}: no '{dim}' dimension (has {sorted(ds.dims)})")
        try:
            self.grid = Grid.from_coords(ds["lat"].values, ds["lon"].values)
        except ValueError as error:
            raise DataError(f"{self.name}: {error}") from None

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(v for v, da in self.dataset.data_vars.items() if da.dims == ("time", "lat", "lon"))

    @property
    def times(self) -> np.ndarray:
        return self.dataset["time"].values

    def check_channels(self, channels) -> None:
        missing = [c for c in channels if c not in self.channels]
        if missing:
            raise DataError(f"{self.name}: missing channel(s) {missing}; it has {list(self.channels)}")

    def check_grid(self, grid: Grid) -> None:
        if grid != self.grid:
            raise DataError(
                f"{self.name}: grid {self.grid.nlat}x{self.grid.nlon} ({self.grid.kind}) does not match the model grid "
                f"{grid.nlat}x{grid.nlon} ({grid.kind})"
            )

    def time_index(self, times) -> np.ndarray:
        times = np.atleast_1d(np.asarray(times, dtype="datetime64[ns]"))
        available = self.times.astype("datetime64[ns]")
        index = np.searchsorted(available, times)
        ok = (index < len(available)) & (available[np.minimum(index, len(available) - 1)] == times)
        if not ok.all():
            bad = times[~ok][0]
            raise DataError(
                f"{self.name}: time {np.datetime_as_string(bad, 'm')} is not in the data "
                f"({np.datetime_as_string(available[0], 'm')} to {np.datetime_as_string(available[-1], 'm')})"
            )
        return index

    def fields(self, times, channels) -> np.ndarray:
        """``(time, channel, lat, lon)`` float32 for the given times and channels."""
        self.check_channels(channels)
        index = self.time_index(times)
        arrays = []
        for name in channels:
            da = self.dataset[name]
            if not np.issubdtype(da.dtype, np.floating):
                raise DataError(f"{self.name}: channel {name} has dtype {da.dtype}; a floating-point field is required")
            arrays.append(np.asarray(da.isel(time=index).values, dtype=np.float32))
        return np.stack(arrays, axis=1)

    def initial_state(self, time, channels) -> np.ndarray:
        """``(1, channel, lat, lon)`` at ``time``; refuses non-finite values."""
        x = self.fields([time], channels)
        if not np.isfinite(x).all():
            bad = [c for k, c in enumerate(channels) if not np.isfinite(x[:, k]).all()]
            raise DataError(f"{self.name}: initial state at {np.datetime_as_string(np.datetime64(time, 'm'))} has NaN or Inf in {bad}")
        return x


def open_source(path, name: str | None = None) -> Source:
    """Open a dataset in the system's layout (a Zarr store or a netCDF file) as a ``Source``."""
    import xarray as xr

    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data source {path} does not exist")
    if path.endswith((".nc", ".nc4", ".netcdf")):
        ds = xr.open_dataset(path)
    else:
        try:
            ds = xr.open_zarr(path, consolidated=False)
        except Exception as error:  # zarr raises several types for a non-store path
            raise DataError(f"data source {path} is not a readable Zarr store ({error})") from None
    return Source(ds, name=name or path)


def normalisation_stats(source: Source, channels, times) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted mean and standard deviation per channel over ``times``."""
    weights = source.grid.area_weights()
    means, stds = [], []
    for name in channels:
        x = source.fields(times, [name])[:, 0].astype(np.float64)
        mean = float((x * weights).sum() / len(x))
        var = float((((x - mean) ** 2) * weights).sum() / len(x))
        means.append(mean)
        stds.append(np.sqrt(var) if var > 0 else 1.0)
    return np.array(means), np.array(stds)

"""Data sources: where initial states, training samples and verifying truth come from.

A source is an ``xarray.Dataset`` in the system's layout: dims ``time, lat, lon``, one variable per
channel, latitudes north to south, longitudes east from 0. The planet writes this layout; real-data
readers convert their layouts to it (``forecast.data.era5``: WeatherBench2, ARCO-ERA5, CDS netCDF;
``forecast.data.open.open_source`` chooses).
``Source`` wraps such a dataset and answers with float32 arrays, refusing what it cannot serve with a
``DataError`` that names the problem.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from forecast.errors import InputError
from forecast.grid import Grid


class DataError(InputError):
    """Input data that cannot be used: missing channels or times, wrong grid, non-finite values."""


@dataclass
class Source:
    """A dataset in the system's layout. ``missing`` maps channels a reader could not provide to the reason
    (what the file lacks); asking for one of them raises a ``DataError`` with that reason."""

    dataset: object  # xarray.Dataset
    name: str = "source"
    missing: dict = field(default_factory=dict)
    path: str = ""  # the file or store read, named when a chunk of it cannot be decoded

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
        """Channels served: the variables with dims ``(time, lat, lon)``."""
        return tuple(v for v, da in self.dataset.data_vars.items() if da.dims == ("time", "lat", "lon"))

    @property
    def times(self) -> np.ndarray:
        """The times the source holds."""
        return self.dataset["time"].values

    def check_channels(self, channels) -> None:
        """Raise a ``DataError`` naming what is missing (and what a reader would need) unless every one of
        ``channels`` is served."""
        missing = [c for c in channels if c not in self.channels]
        explained = [self.missing[c] for c in missing if c in self.missing]
        if explained:
            more = f" (and {len(explained) - 1} more missing channel(s): {missing})" if len(missing) > 1 else ""
            raise DataError(explained[0] + more)
        misshapen = [c for c in missing if c in self.dataset.data_vars]
        if misshapen:
            da = self.dataset[misshapen[0]]
            extra = [f"'{d}' of size {da.sizes[d]}" for d in da.dims if d not in ("time", "lat", "lon")]
            raise DataError(f"{self.name}: channel {misshapen[0]} has dimensions {da.dims}, not ('time', 'lat', 'lon')"
                            + (f": extra dimension {', '.join(extra)}" if extra else ""))
        if missing:
            from forecast.data.lexicon import describe, is_known_channel

            hints = "; ".join(f"{c} needs {describe(c)}" for c in missing[:3] if is_known_channel(c))
            raise DataError(f"{self.name}: missing channel(s) {missing}; it has {list(self.channels)}"
                            + (f" ({hints})" if hints else ""))

    def check_grid(self, grid: Grid) -> None:
        """Raise a ``DataError`` naming both grids unless the source is on ``grid``."""
        if grid != self.grid:
            raise DataError(
                f"{self.name}: grid {self.grid.nlat}x{self.grid.nlon} ({self.grid.kind}) does not match the model grid "
                f"{grid.nlat}x{grid.nlon} ({grid.kind}); set data.regrid: true to regrid it"
            )

    def time_index(self, times) -> np.ndarray:
        """Positions of ``times`` in the source; a ``DataError`` names the first time it lacks and the range
        it holds."""
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
        for name in channels:
            da = self.dataset[name]
            if not np.issubdtype(da.dtype, np.floating):
                raise DataError(f"{self.name}: channel {name} has dtype {da.dtype}; a floating-point field is required")
        # one compute for all channels: channels cut from one stored variable (levels) share its chunk reads
        from forecast.store import undecodable_named

        with undecodable_named(self.path, DataError, self.name) if self.path else contextlib.nullcontext():
            selected = self.dataset[list(dict.fromkeys(channels))].isel(time=index).load()
        return np.stack([np.asarray(selected[name].values, dtype=np.float32) for name in channels], axis=1)

    def initial_state(self, time, channels) -> np.ndarray:
        """``(1, channel, lat, lon)`` at ``time``; refuses non-finite values."""
        x = self.fields([time], channels)
        if not np.isfinite(x).all():
            bad = [c for k, c in enumerate(channels) if not np.isfinite(x[:, k]).all()]
            raise DataError(f"{self.name}: initial state at {np.datetime_as_string(np.datetime64(time, 'm'))} has NaN or Inf in {bad}")
        return x


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

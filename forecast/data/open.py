"""Opening a data source: a file or store in the system's layout is served as it is, anything else is read
as ERA5 (``forecast.data.era5``)."""

from __future__ import annotations

import logging
import os

from forecast.data.era5 import era5_dataset, open_era5
from forecast.data.lexicon import LEVEL_DIMS, candidate_variables, is_known_channel
from forecast.data.source import DataError, Source
from forecast.grid import Grid

log = logging.getLogger(__name__)


def _is_system_layout(ds) -> bool:
    """Dims ``time, lat, lon`` on a recognised grid, no level dimension, no ERA5 variable names."""
    if not {"time", "lat", "lon"} <= set(ds.dims) or any(d in ds.dims for d in LEVEL_DIMS):
        return False
    try:
        Grid.from_coords(ds["lat"].values, ds["lon"].values)
    except ValueError:
        return False
    era5_names = {n for c in ("u10m", "v10m", "u100m", "v100m", "t2m", "d2m", "sp", "msl", "tcwv", "z500", "t500",
                              "u500", "v500", "q500", "r500") for n, _ in candidate_variables(c)}
    return not any(str(v) in era5_names and not is_known_channel(str(v)) for v in ds.data_vars)


def system_dataset(ds, channels=None, name: str = "source") -> tuple[object, dict]:
    """``ds`` in the system's layout, whichever layout it came in, and why requested channels are missing.

    A dataset already in the system's layout is kept as it is; anything else is read as ERA5 in
    WeatherBench2, ARCO-ERA5 or CDS layout (``forecast.data.era5.era5_dataset``: names, levels, units,
    latitude order and longitude convention). With ``channels`` only those are kept; the second value
    maps each requested channel the data cannot provide to the reason.
    """
    fields = [v for v, da in ds.data_vars.items() if da.dims == ("time", "lat", "lon")]
    others = [c for c in channels or () if c in ds.data_vars and c not in fields]  # e.g. an ensemble dimension
    if others or not _is_system_layout(ds):
        return era5_dataset(ds, channels, name=name)
    if channels is None:
        return ds[fields], {}
    missing = {c: f"{name}: no variable {c} (it has {sorted(map(str, fields))})" for c in channels if c not in fields}
    return ds[[c for c in channels if c in fields]], missing


def open_source(path, name: str | None = None, grid: Grid | None = None, channels=None, regrid: bool = False) -> Source:
    """Open a data source (Zarr store or netCDF file) as a ``Source``.

    A dataset in the system's layout is served as it is. Anything else is read as ERA5 in WeatherBench2,
    ARCO-ERA5 or CDS layout (``forecast.data.era5.open_era5``), restricted to ``channels`` if given and
    served on ``grid`` if given. A source on another grid is regridded only with ``regrid=True``
    (config ``data.regrid``); otherwise it is refused with a ``DataError`` naming both grids.
    """
    import xarray as xr

    path = os.fspath(path)
    remote = "://" in path
    if not remote and not os.path.exists(path):
        raise DataError(f"data source {path} does not exist")
    if path.endswith((".nc", ".nc4", ".netcdf")):
        ds = xr.open_dataset(path)
    else:
        try:
            ds = xr.open_zarr(path, consolidated=None if remote else False)
        except Exception as error:  # zarr raises several types for a non-store path
            raise DataError(f"data source {path} is not a readable Zarr store ({error})") from None
    source = _open_layout(ds, path, name, grid, channels, regrid)
    source.path = path
    return source


def _open_layout(ds, path, name, grid, channels, regrid) -> Source:
    if _is_system_layout(ds):
        source = Source(ds, name=name or path)
        if grid is not None and source.grid != grid:
            if not regrid:
                source.check_grid(grid)
            from forecast.data.regrid import regrid_dataset

            regridded = regrid_dataset(ds, grid)
            log.info("%s: %s", name or path, regridded.attrs["regridding"])
            source = Source(regridded, name=name or path)
        return source
    return open_era5(ds, grid=grid, channels=channels, name=name or path, regrid=regrid)

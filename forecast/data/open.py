"""Opening a data source: a file or store in the system's layout is served as it is, anything else is read
as ERA5 (``forecast.data.era5``)."""

from __future__ import annotations

import logging
import os

from forecast.data.era5 import era5_dataset, open_era5
from forecast.channels import channel_attrs
from forecast.data.lexicon import (LEVEL_DIMS, LEVEL_NAMES, candidate_variables, is_known_channel, layout_meaning,
                                   level_in_hpa, units_conversion)
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


def forecast_channels(forecast):
    """A forecast whose variables carry ERA5 layout names (WeatherBench2 ``geopotential`` over ``level``,
    ``2m_temperature``; CDS ``z``, ``u10``) with one variable per channel in our names and units, through
    the lexicon the ERA5 reader uses; variables named as we name channels are kept as they are.

    >>> import numpy as np, xarray as xr
    >>> f = xr.Dataset({"geopotential": (("member", "level", "lat"), np.ones((2, 2, 3)), {"units": "m2 s-2"})},
    ...                coords={"level": [500, 850]})
    >>> sorted(forecast_channels(f).data_vars)
    ['z500', 'z850']
    """
    import xarray as xr

    level_short = {name: short for table in LEVEL_NAMES.values() for short, name in table.items()}
    out = {}
    for name, da in forecast.data_vars.items():
        level = next((d for d in LEVEL_DIMS if d in da.dims), None)
        if level and name in level_short:
            hpa = level_in_hpa(forecast[level].values, forecast[level].attrs.get("units"))
            pieces = {f"{level_short[name]}{int(p)}": da.isel({level: k}, drop=True)
                      for k, p in enumerate(hpa) if float(p).is_integer()}
        elif not level and layout_meaning(str(name)) not in (None, name):
            pieces = {layout_meaning(str(name)): da}
        else:
            out[name] = da
            continue
        for channel, field in pieces.items():
            try:
                conversion = units_conversion(channel, field.attrs.get("units"))
            except ValueError as error:
                raise DataError(f"forecast variable {name}: {error}") from None
            if not conversion.identity:
                field = field * conversion.scale + conversion.offset
            out[channel] = field.assign_attrs(channel_attrs(channel))
    return xr.Dataset(out, attrs=forecast.attrs)

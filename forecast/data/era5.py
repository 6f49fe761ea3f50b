"""ERA5 readers: WeatherBench2 Zarr, ARCO-ERA5 Zarr and CDS netCDF, served through the one ``Source`` interface.

:func:`era5_dataset` turns a dataset in any of these layouts (see ``forecast.data.lexicon``) into the system's
layout, lazily (Dask): dims ``time, lat, lon``, one float variable per channel (``t2m``, ``z500``, ...),
latitudes north to south, longitudes east from 0 in [0, 360). On the way it

- renames dimensions (``valid_time`` -> ``time``, ``latitude``/``longitude`` -> ``lat``/``lon``,
  ``level``/``pressure_level``/``isobaricInhPa``/``plev`` -> pressure levels in hPa),
- reverses ascending latitudes, moves -180..180 longitudes to 0..360 and sorts them,
- transposes ``(time, longitude, latitude)`` variables,
- merges the CDS ``expver`` dimension (ERA5 and ERA5T) and drops size-1 ``number`` dimensions,
- converts units (geopotential height -> geopotential, hPa -> Pa, ...),
- regrids to the model grid when one is given and the file's grid differs (``forecast.data.regrid``).

Channels a file cannot provide are recorded with the reason, and a request for them raises a
``DataError`` that names what the file lacks.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from forecast.channels import channel_attrs
from forecast.data.source import DataError, Source
from forecast.grid import Grid
from forecast.data.lexicon import (LAT_DIMS, LEVEL_DIMS, LON_DIMS, TIME_DIMS, candidate_variables, canonical_channel,
                              describe, layout_meaning, level_in_hpa, split_level,
                              units_conversion)

log = logging.getLogger(__name__)


def open_dataset(path):
    """Open a Zarr store or netCDF file lazily (Dask-backed), or raise a ``DataError``."""
    import warnings

    import xarray as xr

    path = os.fspath(path)
    if not os.path.exists(path):
        raise DataError(f"data source {path} does not exist")
    try:
        if path.endswith((".nc", ".nc4", ".netcdf", ".h5")) or os.path.isfile(path):
            return xr.open_dataset(path, chunks={})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "failed to open consolidated metadata"
            return xr.open_zarr(path, consolidated=None)
    except Exception as error:  # the backends raise many types for unreadable input
        raise DataError(f"data source {path} is not a readable Zarr store or netCDF file ({error})") from None


def _find(names, candidates):
    return next((n for n in candidates if n in names), None)


def _orientation(dataset, name):
    """Index arrays putting latitudes north->south and longitudes 0..360 ascending, and the new coordinates."""
    lat = np.asarray(dataset["lat"].values, dtype=np.float64)
    lon = np.asarray(dataset["lon"].values, dtype=np.float64)
    if lat.ndim != 1 or lon.ndim != 1:
        raise DataError(f"{name}: latitude and longitude must be 1-D coordinates (a regular lat-lon grid)")
    lat_index = np.argsort(-lat, kind="stable")
    wrapped = np.mod(lon, 360.0)
    wrapped[np.isclose(wrapped, 360.0)] = 0.0
    lon_index = np.argsort(wrapped, kind="stable")
    keep = np.concatenate([[True], np.diff(wrapped[lon_index]) > 1e-9])  # -180 and 180 are one column
    lon_index = lon_index[keep]
    return lat_index, lon_index, lat[lat_index], wrapped[lon_index]


def _as_slice(index: np.ndarray):
    """A slice for identity or reversed orders (cheaper than fancy indexing on Dask arrays), else the index."""
    n = len(index)
    if np.array_equal(index, np.arange(n)):
        return slice(None)
    if np.array_equal(index, np.arange(n)[::-1]):
        return slice(None, None, -1)
    return index


def _squeeze_extra_dims(da, name, variable):
    if "expver" in da.dims:  # CDS: ERA5 (1) and ERA5T (5) in one file, NaN where the other one holds data
        merged = da.isel(expver=0)
        for k in range(1, da.sizes["expver"]):
            merged = merged.fillna(da.isel(expver=k))
        da = merged
    for dim in list(da.dims):
        if dim in ("time", "lat", "lon", "level"):
            continue
        if da.sizes[dim] == 1:
            da = da.isel({dim: 0}, drop=True)
        else:
            raise DataError(f"{name}: variable {variable} has an extra dimension {dim!r} of size {da.sizes[dim]} "
                            "(an ensemble or forecast-step dimension?); select one value before reading")
    return da


def _canonical_dims(dataset, name):
    """Rename time/lat/lon/level dimensions to ``time``, ``lat``, ``lon``, ``level`` (hPa)."""
    dims = set(dataset.dims)
    time = _find(dims, TIME_DIMS)
    lat = _find(dims, LAT_DIMS)
    lon = _find(dims, LON_DIMS)
    missing = [role for role, found in (("time", time), ("latitude", lat), ("longitude", lon)) if found is None]
    if missing:
        raise DataError(f"{name}: no {' or '.join(missing)} dimension (looked for {TIME_DIMS}, {LAT_DIMS}, "
                        f"{LON_DIMS}; the file has dimensions {sorted(dims)})")
    renames = {time: "time", lat: "lat", lon: "lon"}
    level = _find(dims, LEVEL_DIMS)
    if level:
        renames[level] = "level"
    if all(d in dims for d in TIME_DIMS):
        raise DataError(f"{name}: both 'time' and 'valid_time' are dimensions (forecast data?); an analysis "
                        "file has one time dimension")
    # coordinates named like a target (e.g. a scalar "time" beside a "valid_time" dimension) would clash
    clashes = [new for old, new in renames.items() if new != old and new in dataset.variables]
    dataset = dataset.drop_vars(clashes).rename({old: new for old, new in renames.items() if old != new})
    if not np.issubdtype(dataset["time"].dtype, np.datetime64):
        raise DataError(f"{name}: time coordinate has dtype {dataset['time'].dtype}; datetimes are required")
    if "level" in dataset.dims:
        hpa = level_in_hpa(dataset["level"].values, dataset["level"].attrs.get("units"))
        dataset = dataset.assign_coords(level=("level", hpa))
    return dataset


def era5_dataset(dataset, channels=None, layout: str = "auto", name: str = "ERA5") -> tuple[object, dict]:
    """The system-layout dataset for an ERA5 dataset in any supported layout, and why channels are missing.

    Parameters
    ----------
    dataset : xarray.Dataset
        WeatherBench2, ARCO-ERA5 or CDS layout (or the system's own).
    channels : sequence of str, optional
        Channels to provide (default: every channel the file can provide).
    layout : str
        ``"auto"`` (any), ``"weatherbench2"``, ``"arco-era5"`` or ``"cds"``: which variable names to use.

    Returns
    -------
    (xarray.Dataset, dict)
        The dataset with dims ``time, lat, lon`` and one variable per channel, and
        ``{channel: reason}`` for requested channels it cannot provide.
    """
    import xarray as xr

    ds = _canonical_dims(dataset, name)
    lat_index, lon_index, lat, lon = _orientation(ds, name)
    levels = ds["level"].values if "level" in ds.dims else np.array([])
    if channels is None:
        channels = _available_channels(ds, layout, levels)
    channels = [canonical_channel(c) for c in channels]
    out, missing = {}, {}
    for channel in channels:
        try:
            da = _channel(ds, channel, layout, levels, name)
        except DataError as error:
            missing[channel] = str(error)
            continue
        if da is None:
            missing[channel] = f"{name}: no variable for channel {channel}: needs {describe(channel)}; the file has " \
                               f"variables {sorted(map(str, ds.data_vars))}"
            continue
        da = da.transpose("time", "lat", "lon").isel(lat=_as_slice(lat_index), lon=_as_slice(lon_index))
        da = da.reset_coords(drop=True).assign_coords(lat=("lat", lat), lon=("lon", lon))  # no stray coords
        da = da.copy(deep=False)
        da.attrs = channel_attrs(channel)  # the values are in our units now, and so are the attributes
        out[channel] = da
    result = xr.Dataset(out, coords={"time": ds["time"].values, "lat": lat, "lon": lon})
    result.attrs["source_layout"] = layout
    return result, missing


def _available_channels(ds, layout, levels):
    from forecast.data.lexicon import LEVEL_NAMES, SURFACE_NAMES, is_known_channel

    channels = [str(v) for v in ds.data_vars if is_known_channel(str(v)) and "level" not in ds[v].dims
                and layout_meaning(str(v)) in (None, str(v))]
    for surface in SURFACE_NAMES["weatherbench2"]:
        if surface not in channels and any(n in ds.data_vars for n, _ in candidate_variables(surface, layout)):
            channels.append(surface)
    for short in LEVEL_NAMES["weatherbench2"]:
        probe = f"{short}500"
        if any(n in ds.data_vars and "level" in ds[n].dims for n, _ in candidate_variables(probe, layout)):
            names = [f"{short}{int(round(p))}" for p in levels if float(p).is_integer()]
            channels += [c for c in names if c not in channels]
    return channels


def _channel(ds, channel, layout, levels, name):
    """The DataArray (time, lat, lon) for ``channel`` in our units, ``None`` if no variable provides it."""
    level = split_level(channel)
    direct = [(channel, False)] if layout_meaning(channel) in (None, channel) else []  # CDS u100 is 100 m wind
    candidates = direct + [c for c in candidate_variables(channel, layout) if c[0] != channel]
    for variable, is_height in candidates:
        if variable not in ds.data_vars:
            continue
        da = ds[variable]
        if variable == channel:  # already named as the system names it: a 2-D field per time
            if "level" in da.dims:
                if da.sizes["level"] != 1:
                    raise DataError(f"{name}: variable {variable} has a level dimension of size {da.sizes['level']}; "
                                    "a variable named like a channel is one field per time: select its level")
                da = da.isel(level=0, drop=True)  # written over a one-value level axis
        elif level:
            if "level" not in da.dims:
                continue
            match = np.flatnonzero(np.isclose(levels, level[1]))
            if len(match) == 0:
                shown = [int(p) if float(p).is_integer() else float(p) for p in levels]
                raise DataError(f"{name}: channel {channel} needs {variable} at {level[1]} hPa; the file's "
                                f"levels are {shown}")
            da = da.isel(level=int(match[0]), drop=True)
        elif "level" in da.dims:
            if da.sizes["level"] != 1:
                continue
            da = da.isel(level=0, drop=True)  # a surface field written over a one-value level axis
        da = _squeeze_extra_dims(da, name, variable)
        if not np.issubdtype(da.dtype, np.floating):
            raise DataError(f"{name}: variable {variable} has dtype {da.dtype}; a floating-point field is required")
        try:
            conversion = units_conversion(channel, da.attrs.get("units"), is_height)
        except ValueError as error:
            raise DataError(f"{name}: {error}") from None
        if not conversion.identity:
            da = da * conversion.scale + conversion.offset
            log.info("%s: %s from %s (x %g + %g)", name, channel, variable, conversion.scale, conversion.offset)
        if da.dtype == np.float16:
            da = da.astype(np.float32)
        return da
    return None


def open_era5(path_or_dataset, grid: Grid | None = None, channels=None, layout: str = "auto",
              regrid_method: str = "auto", name: str | None = None, regrid: bool = True) -> Source:
    """A ``Source`` over ERA5 in WeatherBench2, ARCO-ERA5 or CDS layout, on ``grid`` if given.

    Parameters
    ----------
    path_or_dataset : path or xarray.Dataset
        A Zarr store or netCDF file, or an opened dataset.
    grid : Grid, optional
        The model grid. If the file's grid differs the fields are regridded (``forecast.data.regrid``)
        when ``regrid`` is true, else refused; without it the file must be on a global equiangular or
        Gauss grid.
    channels : sequence of str, optional
        Channels to provide; default all the file can provide. Requesting one it lacks raises
        a ``DataError`` when it is read (``Source.check_channels``), naming what is missing.

    Examples
    --------
    >>> import xarray as xr
    >>> lat, lon = np.linspace(-90, 90, 5), np.arange(-180, 180, 45.0)
    >>> ds = xr.Dataset({"2m_temperature": (("time", "latitude", "longitude"), np.full((1, 5, 8), 280.0))},
    ...                 coords={"time": [np.datetime64("2020-01-01T00", "ns")], "latitude": lat, "longitude": lon})
    >>> source = open_era5(ds)
    >>> source.channels, source.grid
    (('t2m',), Grid(nlat=5, nlon=8, kind='equiangular'))
    >>> float(source.initial_state("2020-01-01T00", ["t2m"])[0, 0, 0, 0])
    280.0
    """
    if isinstance(path_or_dataset, (str, os.PathLike)):
        name = name or os.fspath(path_or_dataset)
        dataset = open_dataset(path_or_dataset)
    else:
        name = name or "ERA5"
        dataset = path_or_dataset
    ds, missing = era5_dataset(dataset, channels, layout, name)
    try:
        native = Grid.from_coords(ds["lat"].values, ds["lon"].values)
    except ValueError as error:
        native = None
        if grid is None:
            raise DataError(f"{name}: {error}; pass the model grid to regrid it") from None
    if grid is not None and native != grid:
        if not regrid:
            shape = f"{native.nlat}x{native.nlon}" if native else "an irregular grid"
            raise DataError(f"{name}: grid {shape} does not match the model grid {grid.nlat}x{grid.nlon}; "
                            "set data.regrid: true to regrid it")
        from forecast.data.regrid import regrid_dataset

        ds = regrid_dataset(ds, grid, regrid_method)
        log.info("%s: %s", name, ds.attrs["regridding"])
    return Source(ds, name=name, missing=missing)

"""Truth for scoring: any layout ``forecast run`` reads, put on the forecast's points and valid times.

One way in. A truth in the system's layout (the planet's nature run) or in an ERA5 layout
(WeatherBench2, ARCO-ERA5, CDS netCDF) becomes ``(time, lat, lon)`` fields named by channel through
the reader ``forecast run`` uses (``forecast.data.system_dataset``): names, levels
and units through the lexicon, extra variables left out. :func:`truth_on_forecast_grid` then takes the
forecast's own latitudes and longitudes out of it (either latitude order, either longitude convention,
a larger area cut to the forecast's), regridding only when asked, and :func:`align_truth` takes the
valid times ``init_time + lead_time`` out of a truth covering any longer period. Nothing is broadcast:
a truth on another grid, or with a dimension the forecast lacks, is refused with one line naming it.

Forecasts written by other tools are scored when their dimension names are given (``dims``: the
system's name -> theirs), e.g. earth2studio's ``{"member": "ensemble", "init_time": "time"}`` or
WeatherBench2's ``{"member": "realization", "init_time": "time", "lead_time": "prediction_timedelta"}``;
``latitude``/``longitude`` are recognised without being named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import xarray as xr

from forecast.errors import InputError

log = logging.getLogger(__name__)

#: the system's forecast dimensions (the roles ``dims`` may rename)
FORECAST_DIMS = ("member", "init_time", "lead_time", "lat", "lon")
_AXIS_NAMES = {"lat": ("latitude", "lat"), "lon": ("longitude", "lon"), "time": ("time", "valid_time")}
MATCH_DEGREES = 1e-3  # a truth point within this of a forecast point is that point


def _data_error(message: str):
    from forecast.data import DataError

    return DataError(message)


def forecast_channels(forecast: xr.Dataset) -> xr.Dataset:
    """A forecast in ERA5 layout names with one variable per channel in our names and units
    (``forecast.data.forecast_channels``, the ERA5 reader's lexicon)."""
    from forecast.data import forecast_channels as channels

    return channels(forecast)


# -- forecast dimension names -----------------------------------------------------------------------
def parse_dims(text: str | None) -> dict:
    """``"member=ensemble,init_time=time"`` -> ``{"member": "ensemble", "init_time": "time"}``.

    >>> parse_dims("member=realization, lead_time=prediction_timedelta")
    {'member': 'realization', 'lead_time': 'prediction_timedelta'}
    """
    dims = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        role, _, name = item.partition("=")
        role, name = role.strip(), name.strip()
        if not name or role not in FORECAST_DIMS:
            raise InputError(f"dimension name {item!r} must read ROLE=NAME with ROLE one of {list(FORECAST_DIMS)}")
        dims[role] = name
    return dims


def forecast_renames(dims_present, dims: dict | None = None, required=FORECAST_DIMS) -> dict:
    """``{their name: the system's name}`` for a forecast with dimensions ``dims_present``.

    ``dims`` maps roles (:data:`FORECAST_DIMS`) to the forecast's names; ``latitude``/``longitude``
    are found without it. Raises ``InputError`` naming a ``required`` role (or one named in ``dims``)
    the forecast lacks.

    >>> forecast_renames(["ensemble", "time", "lead_time", "lat", "lon"], {"member": "ensemble", "init_time": "time"})
    {'ensemble': 'member', 'time': 'init_time'}
    """
    dims = dict(dims or {})
    unknown = sorted(set(dims) - set(FORECAST_DIMS))
    if unknown:
        raise InputError(f"unknown forecast dimension role {unknown[0]!r}; roles are {list(FORECAST_DIMS)}")
    present = list(dims_present)
    for role in ("lat", "lon"):
        if role not in dims and role not in present:
            found = [d for d in _AXIS_NAMES[role] if d in present]
            if found:
                dims[role] = found[0]
    renames = {name: role for role, name in dims.items() if name != role}
    absent = [f"{role} ({name!r})" if name != role else repr(role)
              for role in FORECAST_DIMS for name in [dims.get(role, role)]
              if name not in present and (role in required or role in dims)]
    if absent:
        raise InputError(f"the forecast has no dimension for {', '.join(absent)} (its dimensions: {present}); "
                         "name them (--dims, or dims=), e.g. member=ensemble,init_time=time")
    return renames


def as_system_forecast(forecast, dims: dict | None = None, required=FORECAST_DIMS):
    """The forecast with the system's dimension names, and the renames to undo it (their name <- ours)."""
    renames = forecast_renames(forecast.dims, dims, required)
    return forecast.rename(renames), {ours: theirs for theirs, ours in renames.items()}


# -- truth fields -----------------------------------------------------------------------------------
def truth_fields(truth, channels, name: str = "truth", time_dim: str = "time"):
    """``(dataset, skipped)``: the truth as ``(time, lat, lon)`` fields for ``channels`` in the system's
    layout, and ``{channel: reason}`` for channels it cannot provide."""
    from forecast.data import system_dataset

    if time_dim not in ("time", *_AXIS_NAMES["time"]) and time_dim in truth.dims:
        truth = truth.rename({time_dim: "time"})
    fields, missing = system_dataset(truth, list(channels), name=name)
    return fields, {c: missing[c] for c in channels if c in missing}


def _rename_axes(truth, time_dim: str):
    """A DataArray truth with its time, latitude and longitude dimensions named ``time, lat, lon``."""
    renames = {time_dim: "time"} if time_dim in truth.dims else {}
    for role in ("lat", "lon", "time"):
        found = [d for d in _AXIS_NAMES[role] if d in truth.dims and d not in renames]
        if role not in truth.dims and role not in renames.values() and found:
            renames[found[0]] = role
    return truth.rename({k: v for k, v in renames.items() if k != v})


@dataclass(frozen=True)
class _Points:
    """Target latitudes (north to south) and longitudes (ascending) for ``forecast.data.regrid``."""

    lat: np.ndarray
    lon: np.ndarray

    @property
    def nlat(self) -> int:
        return len(self.lat)

    @property
    def nlon(self) -> int:
        return len(self.lon)


def describe_grid(lat, lon) -> str:
    """``17x32 (lat 90..-90, lon 0..348.75)``."""
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    if not lat.size or not lon.size:
        return f"{lat.size}x{lon.size}"
    return f"{lat.size}x{lon.size} (lat {lat[0]:g}..{lat[-1]:g}, lon {lon[0]:g}..{lon[-1]:g})"


def _matching(source: np.ndarray, target: np.ndarray, period: float | None = None):
    """Index into ``source`` of each ``target`` value (within :data:`MATCH_DEGREES`) when the targets are
    a run of neighbouring source points (the same spacing, either order), else None.

    >>> _matching(np.array([0.0, 90.0, 180.0, 270.0]), np.array([-90.0, 0.0]), period=360.0)
    array([3, 0])
    >>> _matching(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 2.0])) is None  # every other point
    True
    """
    diff = target[:, None] - source[None, :]
    if period:
        diff = (diff + period / 2) % period - period / 2
    index = np.abs(diff).argmin(axis=1)
    if not np.all(np.abs(diff[np.arange(len(target)), index]) <= MATCH_DEGREES):
        return None
    steps = np.diff(index) % len(source) if period else np.diff(index)
    forward, backward = (1, len(source) - 1) if period else (1, -1)
    if len(index) > 1 and not (np.all(steps == forward) or np.all(steps == backward)):
        return None
    return index


def _indexer(index: np.ndarray):
    """A slice where the index is a contiguous run (cheaper on Dask), else the index."""
    if len(index) > 1 and np.all(np.diff(index) == index[1] - index[0]) and index[1] != index[0]:
        step = int(index[1] - index[0])
        stop = int(index[-1]) + step
        return slice(int(index[0]), stop if stop >= 0 else None, step)
    return index


def truth_on_forecast_grid(truth, lat, lon, regrid: bool = False, name: str = "truth", method: str = "auto"):
    """The truth at the forecast's latitudes ``lat`` and longitudes ``lon`` (coordinates taken as given).

    The forecast's points are taken out of the truth when each is one of the truth's (either latitude
    order, longitudes in 0..360 or -180..180, a larger truth area cut down); otherwise the truth is
    regridded (``forecast.data.regrid``) when ``regrid`` is true and refused with a ``DataError`` naming both
    grids when not.
    """
    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    for axis in ("lat", "lon"):
        if axis not in truth.dims:
            raise _data_error(f"{name}: no {axis} dimension (dimensions {list(truth.dims)})")
    t_lat, t_lon = np.asarray(truth["lat"].values, float), np.asarray(truth["lon"].values, float)
    lat_index, lon_index = _matching(t_lat, lat), _matching(t_lon, lon, 360.0)
    if lat_index is not None and lon_index is not None:
        on_grid = truth.isel(lat=_indexer(lat_index), lon=_indexer(lon_index))
    elif regrid:
        from forecast.data import regrid_dataset

        lat_order, lon_order = np.argsort(-lat, kind="stable"), np.argsort(lon % 360.0, kind="stable")
        dataset = truth.to_dataset(name="_field") if isinstance(truth, xr.DataArray) else truth
        dataset = dataset.transpose(..., "lat", "lon")
        regridded = regrid_dataset(dataset, _Points(lat[lat_order], lon[lon_order] % 360.0), method)
        log.info("%s: regridded to the forecast grid (%s)", name, regridded.attrs["regridding"])
        on_grid = regridded.isel(lat=np.argsort(lat_order), lon=np.argsort(lon_order))
        on_grid = on_grid["_field"].rename(truth.name) if isinstance(truth, xr.DataArray) else on_grid
    else:
        raise _data_error(f"{name}: grid {describe_grid(t_lat, t_lon)} does not match the forecast grid "
                          f"{describe_grid(lat, lon)}; regrid the truth with --regrid (regrid=True)")
    return on_grid.assign_coords(lat=("lat", lat), lon=("lon", lon))


def forecast_truth(forecast, truth, regrid: bool = False, name: str = "truth", time_dim: str = "time"):
    """The truth's ``(time, lat, lon)`` fields on the forecast's grid, for the forecast's channels.

    ``forecast`` has the system's dimension names. A Dataset truth goes through the readers of
    ``forecast run`` (any supported layout); channels it lacks are left out with a warning naming them,
    and a truth sharing no channel is refused. A DataArray truth only has its axes renamed.
    """
    if isinstance(truth, xr.DataArray):
        fields = _rename_axes(truth, time_dim)
    else:
        if isinstance(forecast, xr.Dataset):  # the ensemble's fields, not statistics stored beside them
            ensemble = "member" in forecast.dims
            channels = [v for v, da in forecast.data_vars.items() if "member" in da.dims or not ensemble]
        else:
            channels = [forecast.name]
        fields, skipped = truth_fields(truth, channels, name, time_dim)
        if not fields.data_vars:
            reasons = "; ".join(dict.fromkeys(skipped.values()))
            raise _data_error(f"{name} shares no channel with the forecast ({channels}): {reasons}")
        if skipped:
            log.warning("%s lacks channel(s) %s; they are not scored (%s)", name, sorted(skipped),
                        next(iter(skipped.values())))
        if isinstance(forecast, xr.DataArray):
            fields = fields[forecast.name]
    if "time" not in fields.dims:
        raise _data_error(f"{name}: no time dimension (dimensions {list(fields.dims)})")
    return truth_on_forecast_grid(fields, forecast["lat"].values, forecast["lon"].values, regrid, name)


# -- truth at valid times ---------------------------------------------------------------------------
def valid_time_truth(forecast, truth, chunk_bytes: int = 64 << 20, name: str = "truth"):
    """Truth ``(time, lat, lon)`` on the forecast's grid taken at each valid time ``init_time + lead_time``.

    The distinct valid times are taken in one selection, gathered into chunks that hold all of them
    over a band of latitudes (about ``chunk_bytes``), and spread over ``(init_time, lead_time)`` inside
    each chunk, which keeps Dask graphs small whatever the number of leads.
    """
    init = forecast["init_time"].values
    leads = forecast["lead_time"].values
    valid = init[:, None] + leads[None, :]
    available = truth["time"].values
    if available.dtype.kind != "M":
        raise _data_error(f"{name}'s time coordinate holds {available.dtype} values, not dates and times "
                          "(give it CF units such as 'hours since 1970-01-01', or convert it to datetime64)")
    times_seen, counts = np.unique(available, return_counts=True)
    if (counts > 1).any():
        raise _data_error(f"{name} holds time {np.datetime_as_string(times_seen[counts > 1][0], 'm')} "
                          f"{counts.max()} times; each time must appear once")
    missing = np.setdiff1d(valid.ravel(), available)
    if len(missing):
        span = f"{np.datetime_as_string(available.min(), 'm')} to {np.datetime_as_string(available.max(), 'm')}" \
            if len(available) else "no times"
        raise _data_error(f"{name} lacks {len(missing)} valid time(s), first {np.datetime_as_string(missing[0], 'm')} "
                          f"(it covers {span})")
    times, position = np.unique(valid, return_inverse=True)
    subset = truth.sel(time=times)
    if subset.chunks:
        variables = subset.data_vars.values() if isinstance(subset, xr.Dataset) else [subset]
        itemsize = max(v.dtype.itemsize for v in variables)
        row_bytes = len(times) * subset.sizes.get("lon", 1) * itemsize
        rows = int(max(1, min(subset.sizes.get("lat", 1), chunk_bytes // row_bytes)))
        subset = subset.chunk({"time": -1, **({"lat": rows} if "lat" in subset.dims else {})})
    index = xr.DataArray(position.reshape(valid.shape), dims=("init_time", "lead_time"),
                         coords={"init_time": init, "lead_time": leads})
    aligned = subset.isel(time=index).drop_vars("time", errors="ignore")
    extra = [d for d in aligned.dims if d not in forecast.dims]
    if extra:
        raise _data_error(f"{name} has dimension(s) {extra} that the forecast lacks (forecast dimensions "
                          f"{list(forecast.dims)}); select one value of each before scoring")
    return aligned.transpose("init_time", "lead_time", ...)


def align_truth(forecast, truth, time_dim: str = "time", chunk_bytes: int = 64 << 20, regrid: bool = False,
                dims: dict | None = None, name: str = "truth"):
    """Truth at each forecast's valid time ``init_time + lead_time``, dims ``(init_time, lead_time, ...)``.

    Parameters
    ----------
    forecast : xarray.Dataset or DataArray
        The ensemble (or any forecast with ``init_time, lead_time, lat, lon``); the system's dimension
        names, or others given in ``dims``.
    truth : xarray.Dataset or DataArray
        Nature run, analyses or reanalysis with a time axis (``time_dim``, or ``time``/``valid_time``)
        in any layout ``forecast run`` reads: the system's, WeatherBench2, ARCO-ERA5 or CDS; covering
        the forecast's area and valid times or more. Channels the truth lacks are left out with a warning.
    regrid : bool
        Regrid a truth on another grid to the forecast's; without it such a truth is refused.
    dims : dict, optional
        The system's dimension name -> the forecast's (e.g. ``{"member": "ensemble", "init_time": "time"}``).

    Returns
    -------
    The truth with the forecast's dimension names (member left out), ready for the scores.

    Examples
    --------
    >>> from forecast.verify.mock import mock_ensemble
    >>> f, t = mock_ensemble(members=3, init_times=1, leads=2)
    >>> y = align_truth(f, t.isel(lat=slice(None, None, -1)))  # latitudes ascending: matched by value
    >>> y["z500"].dims, bool((y["z500"].isel(lead_time=1) == t["z500"].sel(time=f.valid_time[0, 1])).all())
    (('init_time', 'lead_time', 'lat', 'lon'), True)
    """
    ours, back = as_system_forecast(forecast, dims, required=("init_time", "lead_time", "lat", "lon"))
    on_grid = forecast_truth(ours, truth, regrid, name, time_dim)
    aligned = valid_time_truth(ours, on_grid, chunk_bytes, name)
    return aligned.rename({k: v for k, v in back.items() if k in aligned.dims or k in aligned.coords})

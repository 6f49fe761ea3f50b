"""CF metadata for what the project writes (ensemble stores, ``scores.nc``, NetCDF exports).

One place names every coordinate in CF terms (CF conventions 1.10, section 4 and appendix A):
``member`` is a ``realization``, ``init_time`` the ``forecast_reference_time``, ``lead_time`` the
``forecast_period``, ``lat``/``lon`` carry ``axis`` Y/X. Longitudes run from 0 to 360 degrees east
(:data:`LONGITUDE_CONVENTION`): select 74 W as ``lon=286``, or use :func:`longitude_360`.

String coordinates (``model_family``) are plain Python ``str`` in ``object`` arrays after
:func:`plain_strings`, so that ``xr.concat`` of two stores with different member counts can pad them.
"""

from __future__ import annotations

import numpy as np

LONGITUDE_CONVENTION = "0 to 360 degrees east (select 74 W as lon=286)"

COORDINATE_ATTRS = {
    "member": {"standard_name": "realization", "long_name": "ensemble member", "units": "1"},
    "init_time": {"standard_name": "forecast_reference_time", "long_name": "start time of the forecast"},
    "lead_time": {"standard_name": "forecast_period", "long_name": "lead time"},
    "valid_time": {"standard_name": "time", "long_name": "valid time (start time + lead time)"},
    "lat": {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north", "axis": "Y"},
    "lon": {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east", "axis": "X",
            "comment": f"longitudes run from {LONGITUDE_CONVENTION}"},
    "checkpoint": {"long_name": "index of the member's checkpoint", "units": "1"},
    "model_family": {"long_name": "model family of the member's checkpoint"},
    "pair": {"long_name": "index of the member's +/- perturbation pair (-1: unperturbed)", "units": "1"},
    "sign": {"long_name": "sign of the member's perturbation", "units": "1"},
    "perturbation_seed": {"long_name": "seed of the member's initial perturbation", "units": "1"},
    "noise_seed": {"long_name": "seed of the member's model noise", "units": "1"},
    "quantile": {"long_name": "probability of the quantile", "units": "1"},
    "channel": {"long_name": "model channel"},
    "region": {"long_name": "averaging region"},
    "event": {"long_name": "threshold event"},
}

#: on-disk encodings of the time coordinates (CF ``units``; xarray moves them to ``.encoding`` on open)
TIME_ENCODING = {
    "init_time": {"units": "hours since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"},
    "valid_time": {"units": "hours since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int64"},
    "lead_time": {"units": "hours", "dtype": "int64"},
}


def with_cf_attributes(ds):
    """A copy of ``ds`` with the CF attributes of :data:`COORDINATE_ATTRS` on every coordinate it has
    (``units`` only where the values are not times: xarray writes time units from the encoding) and the
    global ``Conventions`` and ``longitude_convention``.

    >>> import xarray as xr
    >>> ds = with_cf_attributes(xr.Dataset(coords={"member": [0, 1], "lon": [0.0, 90.0]}))
    >>> ds["member"].attrs["standard_name"], ds["lon"].attrs["axis"], ds.attrs["Conventions"]
    ('realization', 'X', 'CF-1.10')
    """
    ds = ds.copy()
    for name in ds.coords:
        attrs = dict(COORDINATE_ATTRS.get(str(name), {}))
        if ds[name].dtype.kind in "mM":
            attrs.pop("units", None)
        elif "units" not in attrs and "units" not in ds[name].attrs and ds[name].dtype.kind in "iuf":
            attrs["units"] = "1"
        ds[name].attrs.update(attrs)
    ds.attrs.setdefault("Conventions", "CF-1.10")
    if "lon" in ds.coords:
        ds.attrs["longitude_convention"] = LONGITUDE_CONVENTION
    return ds


def time_encoding(ds) -> dict:
    """:data:`TIME_ENCODING` for the time coordinates ``ds`` has; in seconds where a value is not a whole
    hour (integers either way, so nothing is lost)."""
    out = {}
    for name, value in TIME_ENCODING.items():
        if name not in ds.variables:
            continue
        values = np.asarray(ds[name].values)
        hour = np.timedelta64(1, "h")
        offsets = values - np.datetime64(0, "s") if values.dtype.kind == "M" else values
        whole = bool(np.all((offsets % hour) == np.timedelta64(0, "ns"))) if values.size else True
        out[name] = dict(value) if whole else {**value, "units": value["units"].replace("hours", "seconds", 1)}
    return out


def plain_strings(ds):
    """``ds`` with every string coordinate (numpy's ``StringDType``, fixed-width ``U``) as ``object``
    arrays of ``str``: what xarray pads with NaN in an outer ``xr.concat``."""
    changed = {}
    for name, variable in ds.coords.items():
        kind = getattr(variable.dtype, "kind", "")
        if kind in "UT" and variable.dtype != object:
            values = np.asarray(variable.values).astype(object)
            changed[name] = (variable.dims, values, variable.attrs)
    return ds.assign_coords(changed) if changed else ds


def longitude_360(lon: float) -> float:
    """A longitude in degrees east from -180..180 (or any) to the store's 0..360.

    >>> longitude_360(-74.0), longitude_360(10.0)
    (286.0, 10.0)
    """
    return float(lon) % 360.0

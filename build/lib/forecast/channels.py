"""Channel metadata: units and CF names for the short channel names used everywhere in the system.

A channel is one 2-D field on the model grid (``z500``, ``u10m``, ...). The store writes one data
variable per channel with these attributes.
"""

from __future__ import annotations

import re

# short name -> (units, long_name, standard_name or None)
_SURFACE = {
    "u10m": ("m s-1", "10 metre eastward wind", "eastward_wind"),
    "v10m": ("m s-1", "10 metre northward wind", "northward_wind"),
    "u100m": ("m s-1", "100 metre eastward wind", "eastward_wind"),
    "v100m": ("m s-1", "100 metre northward wind", "northward_wind"),
    "t2m": ("K", "2 metre temperature", "air_temperature"),
    "d2m": ("K", "2 metre dewpoint temperature", "dew_point_temperature"),
    "sp": ("Pa", "surface pressure", "surface_air_pressure"),
    "msl": ("Pa", "mean sea level pressure", "air_pressure_at_mean_sea_level"),
    "tcwv": ("kg m-2", "total column water vapour", "atmosphere_mass_content_of_water_vapor"),
}

_LEVEL_VARIABLES = {
    "z": ("m2 s-2", "geopotential", "geopotential"),
    "t": ("K", "temperature", "air_temperature"),
    "u": ("m s-1", "eastward wind", "eastward_wind"),
    "v": ("m s-1", "northward wind", "northward_wind"),
    "q": ("kg kg-1", "specific humidity", "specific_humidity"),
    "r": ("%", "relative humidity", "relative_humidity"),
}

PRESSURE_LEVELS = (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)

#: channels that cannot be negative: perturbations and forecasts are clipped at zero
NON_NEGATIVE = {"tcwv", "sp", "msl", "t2m", "d2m"} | {f"q{level}" for level in PRESSURE_LEVELS}


def channel_attrs(name: str) -> dict:
    """CF attributes for a channel's data variable.

    >>> channel_attrs("z500")["units"]
    'm2 s-2'
    >>> channel_attrs("my_field")
    {'units': '1', 'long_name': 'my_field'}
    """
    entry = _SURFACE.get(name)
    match = re.fullmatch(r"([a-z])(\d+)", name)
    if entry is None and match and match.group(1) in _LEVEL_VARIABLES:
        units, long_name, standard_name = _LEVEL_VARIABLES[match.group(1)]
        entry = (units, f"{long_name} at {match.group(2)} hPa", standard_name)
    if entry is None:
        return {"units": "1", "long_name": name}
    units, long_name, standard_name = entry
    attrs = {"units": units, "long_name": long_name}
    if standard_name:
        attrs["standard_name"] = standard_name
    return attrs

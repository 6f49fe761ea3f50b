"""The channel lexicon: where each of our short channel names lives in the ERA5 layouts, and in which units.

Our channels (``forecast.channels``) are 2-D fields named ``u10m``, ``t2m``, ``z500``, ... ERA5 comes in
three common layouts:

- **WeatherBench2** Zarr (``gs://weatherbench2/datasets/era5/...``): CF-style long names
  (``2m_temperature``, ``geopotential``), pressure levels along a ``level`` dimension (hPa),
  ``latitude``/``longitude`` (some stores use ``lat``/``lon``), latitudes often ascending.
- **ARCO-ERA5** Zarr (``gs://gcp-public-data-arco-era5/ar/...``): the same long names, 37 levels, hourly.
- **CDS netCDF** (the Copernicus Climate Data Store): ECMWF short names (``u10``, ``t2m``, ``z``),
  ``valid_time`` and ``pressure_level`` in the 2024+ CDS, ``time`` and ``level`` before.

Where a file stores geopotential *height* (``geopotential_height``, ``gh``, ``zg``; metres) instead of
geopotential (m2 s-2), it is multiplied by standard gravity. Other unit differences (hPa vs Pa,
degrees Celsius, g/kg) are converted from the variable's ``units`` attribute.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from forecast.channels import channel_attrs
from forecast.errors import InputError

#: standard gravity (m s-2), WMO: geopotential = G0 x geopotential height
G0 = 9.80665

LAYOUTS = ("weatherbench2", "arco-era5", "cds", "system")

_GOOGLE_SURFACE = {
    "u10m": "10m_u_component_of_wind",
    "v10m": "10m_v_component_of_wind",
    "u100m": "100m_u_component_of_wind",
    "v100m": "100m_v_component_of_wind",
    "t2m": "2m_temperature",
    "d2m": "2m_dewpoint_temperature",
    "sp": "surface_pressure",
    "msl": "mean_sea_level_pressure",
    "tcwv": "total_column_water_vapour",
}
_CDS_SURFACE = {"u10m": "u10", "v10m": "v10", "u100m": "u100", "v100m": "v100", "t2m": "t2m", "d2m": "d2m",
                "sp": "sp", "msl": "msl", "tcwv": "tcwv"}
_GOOGLE_LEVEL = {"u": "u_component_of_wind", "v": "v_component_of_wind", "z": "geopotential",
                 "t": "temperature", "q": "specific_humidity", "r": "relative_humidity"}
_CDS_LEVEL = {"u": "u", "v": "v", "z": "z", "t": "t", "q": "q", "r": "r"}

SURFACE_NAMES = {"weatherbench2": _GOOGLE_SURFACE, "arco-era5": _GOOGLE_SURFACE, "cds": _CDS_SURFACE}
LEVEL_NAMES = {"weatherbench2": _GOOGLE_LEVEL, "arco-era5": _GOOGLE_LEVEL, "cds": _CDS_LEVEL}
#: variables holding geopotential height (m) where geopotential is wanted
HEIGHT_NAMES = ("geopotential_height", "gh", "zg")

#: dimension names by role, in order of preference
TIME_DIMS = ("time", "valid_time")
LAT_DIMS = ("latitude", "lat")
LON_DIMS = ("longitude", "lon")
LEVEL_DIMS = ("level", "pressure_level", "isobaricInhPa", "plev")

#: ERA5 variable names other tools use for our channel names (makani packages name dewpoint ``2d``)
ALIASES = {"2d": "d2m", "2t": "t2m", "10u": "u10m", "10v": "v10m", "100u": "u100m", "100v": "v100m",
           "d2": "d2m", "t2": "t2m"}

_LEVEL_CHANNEL = re.compile(r"([a-z])(\d+)")


def canonical_channel(name: str) -> str:
    """Our short name for ``name`` (an alias such as makani's ``2d`` becomes ``d2m``).

    >>> canonical_channel("2d"), canonical_channel("z500")
    ('d2m', 'z500')
    """
    return ALIASES.get(name, name)


def split_level(channel: str) -> tuple[str, int] | None:
    """``("z", 500)`` for a pressure-level channel, ``None`` for a surface channel.

    >>> split_level("q850"), split_level("t2m")
    (('q', 850), None)
    """
    match = _LEVEL_CHANNEL.fullmatch(channel)
    if match and match.group(1) in _GOOGLE_LEVEL:
        return match.group(1), int(match.group(2))
    return None


def is_known_channel(channel: str) -> bool:
    """Whether the system knows ``channel`` (a surface channel or a variable on a pressure level)."""
    return channel in _GOOGLE_SURFACE or split_level(channel) is not None


def candidate_variables(channel: str, layout: str = "auto") -> list[tuple[str, bool]]:
    """``(variable name, holds geopotential height)`` pairs that can provide ``channel``, best first.

    >>> candidate_variables("z500", "cds")
    [('z', False), ('geopotential_height', True), ('gh', True), ('zg', True)]
    """
    layouts = [l for l in LAYOUTS if l != "system"] if layout == "auto" else [layout]
    if layout not in LAYOUTS and layout != "auto":
        raise InputError(f"unknown ERA5 layout {layout!r}; expected 'auto' or one of {LAYOUTS}")
    names: list[tuple[str, bool]] = []
    level = split_level(channel)
    for l in layouts:
        if l == "system":
            continue
        table = LEVEL_NAMES[l] if level else SURFACE_NAMES[l]
        key = level[0] if level else channel
        if key in table and (table[key], False) not in names:
            names.append((table[key], False))
    if level and level[0] == "z":
        names += [(h, True) for h in HEIGHT_NAMES]
    return names


def layout_meaning(variable: str) -> str | None:
    """The channel an ERA5 layout means by a 2-D variable name, ``None`` if no layout uses the name.

    CDS's ``u100`` is the 100 m wind (our ``u100m``), not ``u`` at 100 hPa:

    >>> layout_meaning("u100"), layout_meaning("t2m"), layout_meaning("z500")
    ('u100m', 't2m', None)
    """
    for table in SURFACE_NAMES.values():
        for channel, name in table.items():
            if name == variable:
                return channel
    return None


def describe(channel: str) -> str:
    """What a file needs to provide ``channel``, for error messages."""
    level = split_level(channel)
    google = _GOOGLE_LEVEL[level[0]] if level else _GOOGLE_SURFACE.get(channel, channel)
    cds = _CDS_LEVEL[level[0]] if level else _CDS_SURFACE.get(channel, channel)
    where = f" at {level[1]} hPa" if level else ""
    return f"'{google}' (WeatherBench2/ARCO) or '{cds}' (CDS){where}"


@dataclass(frozen=True)
class Conversion:
    """``value_in_our_units = value * scale + offset``."""

    scale: float = 1.0
    offset: float = 0.0

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0


def _normalise_units(units: str) -> str:
    text = units.strip().lower().replace("**", "").replace("^", "")
    return re.sub(r"\s+", " ", text)


# our units -> {file units (normalised) -> conversion}
_UNIT_TABLE = {
    "m2 s-2": {"m2 s-2": Conversion(), "m2/s2": Conversion(), "m2s-2": Conversion(),
               "m": Conversion(G0), "gpm": Conversion(G0), "dam": Conversion(10 * G0)},
    "Pa": {"pa": Conversion(), "hpa": Conversion(100.0), "mb": Conversion(100.0), "mbar": Conversion(100.0),
           "millibars": Conversion(100.0)},
    "K": {"k": Conversion(), "kelvin": Conversion(), "degc": Conversion(1.0, 273.15), "c": Conversion(1.0, 273.15),
          "celsius": Conversion(1.0, 273.15), "degrees_celsius": Conversion(1.0, 273.15)},
    "m s-1": {"m s-1": Conversion(), "m/s": Conversion(), "ms-1": Conversion()},
    "kg kg-1": {"kg kg-1": Conversion(), "kg/kg": Conversion(), "1": Conversion(), "g kg-1": Conversion(1e-3),
                "g/kg": Conversion(1e-3)},
    "kg m-2": {"kg m-2": Conversion(), "kg/m2": Conversion(), "mm": Conversion()},
    "%": {"%": Conversion(), "percent": Conversion()},
}


def units_conversion(channel: str, units: str | None, is_height: bool = False) -> Conversion:
    """How to convert a variable with ``units`` (its attribute, or ``None``) to ``channel``'s units.

    Raises ``ValueError`` naming the units when they are not convertible.

    >>> units_conversion("z500", "m", is_height=True).scale
    9.80665
    >>> units_conversion("sp", "hPa").scale
    100.0
    """
    ours = channel_attrs(channel)["units"]
    if units is None or not str(units).strip():
        return Conversion(G0) if is_height else Conversion()
    table = _UNIT_TABLE.get(ours)
    if table is None:
        return Conversion()
    conversion = table.get(_normalise_units(str(units)))
    if conversion is None:
        raise InputError(f"channel {channel} needs {ours}; the file's variable has units {units!r}, which this "
                         f"reader cannot convert (known: {sorted(table)})")
    return conversion


def level_in_hpa(values, units: str | None):
    """Pressure levels in hPa from a level coordinate (converts Pa, guesses Pa when values exceed 1100)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    unit = _normalise_units(units) if units else ""
    if unit == "pa" or (not unit and values.size and values.max() > 1100):
        return values / 100.0
    return values

"""The cosine of the solar zenith angle: an input of SFNO models trained with makani's ``add_zenith``.

The sun's position follows the low-precision formulas of Meeus (*Astronomical Algorithms*, ch. 25) as
also used by climt and makani: mean anomaly and mean longitude of the sun, the equation of the centre,
the obliquity of the ecliptic, and the Greenwich mean sidereal time (AIAA 2006). Accuracy is about
0.01 degree in declination, far below what matters for a weather model's input. Everything is
computed in float64. makani's own version runs in float32 and differs from this one by up to 5e-3 in
2010-2018, 7e-3 in 2024 and 1e-2 by 2029 (float32 cannot hold the sidereal time exactly; the gap grows with
the distance from 2000): :func:`cos_zenith_float32` reproduces it for models trained on it (docs/makani.md).

Times are UTC (``numpy.datetime64``, naive). Only numpy here.
"""

from __future__ import annotations

import numpy as np

#: J2000.0: 2000-01-01 12:00 UTC
J2000 = np.datetime64("2000-01-01T12:00:00", "ns")
_NS_PER_DAY = 86400 * 10**9


def julian_centuries(times) -> np.ndarray:
    """Julian centuries since J2000.0 for UTC ``times`` (any shape).

    >>> float(julian_centuries(np.datetime64("2000-01-01T12:00")))
    0.0
    """
    times = np.asarray(times, dtype="datetime64[ns]")
    days = (times - J2000).astype("timedelta64[ns]").astype(np.int64) / _NS_PER_DAY
    return np.asarray(days / 36525.0)


def sun_declination_and_right_ascension(times) -> tuple[np.ndarray, np.ndarray]:
    """The sun's declination and right ascension (radians) at UTC ``times``.

    >>> dec, _ = sun_declination_and_right_ascension(np.datetime64("2021-06-21T03:00"))
    >>> round(float(np.degrees(dec)), 2)  # June solstice
    23.44
    """
    t = julian_centuries(times)
    mean_anomaly = np.radians(357.52910 + 35999.05030 * t - 0.0001559 * t**2 - 0.00000048 * t**3)
    mean_longitude = 280.46645 + 36000.76983 * t + 0.0003032 * t**2
    centre = ((1.914600 - 0.004817 * t - 0.000014 * t**2) * np.sin(mean_anomaly)
              + (0.019993 - 0.000101 * t) * np.sin(2 * mean_anomaly)
              + 0.000290 * np.sin(3 * mean_anomaly))
    true_longitude = np.radians(mean_longitude + centre)
    obliquity = np.radians(23.0 + 26.0 / 60 + 21.406 / 3600.0
                           - (46.836769 * t - 0.0001831 * t**2 + 0.00200340 * t**3
                              - 0.576e-6 * t**4 - 4.34e-8 * t**5) / 3600.0)
    declination = np.arcsin(np.sin(obliquity) * np.sin(true_longitude))
    right_ascension = np.arctan2(np.cos(obliquity) * np.sin(true_longitude), np.cos(true_longitude))
    return declination, right_ascension


def greenwich_mean_sidereal_time(times) -> np.ndarray:
    """Greenwich mean sidereal time in radians, in [0, 2 pi)."""
    t = julian_centuries(times)
    seconds = 67310.54841 + (876600.0 * 3600.0 + 8640184.812866) * t + 0.093104 * t**2 - 6.2e-6 * t**3
    return np.mod(np.radians(seconds / 240.0), 2 * np.pi)


def cos_zenith(times, lat, lon) -> np.ndarray:
    """Cosine of the solar zenith angle, shape ``times.shape + (len(lat), len(lon))``.

    Parameters
    ----------
    times : datetime64 scalar or array
        Valid times, UTC.
    lat, lon : 1-D arrays
        Latitudes and longitudes of the grid in degrees.

    Examples
    --------
    >>> c = cos_zenith(np.datetime64("2021-03-20T12:00"), [0.0, 90.0], [0.0, 180.0])
    >>> c.shape
    (2, 2)
    >>> bool(c[0, 0] > 0.99 and c[0, 1] < -0.99)  # noon at (0N, 0E), midnight at 180E
    True
    """
    times = np.asarray(times, dtype="datetime64[ns]")
    declination, right_ascension = sun_declination_and_right_ascension(times)
    sidereal = greenwich_mean_sidereal_time(times)
    lat = np.radians(np.asarray(lat, dtype=np.float64))[:, None]
    lon = np.radians(np.asarray(lon, dtype=np.float64))[None, :]
    expand = (...,) + (None, None)
    hour_angle = sidereal[expand] + lon - right_ascension[expand]
    return (np.sin(lat) * np.sin(declination[expand])
            + np.cos(lat) * np.cos(declination[expand]) * np.cos(hour_angle))


def cos_zenith_float32(times, lat, lon) -> np.ndarray:
    """The cosine of the solar zenith angle as makani v0.1.0 computes it: the same formulas in float32.

    makani converts the time to float32 days since J2000.0 and evaluates every formula in float32, so
    Greenwich sidereal time (about 6e8 seconds of arc in 2020) is rounded to about a minute of time: the
    result differs from :func:`cos_zenith` by up to a few 1e-3. Checkpoints trained by makani saw these
    values, so imported makani models use this arithmetic by default (``docs/makani.md``). Other
    differences of makani's version, kept here: right ascension through the half-angle form
    ``2 atan2(y, x + r)``, declination as ``atan2(z, r)``, and the sidereal-time cubic coefficient
    ``6.2e-5`` (the AIAA value is ``6.2e-6``; the term is below 1e-9 s today).

    Parameters
    ----------
    times : datetime64 scalar or array
        Valid times, UTC.
    lat, lon : 1-D arrays
        Latitudes and longitudes of the grid in degrees.

    Returns
    -------
    numpy.ndarray
        float32, shape ``times.shape + (len(lat), len(lon))``.

    Examples
    --------
    >>> a = cos_zenith_float32(np.datetime64("2018-06-21T06:00"), [45.0], [90.0])
    >>> b = cos_zenith(np.datetime64("2018-06-21T06:00"), [45.0], [90.0])
    >>> a.dtype.name, bool(abs(float(a[0, 0]) - b[0, 0]) < 1e-2)
    ('float32', True)
    """
    f32 = np.float32
    times = np.asarray(times, dtype="datetime64[us]")
    shape = times.shape
    micro = (times.reshape(-1) - J2000.astype("datetime64[us]")).astype(np.int64)
    days = (micro / (86400 * 10**6)).astype(f32)[:, None, None]
    t = days / f32(36525.0)  # julian centuries, float32 throughout from here
    seconds = f32(67310.54841) + t * (f32(876600 * 3600 + 8640184.812866) + t * (f32(0.093104) - t * f32(6.2) * f32(10e-6)))
    sidereal = np.mod(np.deg2rad(seconds / f32(240.0)), f32(2 * np.pi)).astype(f32)
    anomaly = np.deg2rad(f32(357.52910) + f32(35999.05030) * t - f32(0.0001559) * t * t - f32(0.00000048) * t * t * t,
                         dtype=f32)
    longitude = np.deg2rad(f32(280.46645) + f32(36000.76983) * t + f32(0.0003032) * t**2, dtype=f32)
    centre = np.deg2rad((f32(1.914600) - f32(0.004817) * t - f32(0.000014) * t**2) * np.sin(anomaly)
                        + (f32(0.019993) - f32(0.000101) * t) * np.sin(f32(2) * anomaly)
                        + f32(0.000290) * np.sin(f32(3) * anomaly), dtype=f32)
    ecliptic = longitude + centre
    obliquity = np.deg2rad(f32(23.0 + 26.0 / 60 + 21.406 / 3600.0)
                           - (f32(46.836769) * t - f32(0.0001831) * t**2 + f32(0.00200340) * t**3
                              - f32(0.576e-6) * t**4 - f32(4.34e-8) * t**5) / f32(3600.0), dtype=f32)
    x = np.cos(ecliptic)
    y = np.cos(obliquity) * np.sin(ecliptic)
    z = np.sin(obliquity) * np.sin(ecliptic)
    r = np.sqrt(f32(1.0) - z * z)
    declination = np.arctan2(z, r)
    right_ascension = (f32(2.0) * np.arctan2(y, x + r)).astype(f32)
    lat2, lon2 = np.meshgrid(np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64), indexing="ij")
    lat_rad, lon_rad = np.deg2rad(lat2, dtype=f32)[None], np.deg2rad(lon2, dtype=f32)[None]
    hour_angle = sidereal + lon_rad - right_ascension
    out = np.sin(lat_rad) * np.sin(declination) + np.cos(lat_rad) * np.cos(declination) * np.cos(hour_angle)
    return out.astype(f32).reshape(shape + out.shape[1:])

"""The cos-zenith input against NOAA's independent approximation (Spencer's Fourier series)."""

import numpy as np

from forecast.solar import cos_zenith


def noaa_cos_zenith(time, lat, lon):
    """NOAA General Solar Position calculations (fractional year, declination, equation of time)."""
    t = np.datetime64(time, "s")
    year_start = t.astype("datetime64[Y]")
    day = (t - year_start).astype("timedelta64[s]").astype(float) / 86400.0
    days_in_year = 366 if ((year_start + np.timedelta64(1, "Y")) - year_start).astype(int) == 366 else 365
    hours = (t - t.astype("datetime64[D]")).astype("timedelta64[s]").astype(float) / 3600.0
    g = 2 * np.pi / days_in_year * (np.floor(day) + (hours - 12) / 24)
    eqtime = 229.18 * (0.000075 + 0.001868 * np.cos(g) - 0.032077 * np.sin(g) - 0.014615 * np.cos(2 * g)
                       - 0.040849 * np.sin(2 * g))
    decl = (0.006918 - 0.399912 * np.cos(g) + 0.070257 * np.sin(g) - 0.006758 * np.cos(2 * g) + 0.000907 * np.sin(2 * g)
            - 0.002697 * np.cos(3 * g) + 0.00148 * np.sin(3 * g))
    lat, lon = np.radians(np.asarray(lat))[:, None], np.asarray(lon)[None, :]
    true_solar_minutes = hours * 60 + eqtime + 4 * lon
    hour_angle = np.radians(true_solar_minutes / 4 - 180)
    return np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)


def test_cos_zenith_agrees_with_noaa_and_is_a_cosine():
    lat, lon = np.linspace(90, -90, 19), np.arange(0, 360, 15.0)
    for time in ["1980-02-29T18:00", "2000-06-21T12:00", "2021-09-23T03:00", "2023-12-31T21:00"]:
        ours = cos_zenith(np.datetime64(time), lat, lon)
        assert ours.shape == (19, 24) and np.all(np.abs(ours) <= 1.0)
        assert np.abs(ours - noaa_cos_zenith(time, lat, lon)).max() < 0.01
    times = np.array(["2020-01-01T00", "2020-01-01T06"], dtype="datetime64[ns]")
    both = cos_zenith(times, lat, lon)
    assert both.shape == (2, 19, 24) and np.allclose(both[1], cos_zenith(times[1], lat, lon))


def test_declination_at_the_2021_equinoxes_and_solstice():
    from forecast.solar import sun_declination_and_right_ascension

    for equinox in ("2021-03-20T09:37", "2021-09-22T19:21"):  # UTC, from the almanac
        assert abs(np.degrees(sun_declination_and_right_ascension(np.datetime64(equinox))[0])) < 0.01
    solstice = np.degrees(sun_declination_and_right_ascension(np.datetime64("2021-06-21T03:32"))[0])
    assert abs(solstice - 23.437) < 0.01


def test_makani_float32_cos_zenith_is_float32_agrees_with_noaa_and_stacks_times():
    from forecast.solar import cos_zenith_float32

    lat, lon = np.linspace(90, -90, 19), np.arange(0, 360, 15.0)
    for time in ["1980-02-29T18:00", "2000-06-21T12:00", "2021-09-23T03:00", "2023-12-31T21:00"]:
        ours = cos_zenith_float32(np.datetime64(time), lat, lon)
        assert ours.dtype == np.float32 and ours.shape == (19, 24)
        assert np.abs(ours - noaa_cos_zenith(time, lat, lon)).max() < 0.02  # float32 sidereal time: ~1e-2
    times = np.array(["2020-01-01T00", "2020-01-01T06"], dtype="datetime64[ns]")
    both = cos_zenith_float32(times, lat, lon)
    assert both.shape == (2, 19, 24) and np.array_equal(both[1], cos_zenith_float32(times[1], lat, lon))
    # far from 2000 the float32 arithmetic is measurably coarser than ours (the reason it is offered at all)
    assert np.abs(cos_zenith_float32(times, lat, lon) - cos_zenith(times, lat, lon)).max() > 1e-3

import numpy as np
import pytest

from forecast.data.planet import CHANNELS, PlanetConfig, analyses, nature_run

TINY = dict(nlat=17, nlon=32, solver_nlat=16, solver_nlon=32, truncation=10, solver_dt=3600, stirring_band=(3, 8))


@pytest.fixture(scope="module")
def truth():
    return nature_run(PlanetConfig(**TINY), np.datetime64("2000-01-01"), 40, spinup_days=10, seed=3)


def test_nature_run_layout_units_and_finite(truth):
    assert dict(truth.sizes) == {"time": 40, "lat": 17, "lon": 32}
    assert list(truth.data_vars) == list(CHANNELS)
    assert truth["z500"].attrs["units"] == "m2 s-2"
    assert truth["u500"].attrs["standard_name"] == "eastward_wind"
    for name in CHANNELS:
        assert np.isfinite(truth[name].values).all()
    assert (truth["tcwv"].values >= 0).all()
    assert np.diff(truth.time.values).astype("timedelta64[h]").astype(int).tolist() == [6] * 39


def test_weather_changes_and_same_seed_repeats(truth):
    # the stirred flow evolves: fields a day apart differ by a sizeable fraction of their spread
    z = truth["z500"].values
    assert np.abs(z[4] - z[0]).mean() > 0.02 * z.std()
    again = nature_run(PlanetConfig(**TINY), np.datetime64("2000-01-01"), 40, spinup_days=10, seed=3)
    assert np.array_equal(again["z500"].values, z)


def test_analyses_are_truth_plus_documented_error(truth):
    config = PlanetConfig(**TINY)
    a = analyses(truth, config, seed=5)
    for name, std in config.obs_error_std.items():
        error = (a[name] - truth[name]).values
        if name != "tcwv":  # tcwv is clipped at zero
            assert abs(error.std() / std - 1) < 0.15
    assert "observation error" in a.attrs["analysis"]

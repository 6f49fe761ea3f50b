import dask
import numpy as np
import properscoring
import pytest
import xarray as xr

from forecast import verify


def ensemble(m, n=200, seed=0, nan=False):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, m)).astype(np.float32)
    y = rng.normal(size=n).astype(np.float32)
    f[:20] = np.round(f[:20])  # ties
    y[:20] = np.round(y[:20])
    if nan:
        y[-5:] = np.nan
    return xr.DataArray(f, dims=("x", "member")), xr.DataArray(y, dims="x")


def brute_fair(f, y):
    m = f.shape[1]
    if m == 1:
        return np.full(len(y), np.nan)  # the fair CRPS of one member is undefined
    pair = np.abs(f[:, :, None] - f[:, None, :]).sum(axis=(1, 2))
    return np.abs(f - y[:, None]).mean(axis=1) - pair / (2 * m * (m - 1))


@pytest.mark.parametrize("m", [1, 2, 7, 50])
def test_crps_matches_properscoring_and_brute_force(m):
    f, y = ensemble(m, nan=True)
    standard = verify.crps(f, y, fair=False).values
    expected = properscoring.crps_ensemble(y.values.astype(np.float64), f.values.astype(np.float64))
    ok = np.isfinite(y.values)
    assert np.allclose(standard[ok], expected[ok], rtol=1e-5, atol=1e-6)
    assert np.isnan(standard[~ok]).all()
    fair = verify.crps(f, y).values
    assert np.allclose(fair[ok], brute_fair(f.values.astype(np.float64), y.values.astype(np.float64))[ok], rtol=1e-5, atol=1e-6, equal_nan=True)


def test_one_member_standard_crps_is_the_absolute_error_and_fair_crps_is_undefined():
    f, y = ensemble(1)
    assert np.allclose(verify.crps(f, y, fair=False).values, np.abs(f.values[:, 0] - y.values))
    assert np.isnan(verify.crps(f, y).values).all()


def test_area_weighted_mean_and_laziness():
    lat = np.array([60.0, 0.0, -60.0])
    f = xr.DataArray(np.random.default_rng(2).normal(size=(3, 4, 5)), dims=("lat", "lon", "member"),
                     coords={"lat": lat}).chunk({"lat": 1})
    y = xr.DataArray(np.zeros((3, 4)), dims=("lat", "lon"), coords={"lat": lat})
    calls = []

    def counting_scheduler(dsk, keys, **kwargs):
        calls.append(1)
        return dask.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=counting_scheduler):
        score = verify.crps(f, y, dim=["lat", "lon"])
        assert calls == []  # nothing computed yet
        value = float(score.compute())
    assert calls
    pointwise = verify.crps(f, y).mean("lon").values
    w = verify.latitude_weights(lat)
    assert np.isclose(value, (pointwise * w).sum() / w.sum())


def test_spread_skill_ratio_is_one_for_an_exchangeable_ensemble():
    rng = np.random.default_rng(3)
    truth_and_members = rng.normal(size=(40000, 8))
    f = xr.DataArray(truth_and_members[:, 1:], dims=("x", "member"))
    y = xr.DataArray(truth_and_members[:, 0], dims="x")
    assert abs(float(verify.spread_skill_ratio(f, y, dim="x")) - 1) < 0.03


def test_rank_histogram_counts_ranks_and_is_flat_for_exchangeable_data():
    f, y = ensemble(7, n=5000, seed=4, nan=True)
    counts = verify.rank_histogram(f, y, dim="x")
    assert counts.sizes["rank"] == 8
    assert int(counts.sum()) == 5000 - 5
    untied = slice(20, None)
    brute = (f.values[untied] < y.values[untied, None]).sum(axis=1)
    brute = brute[np.isfinite(y.values[untied])]
    expected = np.bincount(brute, minlength=8)
    got = verify.rank_histogram(f[untied], y[untied], dim="x").values
    assert np.array_equal(got, expected)
    assert got.min() > 0.8 * got.mean()

"""Every public score against an independent reference: other libraries, brute force, closed forms."""

import numpy as np
import properscoring
import pytest
import xarray as xr
import xskillscore as xs
from scipy.special import comb
from scipy.stats import norm

from forecast import verify

RTOL = 1e-5


def ensemble(m, n=300, seed=0, nan=True, ties=True):
    """float32 members ``(x, member)`` and truth ``(x,)`` with ties, NaN truths and NaN members."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, m)).astype(np.float32)
    y = rng.normal(size=n).astype(np.float32)
    if ties:
        f[:30] = np.round(f[:30])
        y[:30] = np.round(y[:30])
    if nan:
        y[-5:] = np.nan
        if m > 1:
            f[40:50, 0] = np.nan  # some members missing
        f[50:52, :] = np.nan  # every member missing
    return xr.DataArray(f, dims=("x", "member")), xr.DataArray(y, dims="x")


def brute_crps(f, y, fair):
    """O(M^2) CRPS over the non-NaN members (the identity E|X - y| - E|X - X'| / 2)."""
    out = np.full(len(y), np.nan)
    for p in range(len(y)):
        x = f[p][np.isfinite(f[p])].astype(np.float64)
        m = len(x)
        if m == 0 or not np.isfinite(y[p]):
            continue
        pair = np.abs(x[:, None] - x[None, :]).sum()
        out[p] = np.abs(x - float(y[p])).mean() - (pair / (2 * m * (m - 1)) if fair and m > 1 else np.nan if fair else pair / (2 * m * m))
    return out


def close(a, b, rtol=RTOL):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN patterns differ"
    ok = ~np.isnan(a)
    np.testing.assert_allclose(a[ok], b[ok], rtol=rtol, atol=1e-12 * max(1.0, np.abs(b[ok]).max(initial=0)))


# -- CRPS ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 7, 50])
def test_crps_standard_matches_properscoring_and_fair_matches_brute_force(m):
    f, y = ensemble(m)
    expected = properscoring.crps_ensemble(y.values.astype(np.float64), f.values.astype(np.float64))
    close(verify.crps(f, y, fair=False), expected)
    close(verify.crps(f, y, fair=False), brute_crps(f.values, y.values, fair=False))
    close(verify.crps(f, y), brute_crps(f.values, y.values, fair=True))


@pytest.mark.parametrize("m", [2, 7, 50])
def test_crps_matches_scores_both_estimators(m):
    from scores.probability import crps_for_ensemble

    f, y = ensemble(m, nan=False)
    for fair, method in ((True, "fair"), (False, "ecdf")):
        theirs = crps_for_ensemble(f.astype(np.float64), y.astype(np.float64), "member", method=method, preserve_dims="all")
        close(verify.crps(f, y, fair=fair), theirs)


def test_crps_on_float64_and_member_major_layout_and_dataset():
    f, y = ensemble(9, nan=False)
    first = verify.crps(f, y).values
    close(verify.crps(f.astype(np.float64), y.astype(np.float64)), first)
    close(verify.crps(f.transpose("member", "x").copy(), y), first)  # member-major memory layout
    ds = verify.crps(xr.Dataset({"a": f, "b": f * 2}), xr.Dataset({"a": y, "b": y * 2}))
    close(ds["b"], 2 * first)


def test_crps_closed_form_for_a_large_normal_ensemble():
    m = 4000
    members = norm.ppf((np.arange(m) + 0.5) / m)  # a normal ensemble without sampling noise
    y = np.array([0.0, 0.5, 2.0])
    f = xr.DataArray(np.tile(members, (3, 1)), dims=("x", "member"))
    closed = y * (2 * norm.cdf(y) - 1) + 2 * norm.pdf(y) - 1 / np.sqrt(np.pi)
    for fair in (True, False):
        np.testing.assert_allclose(verify.crps(f, xr.DataArray(y, dims="x"), fair=fair).values, closed, atol=1e-3)


def test_one_member_crps_is_the_absolute_error_and_a_perfect_ensemble_scores_zero():
    f, y = ensemble(1, nan=False)
    close(verify.crps(f, y, fair=False), np.abs(f.values[:, 0] - y.values))
    assert np.isnan(verify.crps(f, y).values).all()  # the fair CRPS needs two members
    same = xr.DataArray(np.repeat(y.values[:, None], 5, axis=1), dims=("x", "member"))
    assert np.abs(verify.crps(same, y, fair=False).values).max() == 0


@pytest.mark.parametrize("tail", ["upper", "lower"])
@pytest.mark.parametrize("m", [2, 7, 50])
def test_twcrps_matches_scores(m, tail):
    from scores.probability import tail_tw_crps_for_ensemble

    f, y = ensemble(m, nan=False)
    threshold = 0.3
    for fair, method in ((True, "fair"), (False, "ecdf")):
        theirs = tail_tw_crps_for_ensemble(f.astype(np.float64), y.astype(np.float64), "member", threshold=threshold,
                                           tail=tail, method=method, preserve_dims="all")
        close(verify.twcrps(f, y, threshold, tail=tail, fair=fair), theirs)


def test_twcrps_with_nans_and_a_threshold_field_matches_brute_force():
    f, y = ensemble(7)
    t = xr.DataArray(np.linspace(-1, 1, y.sizes["x"]), dims="x")
    clipped = np.maximum(f.values, t.values[:, None])
    close(verify.twcrps(f, y, t), brute_crps(clipped, np.where(np.isnan(y), np.nan, np.maximum(y, t)), fair=True))
    low, high = -0.5, 0.5
    close(verify.twcrps(f, y, (low, high), tail="interval", fair=False),
          brute_crps(np.clip(f.values, low, high), np.clip(y.values, low, high), fair=False))
    # a threshold below every value weighs everything: the plain CRPS
    close(verify.twcrps(f, y, -100.0), verify.crps(f, y))


def test_crps_skill_score_is_a_ratio_of_mean_crps():
    f, y = ensemble(10, nan=False)
    clim = xr.DataArray(np.random.default_rng(5).normal(size=(30,)), dims="sample")
    got = float(verify.crps_skill_score(f, y, clim, climatology_dim="sample", dim="x"))
    expected = 1 - brute_crps(f.values, y.values, True).mean() / brute_crps(
        np.tile(clim.values, (y.size, 1)), y.values, True).mean()
    assert np.isclose(got, expected, rtol=RTOL)


# -- moments ---------------------------------------------------------------------------------------
def test_moment_scores_against_numpy():
    f, y = ensemble(7, nan=False)
    x, t = f.values.astype(np.float64), y.values.astype(np.float64)
    mean = x.mean(axis=1)
    assert np.isclose(float(verify.ensemble_mean_rmse(f, y, dim="x")), np.sqrt(((mean - t) ** 2).mean()), rtol=RTOL)
    assert np.isclose(float(verify.ensemble_mean_bias(f, y, dim="x")), (mean - t).mean(), rtol=RTOL)
    assert np.isclose(float(verify.ensemble_spread(f, dim="x")), np.sqrt(x.var(axis=1, ddof=1).mean()), rtol=RTOL)
    member_rmse = np.sqrt(((x - t[:, None]) ** 2).mean(axis=0))
    assert np.isclose(float(verify.best_member_rmse(f, y, dim="x")), member_rmse.min(), rtol=RTOL)
    close(verify.best_member_rmse(f, y), np.abs(x - t[:, None]).min(axis=1))
    std = x.std(axis=1, ddof=1)
    counts = verify.sigma_exceedance_counts(f, k=[0.5, 1.5])
    close(counts.sel(k=1.5), (np.abs(x - mean[:, None]) > 1.5 * std[:, None]).sum(axis=1))


def test_spread_skill_ratio_is_one_for_exchangeable_data_of_any_size():
    rng = np.random.default_rng(3)
    for m in (2, 8):
        draws = rng.normal(size=(60000, m + 1))
        f = xr.DataArray(draws[:, 1:], dims=("x", "member"))
        y = xr.DataArray(draws[:, 0], dims="x")
        assert abs(float(verify.spread_skill_ratio(f, y, dim="x")) - 1) < 0.02


def test_sigma_exceedance_fractions_follow_the_gaussian():
    f = xr.DataArray(np.random.default_rng(1).normal(size=(40, 5000)), dims=("x", "member"))
    fraction = verify.sigma_exceedance_counts(f, k=[1, 2, 3], dim="x") / 5000
    np.testing.assert_allclose(fraction.values, 2 * norm.sf([1, 2, 3]), rtol=0.03, atol=6e-4)


# -- ranks -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 7, 50])
def test_rank_histogram_matches_xskillscore_without_ties(m):
    f, y = ensemble(m, n=2000, seed=m, nan=False, ties=False)
    ours = verify.rank_histogram(f, y, dim="x")
    theirs = xs.rank_histogram(y, f, dim="x", member_dim="member")
    assert ours.sizes["rank"] == m + 1
    np.testing.assert_array_equal(ours.values, theirs.values)


def test_rank_histogram_breaks_ties_evenly_and_skips_nans():
    f = xr.DataArray(np.zeros((30000, 4), np.float32), dims=("x", "member"))  # every member ties the truth
    y = xr.DataArray(np.zeros(30000, np.float32), dims="x")
    counts = verify.rank_histogram(f, y, dim="x").values
    assert counts.sum() == 30000 and counts.min() > 0.9 * counts.mean()
    g, t = ensemble(7)
    ranks = verify.truth_rank(g, t).values
    bad = np.isnan(t.values) | np.isnan(g.values).any(axis=1)
    assert (ranks[bad] == -1).all() and (ranks[~bad] >= 0).all()
    assert int(verify.rank_histogram(g, t, dim="x").sum()) == (~bad).sum()
    assert np.array_equal(verify.truth_rank(g, t).values, ranks)  # reproducible


def test_rank_histogram_flatness():
    flat = xr.DataArray(np.full(9, 100), dims="rank")
    assert float(verify.rank_histogram_flatness(flat)["chi2"]) == 0
    u_shaped = xr.DataArray([300, 50, 50, 50, 50, 50, 50, 50, 300], dims="rank")
    test = verify.rank_histogram_flatness(u_shaped)
    assert float(test["p_value"]) < 1e-6 and float(test["relative_chi2"]) > 10


def test_outlier_fraction_brute_force_and_reliable_value():
    f, y = ensemble(7)
    x = f.values
    lo, hi = np.nanmin(np.where(np.isnan(x), np.inf, x), axis=1), np.nanmax(np.where(np.isnan(x), -np.inf, x), axis=1)
    keep = np.isfinite(y.values) & np.isfinite(lo)
    expected = ((y.values < lo) | (y.values > hi))[keep].mean()
    got = verify.outlier_fraction(f, y, dim="x")
    assert np.isclose(float(got), expected) and got.attrs["reliable_value"] == 2 / 8
    draws = np.random.default_rng(0).normal(size=(40000, 8))
    exchangeable = verify.outlier_fraction(xr.DataArray(draws[:, 1:], dims=("x", "member")),
                                           xr.DataArray(draws[:, 0], dims="x"), dim="x")
    assert abs(float(exchangeable) - 2 / 8) < 0.01


def test_satisfactory_ensemble_size_bootstrap_matches_the_exact_hypergeometric_coverage():
    rng = np.random.default_rng(4)
    f = xr.DataArray(rng.normal(size=(200, 20)), dims=("x", "member"))
    y = xr.DataArray(rng.normal(size=200) * 1.5, dims="x")
    sizes = [2, 4, 8, 16, 20]
    out = verify.satisfactory_ensemble_size(f, y, sizes=sizes, draws=400, seed=1, dim="x")
    below = (f.values < y.values[:, None]).sum(axis=1)
    above = 20 - below
    exact = [np.mean(1 - (comb(below, s) + comb(above, s)) / comb(20, s)) for s in sizes]
    np.testing.assert_allclose(out["coverage"].values, exact, atol=0.01)
    between = (exact[2] + exact[3]) / 2  # a target that 16 members reach and 8 do not
    assert float(verify.satisfactory_ensemble_size(f, y, sizes=sizes, coverage=between, draws=400, dim="x")
                 ["satisfactory_ensemble_size"]) == 16
    unreachable = verify.satisfactory_ensemble_size(f, y, sizes=sizes, coverage=1.0, draws=50, dim="x")
    assert np.isnan(float(unreachable["satisfactory_ensemble_size"]))


# -- probabilities and tails -----------------------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 7, 50])
def test_brier_score_matches_xskillscore_and_properscoring(m):
    f, y = ensemble(m, nan=False)
    t = 0.2
    theirs = xs.brier_score(y > t, f > t, member_dim="member", dim=[])
    close(verify.brier_score(f, y, t), theirs)
    close(verify.brier_score(f, y, t, above=False), xs.brier_score(y < t, f < t, member_dim="member", dim=[]))
    scored = properscoring.threshold_brier_score(y.values.astype(float), f.values.astype(float), t)
    close(verify.brier_score(f, y, t), scored)
    if m > 1:
        close(verify.brier_score(f, y, t, fair=True), xs.brier_score(y > t, f > t, member_dim="member", fair=True, dim=[]))


def test_exceedance_probability_skips_nan_members():
    f, _ = ensemble(7)
    x = f.values
    valid = np.isfinite(x).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(valid > 0, (x > 0.1).sum(axis=1) / valid, np.nan)
    close(verify.exceedance_probability(f, 0.1), expected)


def test_reliability_matches_xskillscore():
    f, y = ensemble(10, n=3000, nan=False)
    edges = np.linspace(0, 1, 6)
    ours = verify.reliability(f, y, 0.0, bins=edges, dim="x")
    p = (f > 0).mean("member")
    theirs = xs.reliability(y > 0, p, dim="x", probability_bin_edges=np.r_[edges[:-1], 1 + 1e-8])
    close(ours["observed_frequency"], theirs.values)
    np.testing.assert_array_equal(ours["count"].values, theirs["samples"].values)


def test_ensemble_quantiles_match_numpy_with_nans():
    f, _ = ensemble(50)
    q = [0.0, 0.1, 0.5, 0.975, 1.0]
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanquantile(f.values.astype(np.float64), q, axis=1).T
    close(verify.ensemble_quantiles(f, q), expected)


def _efi_quadrature(members, climate_values, p_levels):
    """The definition integrated numerically: (2/pi) int (p - F_f(p)) / sqrt(p (1 - p)) dp."""
    p = np.linspace(0, 1, 400001)[1:-1]
    q = np.interp(p, p_levels, climate_values)
    forecast_cdf = (members[None, :] < q[:, None]).mean(axis=1)
    integrand = (p - forecast_cdf) / np.sqrt(p * (1 - p))
    return 2 / np.pi * np.trapezoid(integrand, p)


def test_efi_matches_the_integral_definition_and_its_limits():
    levels = np.linspace(0, 1, 21)
    climate_values = norm.ppf(np.clip(levels, 1e-3, 1 - 1e-3))
    clim = xr.DataArray(climate_values, dims="quantile", coords={"quantile": levels})
    rng = np.random.default_rng(2)
    members = np.stack([rng.normal(0.8, 0.6, 51), rng.normal(-0.3, 1.2, 51), rng.normal(0, 1, 51)])
    got = verify.extreme_forecast_index(xr.DataArray(members, dims=("x", "member")), clim).values
    expected = [_efi_quadrature(row, climate_values, levels) for row in members]
    np.testing.assert_allclose(got, expected, atol=2e-3)
    extremes = xr.DataArray([[10.0, 11.0], [-10.0, -12.0]], dims=("x", "member"))
    np.testing.assert_allclose(verify.extreme_forecast_index(extremes, clim).values, [1.0, -1.0])


def test_efi_is_zero_when_the_forecast_is_the_climate():
    sample = xr.DataArray(np.random.default_rng(0).normal(size=5000), dims="time")
    clim = verify.climatological_thresholds(sample, np.linspace(0, 1, 201))
    same = xr.DataArray(np.sort(sample.values)[None, ::5], dims=("x", "member"))
    assert abs(float(verify.extreme_forecast_index(same, clim)[0])) < 0.01

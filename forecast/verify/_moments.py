"""Scores from member moments: ensemble-mean RMSE and bias, spread, spread-skill ratio, members beyond k
sigma, best-member RMSE. All reduce over members with plain (Dask-chunkable) sums, so the member
dimension may stay split into blocks."""

from __future__ import annotations

import numpy as np
import xarray as xr

from forecast.verify._common import check, dims_of, is_lazy, reduce_mean
from forecast.verify._grouped import anova_components


def _member_variance(forecast, member_dim):
    """Unbiased member variance, accumulated in float64."""
    m = forecast.sizes[member_dim]
    if not is_lazy(forecast):  # NumPy's nanvar subtracts the mean in the input's float32
        forecast = forecast.astype(np.float64)
    with xr.set_options(use_bottleneck=False, use_numbagg=False):  # they would accumulate float32 in float32
        return forecast.var(member_dim, ddof=1 if m > 1 else 0, dtype=np.float64)


def _member_mean(forecast, member_dim):
    """Member mean, accumulated in float64 (NaN members left out)."""
    with xr.set_options(use_bottleneck=False, use_numbagg=False):
        return forecast.mean(member_dim, dtype=np.float64)


def ensemble_mean_rmse(forecast, truth, member_dim: str = "member", dim=None, regions=None):
    """Root-mean-square error of the ensemble mean, ``sqrt(mean over dim of (mean_i x_i - y)^2)``.

    Estimator: the square root of the (area-weighted) mean squared error of the member mean (NaN
    members left out of the mean); pointwise it is the absolute error of the mean (Fortin et al. 2014).

    >>> f = xr.DataArray([[1.0, 3.0], [0.0, 0.0]], dims=("x", "member"))
    >>> float(ensemble_mean_rmse(f, xr.DataArray([0.0, 0.0], dims="x"), dim="x"))
    1.4142135623730951
    """
    check(forecast, truth, member_dim)
    error = (_member_mean(forecast, member_dim) - truth) ** 2
    return np.sqrt(reduce_mean(error, dim, regions))


def ensemble_mean_bias(forecast, truth, member_dim: str = "member", dim=None, regions=None):
    """Mean error of the ensemble mean, ``mean over dim of (mean_i x_i - y)`` (positive: too high).

    >>> f = xr.DataArray([[1.0, 3.0]], dims=("x", "member"))
    >>> float(ensemble_mean_bias(f, xr.DataArray([0.5], dims="x"), dim="x"))
    1.5
    """
    check(forecast, truth, member_dim)
    return reduce_mean(_member_mean(forecast, member_dim) - truth, dim, regions)


def ensemble_spread(forecast, member_dim: str = "member", dim=None, regions=None):
    """Ensemble spread ``sqrt(mean over dim of the member variance)`` (unbiased variance, ddof=1).

    Estimator: the square root of the mean unbiased member variance, the quantity that the spread-skill
    relation compares with the ensemble-mean RMSE (Fortin et al. 2014).

    >>> f = xr.DataArray([[1.0, 3.0]], dims=("x", "member"))
    >>> float(ensemble_spread(f, dim="x"))
    1.4142135623730951
    """
    check(forecast, None, member_dim)
    return np.sqrt(reduce_mean(_member_variance(forecast, member_dim), dim, regions))


def spread_skill_ratio(forecast, truth, member_dim: str = "member", dim=None, regions=None, group: str | None = None):
    """Spread-skill (consistency) ratio: ``sqrt(mean predicted MSE / mean MSE of the ensemble mean)``.

    Estimator (exchangeable members, ``group=None``): ``sqrt((M + 1) / M) * spread / RMSE of the
    ensemble mean`` (Fortin et al. 2014), with ``M`` the number of valid (non-NaN) members at each
    point: ``mean over dim of ((M + 1) / M) * s^2`` (unbiased member variance ``s^2``, points where the
    truth is known) over the mean squared error of the member mean, square root after averaging. A
    consistent ensemble of any size scores 1 in expectation.

    With ``group`` (a coordinate along ``member_dim``, e.g. ``checkpoint``), the members form ``K``
    groups and the truth is taken as a member of a new group: the numerator is the ANOVA prediction
    ``sb^2 (1 + sum n_k^2 / N^2) + sw^2 (1 + 1 / N)`` of the ensemble mean's squared error, with the
    unbiased one-way random-effects estimators of the between- and within-group variances (see
    :func:`spread_decomposition`; Searle, Casella & McCulloch 1992, ch. 3), averaged over ``dim`` before
    the square root. A consistent ``K``-group ensemble scores 1 in expectation, where the plain ratio
    reads ``sqrt(((N+1)/N)(sw^2 + sb^2 n(K-1)/(N-1)) / (sb^2 (1 + 1/K) + sw^2 (1 + 1/N)))`` (balanced).

    >>> f = xr.DataArray([[-1.0, 1.0]], dims=("x", "member"))
    >>> round(float(spread_skill_ratio(f, xr.DataArray([2.0], dims="x"), dim="x")), 4)
    0.866
    """
    check(forecast, truth, member_dim)
    if group is None:
        valid = forecast.count(member_dim)
        predicted = _member_variance(forecast, member_dim) * (valid + 1) / valid
    else:
        predicted = anova_components(forecast, member_dim, group)[2]
    predicted = predicted.where(truth.notnull())
    skill = ensemble_mean_rmse(forecast, truth.where(predicted.notnull()), member_dim, dim, regions)
    return np.sqrt(reduce_mean(predicted, dim, regions)) / skill


def sigma_exceedance_counts(forecast, k=(1, 2, 3), member_dim: str = "member", dim=None, regions=None):
    """Number of members farther than ``k`` standard deviations from the ensemble mean, per ``k``.

    Estimator: ``#{i : |x_i - mean| > k * std}`` with the unbiased member standard deviation; a new
    dimension ``k``. For a Gaussian ensemble the expected fraction is ``2 (1 - Phi(k))`` (31.7%, 4.6%,
    0.27% for k = 1, 2, 3); heavy tails give more. With ``dim``, the (area-weighted) mean count.

    >>> f = xr.DataArray([[0.0, 0.0, 0.0, 10.0]], dims=("x", "member"))
    >>> sigma_exceedance_counts(f, k=[1, 2]).values.tolist()
    [[1.0, 0.0]]
    """
    check(forecast, None, member_dim)
    levels = xr.DataArray(np.atleast_1d(np.asarray(k, dtype=float)), dims="k", name="k")
    if (levels < 0).any():
        raise ValueError(f"k must be non-negative, got {list(levels.values)}")
    mean = _member_mean(forecast, member_dim)
    std = np.sqrt(_member_variance(forecast, member_dim))
    counts = xr.concat([(abs(forecast - mean) > level * std).sum(member_dim).where(std.notnull())
                        for level in levels.values], dim=levels).transpose(..., "k")
    return reduce_mean(counts.astype(float), dim, regions)


def best_member_rmse(forecast, truth, member_dim: str = "member", dim=None, regions=None):
    """RMSE of the best member: ``min_i sqrt(mean over dim of (x_i - y)^2)``.

    Estimator: each member's (area-weighted) RMSE over ``dim``, then the smallest; pointwise
    (``dim=None``) the smallest absolute error. A reliable ensemble's best member beats its mean by a
    margin that grows with M; a best member no better than the mean signals too little spread.

    >>> f = xr.DataArray([[1.0, 3.0], [2.0, -1.0]], dims=("x", "member"))
    >>> float(best_member_rmse(f, xr.DataArray([0.0, 0.0], dims="x"), dim="x"))
    1.5811388300841898
    """
    check(forecast, truth, member_dim)
    if not dims_of(dim) and regions is not None:
        raise ValueError("regions need dim to include 'lat' (and 'lon')")
    return np.sqrt(reduce_mean((forecast - truth) ** 2, dim, regions)).min(member_dim)

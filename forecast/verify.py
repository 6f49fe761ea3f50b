"""Ensemble verification on xarray, lazy on Dask until computed.

Every score takes ``forecast`` (with a member dimension named by ``member_dim``) and ``truth`` (the
same dims without it) as ``xarray.DataArray`` or ``Dataset`` and returns the same kind. ``dim`` names
the dimensions to average over: ``None`` keeps the score pointwise; when ``dim`` includes ``lat`` the
mean is area-weighted with cell-area (cos-latitude) weights computed from the ``lat`` coordinate.
Points where the truth is NaN are NaN pointwise and left out of means.
"""

from __future__ import annotations

import zlib

import numpy as np
import xarray as xr


# -- helpers --------------------------------------------------------------------------------------
def latitude_weights(lat) -> np.ndarray:
    """Cell-area weights for latitude rows given in degrees (any order, global or regional), summing to 1.

    Each row stands for the band between the midpoints to its neighbours (the outer rows extend half a
    spacing outwards, clipped at the poles); the weight is the band's area, so a global equiangular grid
    gets cos-latitude weights with the polar caps done right.

    >>> w = latitude_weights([90, 0, -90])
    >>> [round(float(v), 4) for v in w]
    [0.1464, 0.7071, 0.1464]
    """
    lat = np.asarray(lat, dtype=float)
    if lat.size == 1:
        return np.ones(1)
    order = np.argsort(lat)
    s = lat[order]
    edges = np.concatenate([[s[0] - (s[1] - s[0]) / 2], (s[1:] + s[:-1]) / 2, [s[-1] + (s[-1] - s[-2]) / 2]])
    edges = np.radians(np.clip(edges, -90.0, 90.0))
    band = np.sin(edges[1:]) - np.sin(edges[:-1])
    weights = np.empty_like(band)
    weights[order] = band
    return weights / weights.sum()


def _dims(dim) -> list[str]:
    if dim is None:
        return []
    return [dim] if isinstance(dim, str) else list(dim)


def _mean(score, dim):
    """Mean over ``dim``, area-weighted when it includes ``lat``; NaNs are skipped."""
    dims = _dims(dim)
    if not dims:
        return score
    if "lat" in dims:
        weights = xr.DataArray(latitude_weights(score["lat"].values), dims="lat", coords={"lat": score["lat"]})
        return score.weighted(weights).mean(dims, skipna=True)
    return score.mean(dims, skipna=True)


def _members_in_one_chunk(forecast, member_dim):
    if forecast.chunks is not None and member_dim in forecast.dims:
        return forecast.chunk({member_dim: -1})
    return forecast


def _check(forecast, truth, member_dim):
    if member_dim not in forecast.dims:
        raise ValueError(f"forecast has no member dimension {member_dim!r} (dims: {list(forecast.dims)})")
    if member_dim in truth.dims:
        raise ValueError(f"truth must not have the member dimension {member_dim!r}")


def align_truth(forecast, truth, time_dim: str = "time"):
    """Truth at each forecast's valid time ``init_time + lead_time``, dims ``(init_time, lead_time, ...)``.

    ``truth`` has a ``time_dim`` dimension (a nature run, analyses or reanalysis); it is selected one
    lead at a time (orthogonal indexing), which keeps Dask graphs small.
    """
    init = forecast["init_time"].values
    leads = forecast["lead_time"].values
    valid = init[:, None] + leads[None, :]
    missing = np.setdiff1d(valid.ravel(), truth[time_dim].values)
    if len(missing):
        raise ValueError(f"truth lacks {len(missing)} valid time(s), first {np.datetime_as_string(missing[0], 'm')}")
    pieces = [truth.sel({time_dim: init + lead}).rename({time_dim: "init_time"}).assign_coords(init_time=init)
              for lead in leads]
    aligned = xr.concat(pieces, dim=xr.DataArray(leads, dims="lead_time", name="lead_time"), coords="minimal")
    return aligned.transpose("init_time", "lead_time", ...)


# -- CRPS -----------------------------------------------------------------------------------------
def _crps_kernel(x: np.ndarray, y: np.ndarray, fair: bool) -> np.ndarray:
    """CRPS over the last axis of ``x`` from sorted members: O(M log M)."""
    m = x.shape[-1]
    x = np.sort(x, axis=-1)
    absolute = np.abs(x - y[..., None]).sum(axis=-1, dtype=np.float64) / m
    if m == 1:
        return absolute
    rank_weight = (2.0 * np.arange(1, m + 1) - m - 1).astype(np.float64)
    pairwise = 2.0 * np.tensordot(x.astype(np.float64), rank_weight, axes=([-1], [0]))  # sum_ij |x_i - x_j|
    denominator = 2.0 * m * (m - 1) if fair else 2.0 * m * m
    return absolute - pairwise / denominator


def crps(forecast, truth, member_dim: str = "member", fair: bool = True, dim=None):
    """Continuous ranked probability score of an ensemble.

    Estimator: ``CRPS = mean_i |x_i - y| - sum_ij |x_i - x_j| / (2 M (M - 1))`` (fair, Ferro 2014;
    unbiased for the CRPS of the distribution the members are drawn from) or ``/ (2 M^2)`` with
    ``fair=False`` (the standard CRPS of the empirical distribution, Gneiting & Raftery 2007). The
    pairwise sum is computed from sorted members as ``2 sum_i (2 i - M - 1) x_(i)``, O(M log M), in
    float64. With one member both equal the absolute error. NaN where the truth or a member is NaN.

    Examples
    --------
    >>> f = xr.DataArray([[0.0, 1.0]], dims=("x", "member"))
    >>> t = xr.DataArray([0.0], dims="x")
    >>> float(crps(f, t, fair=False)[0]), float(crps(f, t)[0])
    (0.25, 0.0)
    """
    _check(forecast, truth, member_dim)
    forecast = _members_in_one_chunk(forecast, member_dim)
    score = xr.apply_ufunc(
        _crps_kernel, forecast, truth, input_core_dims=[[member_dim], []], kwargs={"fair": fair},
        dask="parallelized", output_dtypes=[np.float64],
    )
    return _mean(score, dim)


# -- moments --------------------------------------------------------------------------------------
def ensemble_mean_rmse(forecast, truth, member_dim: str = "member", dim=None):
    """Root-mean-square error of the ensemble mean, ``sqrt(mean over dim of (mean_i x_i - y)^2)``."""
    _check(forecast, truth, member_dim)
    error = (forecast.mean(member_dim) - truth) ** 2
    return np.sqrt(_mean(error, dim))


def ensemble_spread(forecast, member_dim: str = "member", dim=None):
    """Ensemble spread ``sqrt(mean over dim of the member variance)`` (variance with ddof=1)."""
    variance = forecast.var(member_dim, ddof=1) if forecast.sizes[member_dim] > 1 else forecast.var(member_dim)
    return np.sqrt(_mean(variance, dim))


def spread_skill_ratio(forecast, truth, member_dim: str = "member", dim=None):
    """Spread-skill ratio ``sqrt((M + 1) / M) * spread / RMSE of the ensemble mean`` (Fortin et al. 2014).

    The factor makes a statistically consistent (exchangeable) ensemble of any size score 1. NaN where
    the truth is NaN.
    """
    _check(forecast, truth, member_dim)
    m = forecast.sizes[member_dim]
    spread = forecast.var(member_dim, ddof=1) if m > 1 else forecast.var(member_dim)
    spread = spread.where(truth.notnull())
    return np.sqrt((m + 1) / m) * np.sqrt(_mean(spread, dim)) / ensemble_mean_rmse(forecast, truth, member_dim, dim)


# -- ranks ----------------------------------------------------------------------------------------
def _rank_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Rank of the truth among the members (0..M), ties broken at random; -1 where anything is NaN."""
    below = (x < y[..., None]).sum(axis=-1)
    ties = (x == y[..., None]).sum(axis=-1)
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(y).tobytes()))
    rank = below + np.floor(rng.random(ties.shape) * (ties + 1)).astype(below.dtype)
    bad = np.isnan(y) | np.isnan(x).any(axis=-1)
    return np.where(bad, -1, rank).astype(np.int32)


def _count_kernel(ranks: np.ndarray, bins: int, n_core: int) -> np.ndarray:
    lead = ranks.shape[:ranks.ndim - n_core]
    flat = ranks.reshape(int(np.prod(lead)), -1)
    offsets = np.arange(flat.shape[0])[:, None] * bins
    valid = flat >= 0
    counts = np.bincount((flat + offsets)[valid], minlength=flat.shape[0] * bins)
    return counts.reshape(*lead, bins)


def rank_histogram(forecast, truth, member_dim: str = "member", dim=None):
    """Counts of the truth's rank among the members (Talagrand diagram), over the dimensions in ``dim``.

    Rank ``r`` means ``r`` members lie below the truth; ties are broken at random (a generator seeded
    from the data, so results are reproducible). Returns counts with a new ``rank`` dimension of length
    ``M + 1``; NaN points are left out. A reliable ensemble gives a flat histogram.
    """
    _check(forecast, truth, member_dim)
    m = forecast.sizes[member_dim]
    forecast = _members_in_one_chunk(forecast, member_dim)
    ranks = xr.apply_ufunc(_rank_kernel, forecast, truth, input_core_dims=[[member_dim], []],
                           dask="parallelized", output_dtypes=[np.int32])
    dims = _dims(dim) or []
    if ranks.chunks is not None and dims:
        ranks = ranks.chunk({d: -1 for d in dims})
    counts = xr.apply_ufunc(_count_kernel, ranks, input_core_dims=[dims], output_core_dims=[["rank"]],
                            kwargs={"bins": m + 1, "n_core": len(dims)}, dask="parallelized", output_dtypes=[np.int64],
                            dask_gufunc_kwargs={"output_sizes": {"rank": m + 1}})
    return counts.assign_coords(rank=np.arange(m + 1))

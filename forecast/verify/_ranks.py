"""Where the truth falls among the members: rank histograms and their flatness, outliers, and the
ensemble size at which sub-ensembles contain the truth."""

from __future__ import annotations

import zlib

import numba
import numpy as np
import xarray as xr

from forecast.verify import _kernels
from forecast.verify._common import _as_regions, check, dims_of, members_in_one_chunk, reduce_mean, threads_for
from forecast.verify._grouped import group_sizes, reliable_outlier_fraction, reliable_rank_frequency, variance_ratio


# -- rank histogram ---------------------------------------------------------------------------------
def _ranks_numpy(x, y, threads=None):
    y = np.asarray(y)
    if y.dtype not in (np.float32, np.float64):
        y = y.astype(np.float64)
    # the truth keeps its own precision: a float64 truth just above tied float32 members must rank above them
    ids = np.arange(int(np.prod(np.broadcast_shapes(y.shape, x.shape[:-1]))), dtype=np.float64)
    ids = ids.reshape(np.broadcast_shapes(y.shape, x.shape[:-1]))
    seed = zlib.crc32(np.ascontiguousarray(y).tobytes())
    (ranks,) = _kernels.over_members(x, lambda b, yb, ib, out: _kernels.rank_rows(b, yb, ib.astype(np.int64), seed, out),
                                     point_args=(y, ids), outputs=((),), threads=threads)
    return ranks.astype(np.int32)


def truth_rank(forecast, truth, member_dim: str = "member"):
    """Rank of the truth among the members (0..M, the number of members below it), ties broken at
    random (from a hash of the data, so reruns agree); -1 where the truth or any member is NaN."""
    check(forecast, truth, member_dim)
    forecast = members_in_one_chunk(forecast, member_dim)
    return xr.apply_ufunc(_ranks_numpy, forecast, truth, input_core_dims=[[member_dim], []],
                          kwargs={"threads": threads_for(forecast, truth)}, dask="parallelized",
                          output_dtypes=[np.int32])


def _count_kernel(ranks: np.ndarray, weights: np.ndarray, bins: int, n_core: int) -> np.ndarray:
    lead = ranks.shape[:ranks.ndim - n_core]
    flat = ranks.reshape(int(np.prod(lead)), -1)
    w = np.broadcast_to(weights, ranks.shape).reshape(flat.shape)
    offsets = np.arange(flat.shape[0])[:, None] * bins
    valid = flat >= 0
    counts = np.bincount((flat + offsets)[valid], weights=w[valid], minlength=flat.shape[0] * bins)
    return counts.reshape(*lead, bins)


def rank_histogram(forecast, truth, member_dim: str = "member", dim=None, regions=None, group: str | None = None):
    """Counts of the truth's rank among the members (Talagrand diagram), over the dimensions in ``dim``.

    Estimator: rank ``r`` means ``r`` members lie below the truth (Anderson 1996; Hamill 2001); ties are
    broken uniformly at random (a generator seeded from the data, so results are reproducible); a
    float64 truth is compared with float32 members in float64. Returns counts with a new ``rank``
    dimension of length ``M + 1``; points where the truth or a member is NaN are left out. Counts are
    unweighted (each case counts once); with ``regions`` there is one histogram per region. A reliable
    exchangeable ensemble gives a flat histogram (see :func:`rank_histogram_flatness`).
    xskillscore's ``rank_histogram`` counts the same ranks as 1..M+1.

    With ``group`` (a coordinate along ``member_dim``, e.g. ``checkpoint``) the reliable histogram of a
    grouped design is not flat: the coordinate ``reliable_frequency`` (``..., rank``) holds the rank
    probabilities of a consistent Gaussian grouped ensemble with the estimated ``sb^2 / sw^2`` (derived
    by quadrature, :func:`forecast.verify._grouped.rank_probabilities`), the truth a member of a new group.

    >>> f = xr.DataArray([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dims=("x", "member"))
    >>> rank_histogram(f, xr.DataArray([-1.0, 0.5, 3.0], dims="x"), dim="x").values.tolist()
    [1, 1, 1]
    """
    check(forecast, truth, member_dim)
    if isinstance(forecast, xr.Dataset):  # one variable at a time: each keeps its own chunks
        return xr.Dataset({name: rank_histogram(forecast[name], truth[name], member_dim, dim, regions, group)
                           for name in forecast.data_vars})
    m = forecast.sizes[member_dim]
    ranks = truth_rank(forecast, truth, member_dim)
    dims = dims_of(dim)
    regions = _as_regions(regions)
    masks = [None]
    if regions is not None:
        if "lat" not in dims:
            raise ValueError("regions need 'lat' among the dimensions counted over (dim)")
        lon = ranks["lon"] if "lon" in ranks.coords else None
        masks = [r.mask(ranks["lat"], lon) for r in regions]
    if ranks.chunks is not None and dims:
        ranks = ranks.chunk({d: -1 for d in dims})
    histograms = []
    for mask in masks:
        weights = xr.ones_like(ranks, dtype=np.float64) if mask is None else mask.astype(np.float64).broadcast_like(ranks)
        counts = xr.apply_ufunc(_count_kernel, ranks, weights, input_core_dims=[dims, dims], output_core_dims=[["rank"]],
                                kwargs={"bins": m + 1, "n_core": len(dims)}, dask="parallelized",
                                output_dtypes=[np.float64], dask_gufunc_kwargs={"output_sizes": {"rank": m + 1}})
        histograms.append(counts.astype(np.int64))
    result = histograms[0] if regions is None else xr.concat(
        histograms, dim=xr.DataArray([r.name for r in regions], dims="region", name="region"))
    result = result.assign_coords(rank=np.arange(m + 1))
    if group is not None:
        sizes = group_sizes(forecast, member_dim, group)
        ratio = variance_ratio(forecast, truth, member_dim, group, dim, regions)
        result = result.assign_coords(reliable_frequency=reliable_rank_frequency(ratio, sizes))
    return result


def rank_histogram_flatness(counts, rank_dim: str = "rank", expected=None) -> xr.Dataset:
    """Chi-square test of a flat rank histogram: ``chi2 = sum_r (n_r - N/(M+1))^2 / (N/(M+1))`` with
    ``M`` degrees of freedom, its p-value, and ``relative_chi2 = chi2 / M`` (about 1 when flat).

    Reference: Jolliffe & Primo (2008). The cases of a field are not independent, so the p-value is
    optimistic (too small) for spatially correlated data; compare ``relative_chi2`` across ensembles.
    ``expected`` (probabilities along ``rank_dim``, e.g. the ``reliable_frequency`` of a grouped
    design from :func:`rank_histogram`) replaces the flat ``1 / (M + 1)``.

    >>> counts = xr.DataArray([10, 10, 10, 10], dims="rank")
    >>> float(rank_histogram_flatness(counts)["chi2"])
    0.0
    """
    from scipy.stats import chi2 as chi2_distribution

    if rank_dim not in counts.dims:
        raise ValueError(f"counts have no {rank_dim!r} dimension")
    bins = counts.sizes[rank_dim]
    if bins < 2:
        raise ValueError("a rank histogram needs at least two bins")
    total = counts.sum(rank_dim)
    expected = total / bins if expected is None else total * expected / expected.sum(rank_dim)
    statistic = ((counts - expected) ** 2 / expected).sum(rank_dim)
    dof = bins - 1
    p_value = xr.apply_ufunc(chi2_distribution.sf, statistic, dof, dask="parallelized", output_dtypes=[float])
    return xr.Dataset({"chi2": statistic, "p_value": p_value, "relative_chi2": statistic / dof},
                      attrs={"degrees_of_freedom": dof, "reference": "Jolliffe and Primo (2008)"})


# -- outliers ---------------------------------------------------------------------------------------
def outlier_fraction(forecast, truth, member_dim: str = "member", dim=None, regions=None, group: str | None = None):
    """Fraction of cases where the truth lies outside the ensemble range (below the lowest or above the
    highest member), with its reliable value ``2 / (M + 1)`` in the attribute ``reliable_value``.

    Estimator: the (area-weighted) mean of ``1{y < min_i x_i or y > max_i x_i}`` over ``dim``, NaN
    members left out, a truth equal to an extreme member counting as inside. For exchangeable members
    and truth each rank is equally likely, so the two outer ranks give ``2 / (M + 1)`` (Anderson 1996;
    the HENS outlier statistic).

    With ``group`` (a coordinate along ``member_dim``, e.g. ``checkpoint``) the reliable value is that of
    a consistent Gaussian grouped ensemble with the estimated ``sb^2 / sw^2`` (derived by quadrature,
    :func:`forecast.verify._grouped.outlier_probability`), the truth a member of a new group; it is a
    coordinate ``reliable_value`` of the result (it varies with lead time and region).

    >>> f = xr.DataArray([[0.0, 1.0], [0.0, 1.0]], dims=("x", "member"))
    >>> out = outlier_fraction(f, xr.DataArray([2.0, 0.5], dims="x"), dim="x")
    >>> float(out), round(out.attrs["reliable_value"], 4)
    (0.5, 0.6667)
    """
    check(forecast, truth, member_dim)
    if group is not None and isinstance(forecast, xr.Dataset):  # the reference is a coordinate per variable
        return xr.Dataset({name: outlier_fraction(forecast[name], truth[name], member_dim, dim, regions, group)
                           for name in forecast.data_vars})
    m = forecast.sizes[member_dim]
    low, high = forecast.min(member_dim), forecast.max(member_dim)
    outside = ((truth < low) | (truth > high)).astype(float).where(truth.notnull() & low.notnull())
    result = reduce_mean(outside, dim, regions)
    if group is not None:
        sizes = group_sizes(forecast, member_dim, group)
        ratio = variance_ratio(forecast, truth, member_dim, group, dim, regions)
        return result.assign_coords(reliable_value=reliable_outlier_fraction(ratio, sizes))
    result.attrs["reliable_value"] = 2.0 / (m + 1)
    if isinstance(result, xr.Dataset):
        for name in result.data_vars:
            result[name].attrs["reliable_value"] = 2.0 / (m + 1)
    return result


# -- satisfactory ensemble size --------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _coverage_rows(x, y, order, sizes, out):
    """Fraction of the draws (rows of ``order``, member permutations) whose first ``sizes[k]`` members
    bracket the truth (min <= y <= max); NaN where the truth or any member is NaN."""
    n_draws, m = order.shape
    for p in range(x.shape[0]):
        yy = y[p]
        bad = np.isnan(yy)
        for i in range(m):
            if np.isnan(x[p, i]):
                bad = True
        for k in range(sizes.shape[0]):
            out[p, k] = np.nan if bad else 0.0
        if bad:
            continue
        for d in range(n_draws):
            low = np.inf
            high = -np.inf
            k = 0
            for j in range(m):
                v = x[p, order[d, j]]
                low = min(low, v)
                high = max(high, v)
                while k < sizes.shape[0] and sizes[k] == j + 1:
                    if low <= yy <= high:
                        out[p, k] += 1.0
                    k += 1
        for k in range(sizes.shape[0]):
            out[p, k] /= n_draws


def _default_sizes(m: int) -> np.ndarray:
    if m <= 64:
        return np.arange(2, m + 1)
    return np.unique(np.round(np.geomspace(2, m, 40)).astype(int))


def satisfactory_ensemble_size(forecast, truth, member_dim: str = "member", sizes=None, coverage: float = 0.95,
                               draws: int = 100, seed: int = 0, dim=None, regions=None) -> xr.Dataset:
    """Smallest sub-ensemble size whose range contains the truth in ``coverage`` (95%) of the cases.

    Estimator (bootstrap, after the HENS "satisfactory ensemble size"): ``draws`` random orders of the
    members (from ``numpy.random.default_rng(seed)``); for each size ``m`` in ``sizes`` the first ``m``
    members of an order form a sub-ensemble, and a case is covered when ``min <= y <= max`` over it.
    ``coverage(size)`` is the fraction of covered draws, averaged (area-weighted) over ``dim``; the
    satisfactory size is the smallest size whose coverage reaches ``coverage`` (NaN if none does). The
    draws' expectation is exact: ``1 - [C(b, m) + C(a, m)] / C(M, m)`` with ``b`` (``a``) members
    below (above) the truth. Cases with a NaN truth or member are left out.

    Returns
    -------
    xarray.Dataset
        ``coverage`` (..., size) and ``satisfactory_ensemble_size`` (...).

    >>> f = xr.DataArray(np.arange(10.0)[None, :], dims=("x", "member"))
    >>> out = satisfactory_ensemble_size(f, xr.DataArray([4.5], dims="x"), coverage=0.8, draws=200, dim="x")
    >>> int(out["satisfactory_ensemble_size"])  # exact coverage 0.56, 0.83, 0.95 for 2, 3, 4 members
    3
    """
    check(forecast, truth, member_dim)
    if isinstance(forecast, xr.Dataset):
        return xr.merge([satisfactory_ensemble_size(forecast[v], truth[v], member_dim, sizes, coverage, draws, seed,
                                                    dim, regions).rename({k: f"{v}_{k}" for k in ("coverage", "satisfactory_ensemble_size")})
                         for v in forecast.data_vars])
    m = forecast.sizes[member_dim]
    sizes = _default_sizes(m) if sizes is None else np.unique(np.asarray(sizes, dtype=int))
    if sizes.size == 0 or sizes.min() < 1 or sizes.max() > m:
        raise ValueError(f"sizes must lie in 1..{m} (the number of members), got {sizes.tolist()}")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    rng = np.random.default_rng(seed)
    order = np.stack([rng.permutation(m) for _ in range(draws)]).astype(np.int64)
    forecast = members_in_one_chunk(forecast, member_dim)
    threads = threads_for(forecast, truth)

    def call(x, y):
        (out,) = _kernels.over_members(x, lambda b, yb, o: _coverage_rows(b, yb.astype(b.dtype), order, sizes, o),
                                       point_args=(y,), outputs=((sizes.size,),), threads=threads)
        return out

    pointwise = xr.apply_ufunc(call, forecast, truth, input_core_dims=[[member_dim], []], output_core_dims=[["size"]],
                               dask="parallelized", output_dtypes=[np.float64],
                               dask_gufunc_kwargs={"output_sizes": {"size": sizes.size}})
    covered = reduce_mean(pointwise.assign_coords(size=sizes), dim, regions)
    reached = covered >= coverage
    smallest = xr.where(reached.any("size"), covered["size"].where(reached).min("size"), np.nan)
    return xr.Dataset({"coverage": covered, "satisfactory_ensemble_size": smallest},
                      attrs={"coverage_target": coverage, "draws": draws, "seed": seed})

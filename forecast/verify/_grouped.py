"""Grouped (multi-checkpoint) ensembles: the random-effects split of the member variance and the
reliable values of the rank scores for such a design.

An ensemble of ``K`` groups (checkpoints) of ``n_k`` members is modelled as ``x_kj = mu + b_k + e_kj``
with group effects ``b_k ~ (0, sb^2)`` and member effects ``e_kj ~ (0, sw^2)``; a consistent ensemble's
truth behaves like a member of a new group, ``y = mu + b + e``. The member variance then holds only
``n (K - 1) / (N - 1)`` of ``sb^2`` (balanced design, ``N = n K``), so the exchangeable corrections
(``sqrt((M + 1) / M)``, ``2 / (M + 1)``, a flat rank histogram) do not apply.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from scipy.special import gammaln, log_ndtr

from forecast.verify._common import check, reduce_mean


def group_labels(forecast, member_dim: str, group: str) -> np.ndarray:
    """The group label of each member (a coordinate ``group`` along ``member_dim``); at least two groups."""
    if group not in forecast.coords or forecast[group].dims != (member_dim,):
        raise ValueError(f"group {group!r} must name a coordinate along {member_dim!r} (coords: {list(forecast.coords)})")
    labels = np.asarray(forecast[group].values)
    if np.unique(labels).size < 2:
        raise ValueError(f"a grouped score needs at least two groups along {group!r}, got {np.unique(labels).tolist()}")
    return labels


def anova_components(forecast, member_dim: str, group: str):
    """Pointwise one-way random-effects ANOVA: ``(within, between, predicted_mse)``.

    ``within = MSW = SSW / (N - K)`` and ``between = (MSB - MSW) / n0`` with ``MSB = SSB / (K - 1)`` and
    ``n0 = (N - sum n_k^2 / N) / (K - 1)`` are unbiased for ``sw^2`` and ``sb^2`` (Searle, Casella &
    McCulloch 1992, ch. 3; ``between`` may be negative pointwise and is not truncated, so averages stay
    unbiased). ``predicted_mse = between (1 + sum n_k^2 / N^2) + within (1 + 1 / N)`` is unbiased for
    ``E (mean_kj x_kj - y)^2`` when the truth is a member of a new group. NaN members are left out
    (``n_k`` counts the valid ones); NaN where fewer than two groups or no within-group degree of
    freedom remain.
    """
    labels = group_labels(forecast, member_dim, group)
    counts, means, squares = [], [], []
    with xr.set_options(use_bottleneck=False, use_numbagg=False):
        for label in np.unique(labels):
            members = forecast.isel({member_dim: np.flatnonzero(labels == label)})
            mean = members.mean(member_dim, dtype=np.float64)
            counts.append(members.count(member_dim).astype(np.float64))
            means.append(mean)
            squares.append(((members - mean) ** 2).sum(member_dim, dtype=np.float64))
    n_total = sum(counts)
    groups = sum((c > 0).astype(np.float64) for c in counts)
    grand = sum(c * m.fillna(0.0) for c, m in zip(counts, means)) / n_total
    between_ss = sum(c * (m.fillna(0.0) - grand) ** 2 for c, m in zip(counts, means))
    within_ss = sum(s for s in squares)
    sum_sq_counts = sum(c ** 2 for c in counts)
    valid = (groups >= 2) & (n_total > groups)
    within = (within_ss / (n_total - groups)).where(valid)
    n0 = (n_total - sum_sq_counts / n_total) / (groups - 1)
    between = ((between_ss / (groups - 1) - within) / n0).where(valid)
    predicted = between * (1.0 + sum_sq_counts / n_total ** 2) + within * (1.0 + 1.0 / n_total)
    return within, between, predicted


def spread_decomposition(forecast, member_dim: str = "member", group: str = "checkpoint", dim=None, regions=None,
                         truth=None) -> xr.Dataset:
    """Within- and between-group variance of a grouped (multi-checkpoint) ensemble.

    Estimator: the one-way random-effects ANOVA estimators (Searle, Casella & McCulloch 1992, ch. 3)
    pointwise, ``within_group_variance = MSW`` and ``between_group_variance = (MSB - MSW) / n0``,
    averaged (area-weighted) over ``dim``; pointwise values of the between-group variance may be
    negative (unbiased, not truncated). With ``truth``, points where it is NaN are left out. A Dataset
    input gives ``<variable>_within_group_variance`` and ``<variable>_between_group_variance``.

    >>> x = xr.DataArray([[0.0, 2.0, 10.0, 12.0]], dims=("x", "member"),
    ...                  coords={"checkpoint": ("member", [0, 0, 1, 1])})
    >>> d = spread_decomposition(x, dim="x")
    >>> float(d["within_group_variance"]), float(d["between_group_variance"])
    (2.0, 49.0)
    """
    check(forecast, truth, member_dim)
    within, between, _ = anova_components(forecast, member_dim, group)
    if truth is not None:
        within, between = within.where(truth.notnull()), between.where(truth.notnull())
    within, between = reduce_mean(within, dim, regions), reduce_mean(between, dim, regions)
    if isinstance(forecast, xr.Dataset):
        return xr.Dataset({**{f"{v}_within_group_variance": within[v] for v in within.data_vars},
                           **{f"{v}_between_group_variance": between[v] for v in between.data_vars}})
    return xr.Dataset({"within_group_variance": within, "between_group_variance": between})


# -- reliable values of the rank scores for a grouped design ---------------------------------------
_Y_NODES = 201
_Y_NODES_MAX = 30001
_B_NODES = 61


def _grids(ratio: float, members: int = 0):
    """Quadrature over the truth ``y ~ N(0, 1 + ratio)`` and a group effect ``b ~ N(0, ratio)`` (units
    of ``sw``): trapezoid weights on fine uniform grids (the integrands have steps of width about 1 /
    sqrt(log n) in ``y - b``, which Gauss-Hermite nodes would miss)."""
    sy = np.sqrt(1.0 + ratio)
    # the rank given y is a binomial of width about sqrt(N): the truth's grid must resolve 1/N in Phi(y)
    y = np.linspace(-9.0 * sy, 9.0 * sy, int(min(max(_Y_NODES, 4 * members + 1), _Y_NODES_MAX)))
    wy = np.exp(-0.5 * (y / sy) ** 2)
    wy /= wy.sum()
    if ratio <= 1e-12:
        return y, wy, np.zeros(1), np.ones(1)
    sb = np.sqrt(ratio)
    b = np.linspace(-8.0 * sb, 8.0 * sb, _B_NODES)
    wb = np.exp(-0.5 * (b / sb) ** 2)
    return y, wy, b, wb / wb.sum()


def rank_probabilities(group_sizes, ratio: float) -> np.ndarray:
    """Probability of each rank ``0..N`` of the truth among ``N = sum(group_sizes)`` members of a
    consistent Gaussian grouped ensemble with ``sb^2 / sw^2 = ratio``, the truth a member of a new group.

    Derived, not simulated: given the truth ``y`` and a group effect ``b`` the number of a group's
    members below ``y`` is binomial with ``p = Phi(y - b)``; averaging over ``b`` (quadrature) gives
    each group's count distribution, their convolution over groups (FFT) the rank distribution given
    ``y``, and quadrature over ``y`` the answer. ``ratio = 0`` gives the flat ``1 / (N + 1)``.

    >>> p = rank_probabilities([4, 4], 0.0)
    >>> bool(np.allclose(p, 1 / 9, atol=1e-4))
    True
    """
    sizes = np.asarray(group_sizes, dtype=int)
    total = int(sizes.sum())
    y, wy, b, wb = _grids(max(float(ratio), 0.0), total)
    log_below = log_ndtr(y[:, None] - b[None, :])[:, :, None]  # log P(member < y | b), (y, b, 1)
    log_above = log_ndtr(b[None, :] - y[:, None])[:, :, None]
    length = total + 1
    spectrum = np.ones((y.size, length // 2 + 1), dtype=complex)
    for size, repeats in zip(*np.unique(sizes, return_counts=True)):
        per_group = np.empty((y.size, size + 1))
        count = np.arange(size + 1, dtype=float)
        log_choose = gammaln(size + 1.0) - gammaln(count + 1.0) - gammaln(size - count + 1.0)
        step = max(1, (1 << 22) // (b.size * (size + 1)))  # bounded memory: a few y nodes at a time
        for start in range(0, y.size, step):
            part = slice(start, start + step)
            pmf = np.exp(log_choose + count * log_below[part] + (size - count) * log_above[part])  # (y, b, count)
            per_group[start:start + step] = np.einsum("ybc,b->yc", pmf, wb)
        spectrum *= np.fft.rfft(per_group, n=length, axis=-1) ** repeats
    given_y = np.clip(np.fft.irfft(spectrum, n=length, axis=-1), 0.0, None)
    probabilities = wy @ given_y
    return probabilities / probabilities.sum()


def outlier_probability(group_sizes, ratio: float) -> float:
    """Probability that the truth lies outside the range of a consistent Gaussian grouped ensemble
    (``sb^2 / sw^2 = ratio``): ``2 E_y prod_k E_b (1 - Phi(y - b))^{n_k}`` by quadrature (the two tails
    are symmetric); ``2 / (N + 1)`` when ``ratio = 0``.

    >>> round(outlier_probability([8], 0.0), 4), round(2 / 9, 4)
    (0.2222, 0.2222)
    """
    sizes = np.asarray(group_sizes, dtype=int)
    y, wy, b, wb = _grids(max(float(ratio), 0.0))
    log_above = log_ndtr(b[None, :] - y[:, None])  # log P(member > y | b) = log(1 - Phi(y - b))
    log_product = np.zeros(y.size)
    for size, repeats in zip(*np.unique(sizes, return_counts=True)):
        log_product += repeats * np.log(np.exp(size * log_above) @ wb + 1e-300)
    return float(2.0 * wy @ np.exp(log_product))


def group_sizes(forecast, member_dim: str, group: str) -> np.ndarray:
    """Members per group (all members, valid or not)."""
    return np.unique(group_labels(forecast, member_dim, group), return_counts=True)[1]


def reliable_outlier_fraction(ratio, sizes):
    """:func:`outlier_probability` at each value of the DataArray ``ratio`` (``sb^2 / sw^2``), lazily."""
    return xr.apply_ufunc(lambda r: outlier_probability(sizes, r), ratio, vectorize=True, dask="parallelized",
                          output_dtypes=[np.float64])


def reliable_rank_frequency(ratio, sizes):
    """:func:`rank_probabilities` at each value of the DataArray ``ratio``, lazily, with a ``rank`` dim."""
    bins = int(np.sum(sizes)) + 1
    return xr.apply_ufunc(lambda r: rank_probabilities(sizes, r), ratio, output_core_dims=[["rank"]], vectorize=True,
                          dask="parallelized", output_dtypes=[np.float64],
                          dask_gufunc_kwargs={"output_sizes": {"rank": bins}}).assign_coords(rank=np.arange(bins))


def variance_ratio(forecast, truth, member_dim: str, group: str, dim, regions):
    """``sb^2 / sw^2`` from the averaged ANOVA components (clipped at 0; lazy on Dask)."""
    d = spread_decomposition(forecast, member_dim, group, dim, regions, truth)
    return (d["between_group_variance"] / d["within_group_variance"]).clip(min=0.0)

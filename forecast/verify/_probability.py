"""Events and tails: exceedance probability, Brier score, reliability diagram, member quantiles, the
Extreme Forecast Index and climatological thresholds."""

from __future__ import annotations

import numpy as np
import xarray as xr

from forecast.verify import _kernels
from forecast.verify._common import check, dims_of, members_in_one_chunk, reduce_mean, reduce_sum, threads_for


def _event(values, threshold, above: bool):
    """``1{value > threshold}`` (``above``) or ``1{value < threshold}``, NaN where the value is NaN."""
    hit = values > threshold if above else values < threshold
    return hit.astype(float).where(values.notnull())


def _probability(forecast, threshold, member_dim, above):
    """Fraction of the non-NaN members beyond the threshold; NaN where every member is NaN or the threshold
    is NaN (an event defined from a truth with no values has no probability, rather than 0)."""
    valid = forecast.count(member_dim)
    hits = (forecast > threshold if above else forecast < threshold).sum(member_dim)
    probability = (hits / valid).where(valid > 0)
    if isinstance(threshold, xr.DataArray):
        return probability.where(threshold.notnull())
    if np.ndim(threshold) == 0 and np.isnan(threshold):
        return xr.full_like(probability, np.nan, dtype=float)
    return probability


def exceedance_probability(forecast, threshold, member_dim: str = "member", above: bool = True, dim=None,
                           regions=None):
    """Probability that the quantity exceeds ``threshold`` (``above=False``: falls below it).

    Estimator: the fraction of (non-NaN) members strictly beyond the threshold, ``#{x_i > t} / M``
    (the ensemble's empirical event probability). ``threshold`` is a number, a DataArray broadcasting
    against the forecast (e.g. :func:`climatological_thresholds` for percentile events), or carries
    its own dimension (several thresholds). With ``dim``, the (area-weighted) mean probability.

    >>> f = xr.DataArray([[0.0, 1.0, 2.0, 3.0]], dims=("x", "member"))
    >>> float(exceedance_probability(f, 1.5)[0]), float(exceedance_probability(f, 1.5, above=False)[0])
    (0.5, 0.5)
    >>> float(exceedance_probability(f, xr.DataArray([np.nan], dims="x"))[0])  # no threshold, no probability
    nan
    """
    check(forecast, None, member_dim)
    return reduce_mean(_probability(forecast, threshold, member_dim, above), dim, regions)


def brier_score(forecast, truth, threshold, member_dim: str = "member", fair: bool = False, above: bool = True,
                dim=None, regions=None):
    """Brier score of the event ``value > threshold`` (``above=False``: ``value < threshold``).

    Estimator: ``(p - o)^2`` with ``p`` the ensemble's event probability (:func:`exceedance_probability`)
    and ``o`` the observed event (Brier 1950); with ``fair=True`` the fair score
    ``(p - o)^2 - p (1 - p) / (M - 1)`` (Ferro 2014), unbiased for the infinite ensemble (NaN with fewer
    than two members). Averaged over ``dim`` (area-weighted). xskillscore's ``brier_score`` on boolean
    members computes the same.

    >>> f = xr.DataArray([[0.0, 1.0, 2.0, 3.0]], dims=("x", "member"))
    >>> float(brier_score(f, xr.DataArray([5.0], dims="x"), 1.5)[0])
    0.25
    """
    check(forecast, truth, member_dim)
    p = _probability(forecast, threshold, member_dim, above)
    o = _event(truth, threshold, above)
    score = (p - o) ** 2
    if fair:
        m = forecast.count(member_dim)
        score = (score - p * (1 - p) / (m - 1)).where(m > 1)
    return reduce_mean(score, dim, regions)


def _bin_edges(bins) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, int(bins) + 1) if np.isscalar(bins) else np.asarray(bins, dtype=float)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be a count >= 1 or increasing edges, got {bins!r}")
    return edges


def _bin_index(p, edges):
    """Bin of each probability: left-closed bins, the last one closed; -1 outside or NaN."""
    index = np.searchsorted(edges, p, side="right") - 1
    index = np.where(p == edges[-1], edges.size - 2, index)
    return np.where(np.isnan(p) | (index < 0) | (index > edges.size - 2), -1, index).astype(np.int16)


def reliability(forecast, truth, threshold, member_dim: str = "member", bins=10, above: bool = True, dim=None,
                regions=None) -> xr.Dataset:
    """Reliability diagram of the event ``value > threshold``: observed frequency per forecast-probability bin.

    Estimator: the cases are grouped by the ensemble event probability ``p`` into ``bins`` (equal bins on
    [0, 1] or given edges; left-closed, the last bin also holds its right edge); per bin the (area-
    weighted) mean ``p`` (``forecast_probability``), the (area-weighted) observed event frequency
    (``observed_frequency``) and the number of cases (``count``). A reliable ensemble lies on the
    diagonal (Wilks 2011, ch. 8; xskillscore's ``reliability`` bins the same way). Needs ``dim``.

    >>> f = xr.DataArray([[0.0, 2.0], [2.0, 2.0], [0.0, 0.0]], dims=("x", "member"))
    >>> r = reliability(f, xr.DataArray([2.0, 2.0, 0.0], dims="x"), 1.0, bins=2, dim="x")
    >>> r["observed_frequency"].values.tolist(), r["count"].values.tolist()
    ([0.0, 1.0], [1, 2])
    """
    check(forecast, truth, member_dim)
    dims = dims_of(dim)
    if not dims:
        raise ValueError("reliability needs dim: the dimensions whose cases fill the diagram")
    edges = _bin_edges(bins)
    p = _probability(forecast, threshold, member_dim, above)
    o = _event(truth, threshold, above)
    valid = p.notnull() & o.notnull()
    p, o = p.where(valid), o.where(valid)
    centres = (edges[1:] + edges[:-1]) / 2
    index = xr.apply_ufunc(_bin_index, p, kwargs={"edges": edges}, dask="parallelized", output_dtypes=[np.int16])
    inside = (index == xr.DataArray(np.arange(centres.size), dims="bin")).astype(float).where(valid)
    inside = inside.assign_coords(bin=centres)
    total = reduce_sum(inside, dims, regions)
    total = total.where(total > 0)  # empty bins: NaN, without a division warning
    return xr.Dataset({
        "forecast_probability": reduce_sum(inside * p, dims, regions) / total,
        "observed_frequency": reduce_sum(inside * o, dims, regions) / total,
        "count": inside.sum(dims).astype(np.int64),
    }, attrs={"bin_edges": edges.tolist(), "event": f"value {'>' if above else '<'} threshold"})


def _quantiles_numpy(x, q, threads=None):
    (out,) = _kernels.over_members(x, _kernels.quantile_rows, outputs=((q.size,),), sort=True, kernel_args=(q,),
                                   threads=threads)
    return out


def ensemble_quantiles(forecast, q, member_dim: str = "member", dim=None, regions=None):
    """Quantiles ``q`` of the member distribution, with a new ``quantile`` dimension.

    Estimator: linear interpolation between the sorted non-NaN members at position ``q (M - 1)``
    (Hyndman & Fan 1996 type 7, NumPy's default), from members sorted block by block. With ``dim``, the
    (area-weighted) mean of each quantile field.

    >>> f = xr.DataArray([[0.0, 10.0, 20.0, 30.0]], dims=("x", "member"))
    >>> ensemble_quantiles(f, [0.5, 0.9]).values.tolist()
    [[15.0, 27.0]]
    """
    check(forecast, None, member_dim)
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if q.ndim != 1 or np.any((q < 0) | (q > 1)) or np.any(np.isnan(q)):
        raise ValueError(f"q must be probabilities in [0, 1], got {q.tolist()}")
    forecast = members_in_one_chunk(forecast, member_dim)
    result = xr.apply_ufunc(_quantiles_numpy, forecast, input_core_dims=[[member_dim]], output_core_dims=[["quantile"]],
                            kwargs={"q": q, "threads": threads_for(forecast)}, dask="parallelized",
                            output_dtypes=[np.float64], dask_gufunc_kwargs={"output_sizes": {"quantile": q.size}})
    return reduce_mean(result.assign_coords(quantile=q), dim, regions)


def climatological_thresholds(climate, q, time_dim: str = "time"):
    """Per-point percentiles ``q`` of a climate sample along ``time_dim`` (type 7), dims ``(quantile, ...)``:
    thresholds for percentile events (:func:`exceedance_probability`, :func:`brier_score`) and the model
    climate for :func:`extreme_forecast_index`.

    >>> clim = xr.DataArray(np.arange(11.0), dims="time")
    >>> climatological_thresholds(clim, [0.1, 0.9]).values.tolist()
    [1.0, 9.0]
    """
    if time_dim not in climate.dims:
        raise ValueError(f"climate has no {time_dim!r} dimension (dims: {list(climate.dims)})")
    return ensemble_quantiles(climate, q, member_dim=time_dim).transpose("quantile", ...)


def _efi_numpy(x, climate, probability, threads=None):
    (out,) = _kernels.over_members(x, lambda b, c, o: _kernels.efi_rows(b, c.astype(np.float64), probability, o),
                                   point_args=((climate, 1),), outputs=((),), threads=threads)
    return out


def extreme_forecast_index(forecast, climate, member_dim: str = "member", climate_dim: str = "quantile", dim=None,
                           regions=None):
    """Extreme Forecast Index of the ensemble against a model climate (Lalaurette 2003).

    Estimator: ``EFI = (2/pi) int_0^1 (p - F_f(p)) / sqrt(p (1 - p)) dp``, where ``F_f(p)`` is the
    fraction of members below the model-climate ``p``-quantile. With the climate CDF ``P_c`` piecewise
    linear through the given quantiles, the integral is exact as
    ``EFI = mean_i (2/pi) asin(2 P_c(x_i) - 1)`` (integrate the step function ``F_f`` member by member),
    so no quadrature error: 0 when the forecast follows the climate, +1 (-1) when every member is above
    (below) the climate's range. ``climate`` holds quantile values along ``climate_dim``, whose
    coordinate gives their probabilities (ascending, in [0, 1]); build it with
    :func:`climatological_thresholds` from a model-climate sample. NaN members are left out.

    >>> clim = climatological_thresholds(xr.DataArray(np.linspace(0, 1, 101), dims="time"), np.linspace(0, 1, 11))
    >>> f = xr.DataArray([[2.0, 3.0], [0.25, 0.75]], dims=("x", "member"))
    >>> [round(v, 6) for v in extreme_forecast_index(f, clim).values.tolist()]
    [1.0, 0.0]
    """
    check(forecast, None, member_dim)
    if climate_dim not in climate.dims:
        raise ValueError(f"climate has no {climate_dim!r} dimension (dims: {list(climate.dims)})")
    probability = np.asarray(climate[climate_dim].values, dtype=np.float64)
    if probability.size < 2 or np.any(np.diff(probability) <= 0) or probability[0] < 0 or probability[-1] > 1:
        raise ValueError(f"climate[{climate_dim!r}] must hold increasing probabilities in [0, 1]")
    forecast = members_in_one_chunk(forecast, member_dim)
    if isinstance(climate, xr.DataArray) and climate.chunks is not None:
        climate = climate.chunk({climate_dim: -1})
    result = xr.apply_ufunc(_efi_numpy, forecast, climate.drop_vars(climate_dim), input_core_dims=[[member_dim], [climate_dim]],
                            kwargs={"probability": probability, "threads": threads_for(forecast, climate)},
                            dask="parallelized", output_dtypes=[np.float64])
    return reduce_mean(result, dim, regions)

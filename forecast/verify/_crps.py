"""CRPS (fair and standard), its skill score against climatology, and threshold-weighted CRPS."""

from __future__ import annotations

import numpy as np
import xarray as xr

from forecast.verify import _kernels
from forecast.verify._common import check, members_in_one_chunk, reduce_mean, threads_for


def _crps_numpy(x, y, *, threads=None, lower=None, upper=None):
    """Fair and standard CRPS of ``x (..., member)`` against ``y (...)``; the members (and ``y``) are
    first passed through ``clip(., lower, upper)`` when bounds are given (threshold weighting)."""
    point_args = [y]
    transform = None
    dtype = None
    if lower is not None or upper is not None:
        # clip in float64: a threshold rounded to float32 would move every clipped member
        dtype = np.float64
        lo = np.asarray(-np.inf if lower is None else lower, dtype=np.float64)
        hi = np.asarray(np.inf if upper is None else upper, dtype=np.float64)
        point_args += [lo, hi]
        y = np.clip(np.asarray(y, dtype=np.float64), lo, hi)
        point_args[0] = y

        def transform(block, _y, lo_block, hi_block):
            np.clip(block, lo_block[:, None], hi_block[:, None], out=block)

    def kernel(block, y_block, *rest):
        _kernels.crps_rows(block, y_block, *rest[-2:])

    fair, standard = _kernels.over_members(x, kernel, point_args=point_args, outputs=((), ()), sort=True,
                                           transform=transform, threads=threads, dtype=dtype)
    return fair, standard


def crps_pair(forecast, truth, member_dim: str = "member", lower=None, upper=None):
    """Pointwise ``(fair, standard)`` CRPS from one sort of the members (lazy on Dask); with ``lower`` /
    ``upper`` (numbers or DataArrays), members and truth are clipped to them first."""
    check(forecast, truth, member_dim)
    forecast = members_in_one_chunk(forecast, member_dim)
    clip = lower is not None or upper is not None
    lo = lower if isinstance(lower, (xr.DataArray, xr.Dataset)) else xr.DataArray(-np.inf if lower is None else float(lower))
    hi = upper if isinstance(upper, (xr.DataArray, xr.Dataset)) else xr.DataArray(np.inf if upper is None else float(upper))

    def call(x, y, lo, hi, threads):
        return _crps_numpy(x, y, threads=threads, lower=lo if clip else None, upper=hi if clip else None)

    return xr.apply_ufunc(call, forecast, truth, lo, hi, input_core_dims=[[member_dim], [], [], []],
                          output_core_dims=[[], []], kwargs={"threads": threads_for(forecast, truth)},
                          dask="parallelized", output_dtypes=[np.float64, np.float64])


def crps(forecast, truth, member_dim: str = "member", fair: bool = True, dim=None, regions=None):
    """Continuous ranked probability score of an ensemble.

    Estimator: ``CRPS = mean_i |x_i - y| - sum_ij |x_i - x_j| / (2 M (M - 1))`` (fair, Ferro 2014;
    unbiased for the CRPS of the distribution the members are drawn from, Zamo & Naveau 2018) or
    ``/ (2 M^2)`` with ``fair=False`` (the standard CRPS of the empirical distribution, Gneiting &
    Raftery 2007; what properscoring computes). The pairwise sum is computed from members sorted in
    float32 (or float64 for float64 input) as ``2 sum_i (2 i - M - 1) x_(i)``, O(M log M), accumulated
    in float64, block by block (working memory does not grow with M). NaN members are left out (M counts
    the others); NaN where the truth or every member is NaN. The fair CRPS needs two members to
    estimate ``E|X - X'|``, so it is NaN (undefined, not the absolute error) where only one member is
    valid; the standard CRPS of one member is the absolute error.

    Parameters
    ----------
    forecast : xarray.DataArray or xarray.Dataset
        Ensemble with a ``member_dim`` dimension.
    truth : xarray.DataArray or xarray.Dataset
        Verifying values, the same dims without ``member_dim``.
    member_dim : str
        Name of the member dimension.
    fair : bool
        Fair (default) or standard estimator.
    dim : str or sequence of str, optional
        Dimensions to average over (area-weighted when ``lat`` is among them); ``None`` is pointwise.
    regions : Region or sequence of Region, optional
        Average separately over each region (adds a ``region`` dimension); needs ``lat`` in ``dim``.

    Examples
    --------
    >>> f = xr.DataArray([[0.0, 1.0]], dims=("x", "member"))
    >>> t = xr.DataArray([0.0], dims="x")
    >>> float(crps(f, t, fair=False)[0]), float(crps(f, t)[0])
    (0.25, 0.0)
    """
    fair_score, standard_score = crps_pair(forecast, truth, member_dim)
    return reduce_mean(fair_score if fair else standard_score, dim, regions)


def crps_skill_score(forecast, truth, climatology, member_dim: str = "member", climatology_dim: str | None = None,
                     fair: bool = True, dim=None, regions=None):
    """CRPS skill score against a climatological ensemble: ``1 - mean CRPS(forecast) / mean CRPS(climatology)``.

    Estimator: both CRPS with the same estimator (:func:`crps`, fair by default), averaged over ``dim``
    first (a ratio of means, Hersbach 2000; Zamo & Naveau 2018 for the fair CRPS); 1 is perfect, 0 is
    no better than climatology. ``climatology`` holds climatological values (e.g. the same calendar
    period in past years) along ``climatology_dim`` (default: ``member_dim``) and broadcasts against
    ``truth``.

    Examples
    --------
    >>> y = xr.DataArray([0.0, 1.0], dims="x")
    >>> clim = xr.DataArray([[-1.0, 1.0], [-1.0, 1.0]], dims=("x", "member"))
    >>> sharp = xr.DataArray([[0.0, 0.0], [1.0, 1.0]], dims=("x", "member"))
    >>> float(crps_skill_score(clim, y, clim, fair=False, dim="x")), float(crps_skill_score(sharp, y, clim, fair=False, dim="x"))
    (0.0, 1.0)
    """
    climatology_dim = climatology_dim or member_dim
    check(climatology, truth, climatology_dim)
    forecast_crps = crps(forecast, truth, member_dim, fair=fair)
    clim = climatology.rename({climatology_dim: "_climatology"}) if climatology_dim == member_dim else climatology
    clim_crps = crps(clim, truth, "_climatology" if climatology_dim == member_dim else climatology_dim, fair=fair)
    clim_crps = clim_crps.where(forecast_crps.notnull())
    return 1.0 - reduce_mean(forecast_crps, dim, regions) / reduce_mean(clim_crps, dim, regions)


def twcrps(forecast, truth, threshold, member_dim: str = "member", tail: str = "upper", fair: bool = True,
           dim=None, regions=None):
    """Threshold-weighted CRPS: the CRPS of the members and truth passed through a chaining function.

    Estimator (Gneiting & Ranjan 2011; Allen et al. 2023 for ensembles): with weight ``w(z) = 1{z > t}``
    (``tail="upper"``) the chaining function is ``v(z) = max(z, t)``; ``tail="lower"`` uses ``min(z, t)``
    for ``1{z < t}``; ``tail="interval"`` with ``threshold=(a, b)`` uses ``clip(z, a, b)``. The CRPS of
    ``v(x_i)`` against ``v(y)`` (fair by default, as in :func:`crps`) equals the integral of the Brier
    scores weighted by ``w``. ``threshold`` may be a number or a DataArray broadcasting against the
    truth (e.g. a climatological percentile per grid point). What ``scores``' ``tail_tw_crps_for_ensemble``
    computes with ``method="fair"`` / ``"ecdf"``.

    Examples
    --------
    >>> f = xr.DataArray([[0.0, 1.0, 2.0]], dims=("x", "member"))
    >>> y = xr.DataArray([5.0], dims="x")
    >>> float(twcrps(f, y, 1.5, fair=False)[0])  # members become 1.5, 1.5, 2
    3.2222222222222223
    """
    if tail == "upper":
        lower, upper = threshold, None
    elif tail == "lower":
        lower, upper = None, threshold
    elif tail == "interval":
        if not isinstance(threshold, (tuple, list)) or len(threshold) != 2:
            raise ValueError("tail='interval' needs threshold=(lower, upper)")
        lower, upper = threshold
    else:
        raise ValueError(f"tail must be 'upper', 'lower' or 'interval', got {tail!r}")
    fair_score, standard_score = crps_pair(forecast, truth, member_dim, lower=lower, upper=upper)
    return reduce_mean(fair_score if fair else standard_score, dim, regions)

"""Ensemble verification on xarray, lazy on Dask until computed.

Every score takes ``forecast`` (with a member dimension named by ``member_dim``) and, where it needs
one, ``truth`` (the same dims without it) as ``xarray.DataArray`` or ``Dataset`` and returns the same
kind. ``dim`` names the dimensions to average over: ``None`` keeps the score pointwise; when ``dim``
includes ``lat`` the mean is area-weighted with cell-area (cos-latitude) weights computed from the
``lat`` coordinate. ``regions`` (a :class:`Region` or a sequence, e.g. :data:`REGIONS`) averages
separately over each region and adds a ``region`` dimension. Points where the truth is NaN are NaN
pointwise and left out of means; NaN members are left out where a score can do without them.

Truth: :func:`align_truth` takes a truth in any layout ``forecast run`` reads (the planet's, WeatherBench2,
ARCO-ERA5, CDS) to the forecast's grid and valid times, and stores other tools wrote are scored when their
dimension names are given (``dims``); the scores refuse a truth that would broadcast instead of align
(its own ``time`` axis, ``latitude`` against ``lat``). See ``docs/truth.md``.

Memory: scores that need all members of a point together (CRPS, twCRPS, ranks, quantiles, EFI, the
satisfactory ensemble size) ask Dask for chunks spanning all members over a tile of points and walk
each chunk in blocks of points (``_kernels.over_members``), so working memory is about one chunk plus
one small buffer per thread, whatever M. Moment scores (mean, spread, bias, RMSE, exceedance, Brier)
reduce members block by block and accept any member chunking.
"""

from forecast.verify._common import (GLOBAL, NH_EXTRATROPICS, REGIONS, SH_EXTRATROPICS, TROPICS, Region,
                                     latitude_weights, reduce_mean, reduce_sum)
from forecast.verify._crps import crps, crps_pair, crps_skill_score, twcrps
from forecast.verify._grouped import spread_decomposition
from forecast.verify._moments import (best_member_rmse, ensemble_mean_bias, ensemble_mean_rmse, ensemble_spread,
                                      sigma_exceedance_counts, spread_skill_ratio)
from forecast.verify._probability import (brier_score, climatological_thresholds, ensemble_quantiles,
                                          exceedance_probability, extreme_forecast_index, reliability)
from forecast.verify._significance import paired_difference
from forecast.verify._ranks import (outlier_fraction, rank_histogram, rank_histogram_flatness,
                                    satisfactory_ensemble_size, truth_rank)
from forecast.verify._truth import (FORECAST_DIMS, align_truth, as_system_forecast, forecast_channels, forecast_renames,
                                    forecast_truth, parse_dims, valid_time_truth)

_mean = reduce_mean  # the name the first scores used

__all__ = [
    "crps", "crps_skill_score", "ensemble_mean_rmse", "ensemble_spread", "spread_skill_ratio", "rank_histogram",
    "outlier_fraction", "exceedance_probability", "brier_score", "reliability", "ensemble_quantiles", "twcrps",
    "sigma_exceedance_counts", "best_member_rmse", "extreme_forecast_index", "satisfactory_ensemble_size",
    "ensemble_mean_bias", "rank_histogram_flatness", "climatological_thresholds", "truth_rank", "crps_pair",
    "spread_decomposition", "paired_difference",
    "latitude_weights", "align_truth", "reduce_mean", "reduce_sum", "Region", "REGIONS", "GLOBAL",
    "NH_EXTRATROPICS", "TROPICS", "SH_EXTRATROPICS", "as_system_forecast", "forecast_channels", "forecast_renames",
    "forecast_truth", "parse_dims", "valid_time_truth", "FORECAST_DIMS",
]

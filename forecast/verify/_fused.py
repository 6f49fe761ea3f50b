"""The standard score set of one channel from one read and one sort of the members per point.

:func:`score_fields` applies one block function to each Dask chunk of the forecast (all members of a
tile of points). It walks the chunk in blocks of points (:func:`forecast.verify._kernels.over_members`):
each block is copied once into a buffer, read once in member order (moments, members beyond k sigma,
event probabilities, the control member's error, the checkpoint (group) sums, the rank with its tie
rule), sorted once, and read once sorted (fair and standard CRPS, the outlier indicator, twCRPS). What
comes out are per-point fields (a ``field`` dimension), M times smaller than the members; the scores are
area-weighted means of them (:func:`channel_scores`, one weighted reduction for all mean-type scores).
The best member's RMSE needs each member's own area mean: :func:`member_error_sums` reduces each chunk to
per-member weighted sums (a second task on the same read). The estimators are those of the public
functions in :mod:`forecast.verify` (see their docstrings); ``tests/forecast/test_score_fusion.py``
checks every score against them.
"""

from __future__ import annotations

import math
import zlib

import dask.array as da
import numba
import numpy as np
import xarray as xr

from forecast.verify import _kernels
from forecast.verify._common import reduce_mean, weights_for
from forecast.verify._grouped import group_labels, group_sizes, reliable_outlier_fraction, reliable_rank_frequency

SIGMA_LEVELS = (1.0, 2.0, 3.0)
# one number per point each; then the counts beyond k sigma (per level), event probabilities and outcomes (per event)
FIELDS = ("crps_fair", "crps_standard", "mean_error", "variance", "valid_members", "outside", "rank", "twcrps_fair",
          "climate_crps_fair", "control_error", "within_group_variance", "between_group_variance",
          "predicted_grouped")
(FAIR, STANDARD, MEAN_ERROR, VARIANCE, VALID, OUTSIDE, RANK, TWCRPS, CLIMATE_CRPS, CONTROL_ERROR, WITHIN, BETWEEN,
 PREDICTED_GROUPED) = range(len(FIELDS))


# -- row kernels -----------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _member_order_rows(x, y, thresholds, above, levels, control, group, n_groups, out):
    """Moments, counts beyond ``levels`` sigma, event probabilities/outcomes, control error and the
    one-way ANOVA per row of members in member order (float64 sums in member order, as the xarray
    reductions of :mod:`forecast.verify._moments` and :mod:`forecast.verify._grouped` add them)."""
    m = x.shape[1]
    n_levels = levels.shape[0]
    n_events = thresholds.shape[1]
    base_sigma = len(FIELDS)
    base_probability = base_sigma + n_levels
    base_outcome = base_probability + n_events
    ddof = 1 if m > 1 else 0
    counts = np.zeros(max(n_groups, 1))
    sums = np.zeros(max(n_groups, 1))
    squares = np.zeros(max(n_groups, 1))
    for p in range(x.shape[0]):
        row = x[p]
        yy = np.float64(y[p])
        total = 0.0
        n = 0
        for i in range(m):
            v = row[i]
            if not np.isnan(v):
                total += np.float64(v)
                n += 1
        mean = total / n if n > 0 else np.nan
        q = 0.0
        for i in range(m):
            v = row[i]
            if not np.isnan(v):
                d = np.float64(v) - mean
                q += d * d
        variance = q / (n - ddof) if n - ddof > 0 else np.nan
        out[p, MEAN_ERROR] = mean - yy
        out[p, VARIANCE] = variance
        out[p, VALID] = n
        std = math.sqrt(variance) if not np.isnan(variance) else np.nan
        for k in range(n_levels):
            out[p, base_sigma + k] = np.nan if np.isnan(std) else 0.0
        if not np.isnan(std):
            for i in range(m):
                deviation = abs(np.float64(row[i]) - mean)
                for k in range(n_levels):
                    if deviation > levels[k] * std:
                        out[p, base_sigma + k] += 1.0
        for e in range(n_events):
            t = thresholds[p, e]
            if n == 0 or np.isnan(t):
                out[p, base_probability + e] = np.nan
            else:
                hits = 0
                for i in range(m):
                    v = np.float64(row[i])
                    if (v > t) if above[e] else (v < t):
                        hits += 1
                out[p, base_probability + e] = hits / n
            if np.isnan(yy):
                out[p, base_outcome + e] = np.nan
            else:
                out[p, base_outcome + e] = 1.0 if ((yy > t) if above[e] else (yy < t)) else 0.0
        if control >= 0:
            d = row[control] - y[p]  # in the members' precision, as (x_control - y) ** 2 in xarray
            out[p, CONTROL_ERROR] = np.float64(d * d)
        if n_groups > 1:
            counts[:] = 0.0
            sums[:] = 0.0
            squares[:] = 0.0
            for i in range(m):
                v = row[i]
                if not np.isnan(v):
                    counts[group[i]] += 1.0
                    sums[group[i]] += np.float64(v)
            for i in range(m):
                v = row[i]
                if not np.isnan(v):
                    d = np.float64(v) - sums[group[i]] / counts[group[i]]
                    squares[group[i]] += d * d
            n_total = 0.0
            groups = 0.0
            weighted = 0.0
            sum_sq_counts = 0.0
            within_ss = 0.0
            for g in range(n_groups):
                n_total += counts[g]
                sum_sq_counts += counts[g] ** 2
                within_ss += squares[g]
                if counts[g] > 0:
                    groups += 1.0
                    weighted += sums[g]
            grand = weighted / n_total if n_total > 0 else np.nan
            between_ss = 0.0
            for g in range(n_groups):
                if counts[g] > 0:
                    between_ss += counts[g] * (sums[g] / counts[g] - grand) ** 2
            if groups >= 2 and n_total > groups:
                within = within_ss / (n_total - groups)
                n0 = (n_total - sum_sq_counts / n_total) / (groups - 1.0)
                between = (between_ss / (groups - 1.0) - within) / n0
                out[p, WITHIN] = within
                out[p, BETWEEN] = between
                out[p, PREDICTED_GROUPED] = (between * (1.0 + sum_sq_counts / n_total ** 2)
                                             + within * (1.0 + 1.0 / n_total))
            else:
                out[p, WITHIN] = np.nan
                out[p, BETWEEN] = np.nan
                out[p, PREDICTED_GROUPED] = np.nan


@numba.njit(nogil=True, cache=True)
def _outside_rows(xs, y, out):
    """1 where the truth lies outside the range of the sorted members (NaN last), 0 inside, NaN where
    the truth or every member is NaN."""
    for p in range(xs.shape[0]):
        row = xs[p]
        n = _kernels._valid_count(row)
        yy = np.float64(y[p])
        if n == 0 or np.isnan(yy):
            out[p] = np.nan
        else:
            out[p] = 1.0 if (yy < np.float64(row[0]) or yy > np.float64(row[n - 1])) else 0.0


@numba.njit(nogil=True, cache=True)
def _climate_crps(climate, y, rows, out):
    """Fair CRPS of each truth value against its point's sorted climatological sample
    (``climate[rows[p]]``, NaN last), with :func:`forecast.verify._kernels.crps_rows`'s estimator."""
    for p in range(y.shape[0]):
        row = climate[rows[p]]
        n = _kernels._valid_count(row)
        yy = np.float64(y[p])
        if n < 2 or np.isnan(yy):
            out[p] = np.nan
            continue
        a = 0.0
        s1 = 0.0
        s0 = 0.0
        for i in range(n):
            d = np.float64(row[i]) - yy
            a += abs(d)
            s1 += (i + 1.0) * d
            s0 += d
        g = 2.0 * s1 - (n + 1) * s0
        out[p] = a / n - g / (n * (n - 1.0))


# -- the block function ----------------------------------------------------------------------------
def _fields_numpy(x, y, *extra, events: int, climate: bool, above, control: int, group, n_groups: int,
                  threads=None):
    """Every per-point field of one chunk: ``x (..., member)``, ``y (...)``; with ``events``, the event
    thresholds ``(..., event)`` and the twCRPS threshold ``(...)``; with ``climate``, the climatological
    sample ``(..., climate_sample)`` (constant along all but the last two point axes)."""
    y = np.asarray(y)
    lead = np.broadcast_shapes(y.shape, x.shape[:-1])
    y = np.broadcast_to(y, lead)
    ids = np.arange(int(np.prod(lead)), dtype=np.int64).reshape(lead)
    seed = zlib.crc32(np.ascontiguousarray(y).tobytes())  # the tie rule of verify.truth_rank, block for block
    extra = list(extra)
    thresholds = extra.pop(0) if events else np.zeros(lead + (0,))
    tw = extra.pop(0) if events else np.full(lead, np.nan)
    levels = np.asarray(SIGMA_LEVELS)
    above = np.asarray(above, dtype=np.bool_)
    group = np.asarray(group, dtype=np.int64)

    def before_sort(block, y_block, id_block, threshold_block, tw_block, out):
        _member_order_rows(block, y_block, threshold_block, above, levels, control, group, n_groups, out)
        _kernels.rank_rows(block, y_block, id_block, seed, out[:, RANK])

    def sorted_rows(block, y_block, id_block, threshold_block, tw_block, out):
        _kernels.crps_rows(block, y_block, out[:, FAIR], out[:, STANDARD])
        _outside_rows(block, y_block, out[:, OUTSIDE])
        if events:  # members and truth through max(., t): monotone, so the sorted block stays sorted
            clipped = np.maximum(block.astype(np.float64), tw_block[:, None])
            scratch = np.empty(block.shape[0])
            _kernels.crps_rows(clipped, np.maximum(y_block.astype(np.float64), tw_block), out[:, TWCRPS], scratch)

    width = len(FIELDS) + levels.size + 2 * thresholds.shape[-1]
    (out,) = _kernels.over_members(x, sorted_rows, point_args=(y, ids, (thresholds, 1), tw), outputs=((width,),),
                                   sort=True, before_sort=before_sort, threads=threads)
    if not events:
        out[..., TWCRPS] = np.nan
    if control < 0:
        out[..., CONTROL_ERROR] = np.nan
    if n_groups < 2:
        out[..., [WITHIN, BETWEEN, PREDICTED_GROUPED]] = np.nan
    out[..., CLIMATE_CRPS] = np.nan
    if climate:
        sample = np.sort(np.asarray(extra.pop(0)), axis=-1)  # each point's sample sorted once (NaN last)
        rows = np.arange(int(np.prod(sample.shape[:-1]))).reshape(sample.shape[:-1])
        rows = np.ascontiguousarray(np.broadcast_to(rows, lead)).reshape(-1)
        climate_crps = np.empty(rows.size)
        _climate_crps(sample.reshape(-1, sample.shape[-1]), np.ascontiguousarray(y).reshape(-1), rows, climate_crps)
        out[..., CLIMATE_CRPS] = climate_crps.reshape(lead)
    return out


def score_fields(f: xr.DataArray, y: xr.DataArray, events=None, twcrps_threshold=None, climate_sample=None,
                 control: int | None = None, group: str | None = None) -> xr.DataArray:
    """Per-point fields of the score set (dims of ``y`` plus ``field``), lazy on Dask.

    ``events``: ``{name: (threshold, above)}`` with thresholds broadcasting against ``y``;
    ``twcrps_threshold``: the twCRPS threshold (upper tail); ``climate_sample``: a climatological ensemble
    along ``climate_sample`` (lat, lon) for the CRPS skill score; ``control``: the control member's
    index; ``group``: the coordinate naming each member's checkpoint.
    """
    dims = [d for d in f.dims if d != "member"]
    y = y.transpose(*dims)

    def like_f(a):  # the forecast's chunks: Dask would otherwise split the member chunks to match (and re-seed ties)
        return a.chunk({d: f.chunksizes[d] for d in a.dims if d in dims}) if f.chunks is not None else a

    y, twcrps_threshold = like_f(y), None if twcrps_threshold is None else like_f(twcrps_threshold)
    names = list(events or {})
    args, core = [f, y], [["member"], []]
    if names:
        thresholds = xr.concat([events[e][0] for e in names], dim="event").broadcast_like(y.isel(
            {d: 0 for d in dims if d not in ("lat", "lon")}, drop=True))
        thresholds = like_f(thresholds.chunk({"event": -1})) if f.chunks is not None else thresholds
        args += [thresholds, twcrps_threshold]
        core += [["event"], []]
    if climate_sample is not None:
        if f.chunks is not None:
            climate_sample = like_f(climate_sample.chunk({"climate_sample": -1}))
        args.append(climate_sample)
        core.append(["climate_sample"])
    labels, n_groups = np.zeros(f.sizes["member"], dtype=np.int64), 0
    if group is not None:
        _, labels = np.unique(group_labels(f, "member", group), return_inverse=True)
        n_groups = int(labels.max()) + 1
    kwargs = {"events": len(names), "climate": climate_sample is not None, "above": [events[e][1] for e in names],
              "control": -1 if control is None else int(control), "group": labels, "n_groups": n_groups,
              "threads": 1 if f.chunks is not None else None}
    width = len(FIELDS) + len(SIGMA_LEVELS) + 2 * len(names)
    fields = xr.apply_ufunc(_fields_numpy, *args, input_core_dims=core, output_core_dims=[["field"]], kwargs=kwargs,
                            dask="parallelized", output_dtypes=[np.float64],
                            dask_gufunc_kwargs={"output_sizes": {"field": width}})
    return fields


# -- the best member: per-member area sums, chunk by chunk -------------------------------------------
@numba.njit(nogil=True, cache=True)
def _member_error_sums(x, y, weights, out):
    """``out[m, t, r] += (sum_p w_rp (x_mtp - y_tp)^2, sum_p w_rp)`` over the points ``p`` where the error
    is not NaN: ``x (member, other, lead, points)``, ``y (other, lead, points)``, ``weights (region,
    points)``; the error is squared in the members' precision, as ``(x - y) ** 2`` in xarray."""
    n_members, n_other, n_leads, n_points = x.shape
    for m in range(n_members):
        for o in range(n_other):
            for t in range(n_leads):
                for p in range(n_points):
                    d = x[m, o, t, p] - y[o, t, p]
                    if np.isnan(d):
                        continue
                    d2 = np.float64(d * d)
                    for r in range(weights.shape[0]):
                        out[m, t, r, 0] += weights[r, p] * d2
                        out[m, t, r, 1] += weights[r, p]


def _member_sums_block(x, y, weights):
    """Per-member sums of one chunk ``x (member, init, lead, lat, lon)``, kept dims of size one."""
    m, i, t, a, b = x.shape
    out = np.zeros((m, t, weights.shape[0], 2))
    _member_error_sums(x.reshape(m, i, t, a * b), np.broadcast_to(y, (i, t, a, b)).reshape(i, t, a * b),
                       np.ascontiguousarray(weights).reshape(weights.shape[0], a * b), out)
    return out[:, None, :, None, None]


def best_member_rmse(f: xr.DataArray, y: xr.DataArray, dims, regions) -> xr.DataArray:
    """:func:`forecast.verify.best_member_rmse` over ``dims = (init_time, lat, lon)`` per region, from one
    pass over each chunk that sums every member's weighted squared errors (no member-sized temporary)."""
    order = ("member", "init_time", "lead_time", "lat", "lon")
    if set(dims) != {"init_time", "lat", "lon"} or set(f.dims) != set(order) or f.chunks is None:
        from forecast.verify import best_member_rmse as composed

        return composed(f, y, dim=list(dims), regions=regions)
    f = f.transpose(*order)
    y = y.transpose(*order[1:]).chunk({d: f.chunksizes[d] for d in order[1:]})
    weights = weights_for(y, list(dims), regions)
    weights = weights.broadcast_like(y.isel(init_time=0, lead_time=0, drop=True)).transpose("region", "lat", "lon")
    w = da.from_array(weights.values.astype(np.float64), chunks=(-1, f.chunks[3], f.chunks[4]))
    sums = da.blockwise(_member_sums_block, "mitabrs", f.data, "mitab", y.data, "itab", w, "rab",
                        new_axes={"s": 2}, adjust_chunks={"i": 1, "a": 1, "b": 1}, dtype=np.float64,
                        meta=np.empty((0,) * 7))
    sums = sums.sum(axis=(1, 3, 4))
    total = xr.DataArray(sums, dims=("member", "lead_time", "region", "sum"),
                         coords={"lead_time": f["lead_time"], "region": weights["region"]})
    weight = total.isel(sum=1)
    return np.sqrt(total.isel(sum=0) / weight.where(weight != 0)).min("member")


# -- the score set from the fields ---------------------------------------------------------------------
def channel_scores(f: xr.DataArray, y: xr.DataArray, dims, regions, events=None, twcrps_threshold=None,
                   climate_sample=None, control: int | None = None, group: str | None = None,
                   rank_reference_members: int = 1024) -> dict:
    """The score set of :func:`forecast.verify.scores.score_ensemble` for one channel (without the maps):
    every member-reducing step in one pass per chunk (:func:`score_fields`), then one weighted reduction
    for all the area means. ``events`` as in :func:`score_fields` (``None``: no climate scores, and
    ``climate_sample`` and ``twcrps_threshold`` are ignored); the grouped design's rank reference is
    left out above ``rank_reference_members`` members (its quadrature grows with N)."""
    from forecast.verify._probability import _bin_edges, reliability_diagram
    from forecast.verify._ranks import rank_counts

    dims = list(dims)
    m = f.sizes["member"]
    names = list(events or {})
    fields = score_fields(f, y, events, twcrps_threshold if names else None, climate_sample if names else None,
                          control, group)

    def field(k):
        return fields.isel(field=k, drop=True)

    known = y.notnull()
    fair, error, variance, valid = field(FAIR), field(MEAN_ERROR), field(VARIANCE), field(VALID)
    predicted = (variance * (valid + 1) / valid).where(known)
    squared = error ** 2
    means = {"crps": fair, "crps_standard": field(STANDARD), "mse": squared, "bias": error,
             "spread": variance.where(known), "predicted": predicted, "skill": squared.where(predicted.notnull()),
             "outlier_fraction": field(OUTSIDE)}
    if control is not None:
        means["control"] = field(CONTROL_ERROR)
    base_probability = len(FIELDS) + len(SIGMA_LEVELS)
    if names:
        means["twcrps"] = field(TWCRPS)
        means["climate_crps"] = field(CLIMATE_CRPS).where(fair.notnull())
        for k, e in enumerate(names):
            means[f"brier_{e}"] = (field(base_probability + k) - field(base_probability + len(names) + k)) ** 2
    if group is not None:
        predicted_grouped = field(PREDICTED_GROUPED).where(known)
        means.update(within=field(WITHIN).where(known), between=field(BETWEEN).where(known),
                     predicted_grouped=predicted_grouped, skill_grouped=squared.where(predicted_grouped.notnull()))
    stacked = xr.concat(list(means.values()), dim=xr.DataArray(list(means), dims="quantity", name="quantity"))
    mean = reduce_mean(stacked, dims, regions)
    mean = {name: mean.sel(quantity=name, drop=True) for name in means}

    outlier = mean["outlier_fraction"]
    outlier.attrs["reliable_value"] = 2.0 / (m + 1)
    sigma = fields.isel(field=slice(len(FIELDS), base_probability)).rename(field="k")
    sigma = sigma.assign_coords(k=np.asarray(SIGMA_LEVELS))
    scores = {
        "crps": mean["crps"],
        "crps_standard": mean["crps_standard"],
        "ensemble_mean_rmse": np.sqrt(mean["mse"]),
        "ensemble_mean_bias": mean["bias"],
        "spread": np.sqrt(mean["spread"]),
        "spread_skill_ratio": np.sqrt(mean["predicted"]) / np.sqrt(mean["skill"]),
        "best_member_rmse": best_member_rmse(f, y, dims, regions),
        "outlier_fraction": outlier,
        "rank_histogram": rank_counts(field(RANK).astype(np.int32), m, dims, regions),
        "sigma_exceedance_fraction": reduce_mean(sigma, dims) / m,
    }
    if control is not None:
        scores["control_rmse"] = np.sqrt(mean["control"])
    if names:
        event_dim = xr.DataArray(names, dims="event", name="event")
        scores["crps_skill_score"] = 1.0 - mean["crps"] / mean["climate_crps"]
        scores["twcrps_above_q90"] = mean["twcrps"]
        scores["brier_score"] = xr.concat([mean[f"brier_{e}"] for e in names], dim=event_dim)
        edges = _bin_edges(10)
        diagrams = [reliability_diagram(field(base_probability + k), field(base_probability + len(names) + k), edges,
                                        dims) for k in range(len(names))]
        for key in ("forecast_probability", "observed_frequency", "count"):
            scores[f"reliability_{key}"] = xr.concat([d[key] for d in diagrams], dim=event_dim)
    scores["crps_by_init_time"] = reduce_mean(fair, [d for d in dims if d != "init_time"])
    if group is not None:
        within, between = mean["within"], mean["between"]
        ratio, sizes = (between / within).clip(min=0.0), group_sizes(f, "member", group)
        scores.update({"spread_skill_ratio_grouped": np.sqrt(mean["predicted_grouped"]) / np.sqrt(mean["skill_grouped"]),
                       "within_group_variance": within, "between_group_variance": between,
                       "outlier_reliable_value_grouped": reliable_outlier_fraction(ratio, sizes)})
        if sizes.sum() <= rank_reference_members:
            scores["rank_reliable_frequency_grouped"] = reliable_rank_frequency(ratio, sizes)
    return scores

"""The standard score set of one channel from one read and one sort of the members per point.

One task per Dask chunk of the forecast (all members of a tile of points, :func:`channel_sums`) walks
the chunk in blocks of points (:func:`forecast.verify._kernels.over_members`): each block is copied once
into a buffer, read once in member order (moments, members beyond k sigma, event probabilities and
outcomes, the control member's error, the checkpoint (group) sums of the one-way ANOVA, the rank with
:func:`forecast.verify.truth_rank`'s tie rule), sorted once and read once sorted (fair and standard CRPS,
the outlier indicator, twCRPS from the same sort: ``max(x, t)`` keeps the order); the climatological
CRPS sorts each point's climate sample once per chunk. The per-point fields never leave the task: it
adds them into area-weighted sums per start date, lead and region (:func:`_chunk_sums`), so what Dask
carries between tasks is a few hundred numbers per chunk and lead. :func:`channel_scores` turns the sums
into the scores. The best member's RMSE needs each member's own area mean: the same task sums each
member's weighted squared errors (:func:`_member_error_sums`).

The estimators are those of the public functions in :mod:`forecast.verify` (see their docstrings);
``tests/forecast/test_score_fusion.py`` checks every score of ``scores.nc`` against their composition
(counts exactly equal; means the same terms added in another order).
"""

from __future__ import annotations

import math
import zlib

import dask.array as da
import numba
import numpy as np
import xarray as xr

from forecast.verify import _kernels
from forecast.verify._common import weights_for
from forecast.verify._grouped import group_labels, group_sizes, reliable_outlier_fraction, reliable_rank_frequency

SIGMA_LEVELS = (1.0, 2.0, 3.0)
# one number per point each; then the counts beyond k sigma (per level), event probabilities and outcomes (per event)
FIELDS = ("crps_fair", "crps_standard", "mean_error", "variance", "valid_members", "outside", "rank", "twcrps_fair",
          "climate_crps_fair", "control_error", "within_group_variance", "between_group_variance",
          "predicted_grouped")
(FAIR, STANDARD, MEAN_ERROR, VARIANCE, VALID, OUTSIDE, RANK, TWCRPS, CLIMATE_CRPS, CONTROL_ERROR, WITHIN, BETWEEN,
 PREDICTED_GROUPED) = range(len(FIELDS))


# -- row kernels -----------------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True, fastmath=_kernels.REASSOCIATE)
def _member_order_rows(x, y, thresholds, above, levels, control, group, n_groups, out):
    """Moments, counts beyond ``levels`` sigma, event probabilities/outcomes, control error and the
    one-way ANOVA per row of members in member order, in three passes over the row (float64 sums,
    reassociated so they vectorise: the xarray reductions of :mod:`forecast.verify._moments` and
    :mod:`forecast.verify._grouped` add the same terms in member order)."""
    m = x.shape[1]
    n_levels = levels.shape[0]
    n_events = thresholds.shape[1]
    base_sigma = len(FIELDS)
    base_probability = base_sigma + n_levels
    base_outcome = base_probability + n_events
    ddof = 1 if m > 1 else 0
    grouped = n_groups > 1
    counts = np.zeros(max(n_groups, 1))
    sums = np.zeros(max(n_groups, 1))
    squares = np.zeros(max(n_groups, 1))
    for p in range(x.shape[0]):
        row = x[p]
        o = out[p]
        yy = np.float64(y[p])
        total = 0.0
        valid = 0.0
        for i in range(m):  # pass 1: sums (branch-free, so it vectorises)
            v = np.float64(row[i])
            ok = v == v
            total += v if ok else 0.0
            valid += 1.0 if ok else 0.0
        n = int(valid)
        mean = total / n if n > 0 else np.nan
        q = 0.0
        for i in range(m):  # pass 2: squares
            d = np.float64(row[i]) - mean
            q += d * d if d == d else 0.0
        if grouped:
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
                    e_g = np.float64(v) - sums[group[i]] / counts[group[i]]
                    squares[group[i]] += e_g * e_g
        variance = q / (n - ddof) if n - ddof > 0 else np.nan
        o[MEAN_ERROR] = mean - yy
        o[VARIANCE] = variance
        o[VALID] = n
        if np.isnan(variance):
            for k in range(n_levels):
                o[base_sigma + k] = np.nan
        else:
            std = math.sqrt(variance)
            for k in range(n_levels):  # pass 3 per level: members beyond k sigma (NaN compares false)
                limit = levels[k] * std
                beyond = 0.0
                for i in range(m):
                    beyond += 1.0 if abs(np.float64(row[i]) - mean) > limit else 0.0
                o[base_sigma + k] = beyond
        for e in range(n_events):  # the probabilities come from the sorted rows (_event_sorted_rows)
            t = thresholds[p, e]
            if np.isnan(yy):
                o[base_outcome + e] = np.nan
            else:
                o[base_outcome + e] = 1.0 if ((yy > t) if above[e] else (yy < t)) else 0.0
        if control >= 0:
            d32 = row[control] - y[p]  # in the members' precision, as (x_control - y) ** 2 in xarray
            o[CONTROL_ERROR] = np.float64(d32 * d32)
        if grouped:
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
                o[WITHIN] = within
                o[BETWEEN] = between
                o[PREDICTED_GROUPED] = between * (1.0 + sum_sq_counts / n_total ** 2) + within * (1.0 + 1.0 / n_total)
            else:
                o[WITHIN] = np.nan
                o[BETWEEN] = np.nan
                o[PREDICTED_GROUPED] = np.nan


@numba.njit(nogil=True, cache=True)
def _event_sorted_rows(xs, thresholds, above, first, out):
    """Fraction of the non-NaN members of each sorted row above (``above[e]``) or below each threshold, by
    bisection, into ``out[:, first + e]``; NaN where the threshold or every member is NaN."""
    for p in range(xs.shape[0]):
        row = xs[p]
        n = _kernels._valid_count(row)
        for e in range(thresholds.shape[1]):
            t = thresholds[p, e]
            if n == 0 or np.isnan(t):
                out[p, first + e] = np.nan
                continue
            if above[e]:  # members > t start at the first member > t
                out[p, first + e] = (n - np.searchsorted(row[:n], t, side="right")) / n
            else:  # members < t end before the first member >= t
                out[p, first + e] = np.searchsorted(row[:n], t, side="left") / n


@numba.njit(nogil=True, cache=True)
def _rank_sorted_rows(xs, y, ids, seed, out):
    """:func:`forecast.verify._kernels.rank_rows` from sorted rows (NaN last): the members below the truth
    and those equal to it by bisection, the same tie rule (so the same ranks); -1 where the truth or any
    member is NaN."""
    m = xs.shape[1]
    for p in range(xs.shape[0]):
        row = xs[p]
        yy = y[p]
        if np.isnan(yy) or _kernels._valid_count(row) < m:
            out[p] = -1.0
            continue
        below = np.searchsorted(row, yy, side="left")  # members < y
        lo = np.searchsorted(row, yy, side="right")  # members <= y
        out[p] = below + _kernels.tie_draw(seed, ids[p], lo - below)


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
        a, g = _kernels.crps_terms(row, n, yy)
        out[p] = a / n - g / (n * (n - 1.0))


# -- the block function ----------------------------------------------------------------------------
def _fields_numpy(x, y, *extra, events: int, climate: bool, above, control: int, group, n_groups: int,
                  threads=None):
    """Every per-point field of one chunk: ``x (..., member)``, ``y (...)``; with ``events``, the event
    thresholds ``(..., event)`` and the twCRPS threshold ``(...)``; with ``climate``, the climatological
    sample ``(..., climate_sample)``, sorted along its last axis (NaN last)."""
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

    def sorted_rows(block, y_block, id_block, threshold_block, tw_block, out):
        _kernels.crps_rows(block, y_block, out[:, FAIR], out[:, STANDARD])
        _outside_rows(block, y_block, out[:, OUTSIDE])
        _rank_sorted_rows(block, y_block, id_block, seed, out[:, RANK])
        _event_sorted_rows(block, threshold_block, above, len(FIELDS) + levels.size, out)
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
        sample = np.asarray(extra.pop(0))  # sorted along its last axis, NaN last (channel_sums sorts it once)
        rows = np.arange(int(np.prod(sample.shape[:-1]))).reshape(sample.shape[:-1])
        rows = np.ascontiguousarray(np.broadcast_to(rows, lead)).reshape(-1)
        climate_crps = np.empty(rows.size)
        _climate_crps(sample.reshape(-1, sample.shape[-1]), np.ascontiguousarray(y).reshape(-1), rows, climate_crps)
        out[..., CLIMATE_CRPS] = climate_crps.reshape(lead)
    return out


# -- the best member: per-member area sums, chunk by chunk -------------------------------------------
@numba.njit(nogil=True, cache=True)
def _member_error_sums(x, y, weights, out):
    """``out[m, t, r] += (sum_p w_rp (x_mtp - y_tp)^2, sum_p w_rp)`` over the points ``p`` where the error
    is not NaN: ``x (member, other, lead, points)``, ``y (other, lead, points)``, ``weights (region,
    points)`` (products with the weights by BLAS); the error is squared in the members' precision, as
    ``(x - y) ** 2`` in xarray."""
    n_members, n_other, n_leads, n_points = x.shape
    squares = np.empty(n_points)
    known = np.empty(n_points)
    for m in range(n_members):
        for o in range(n_other):
            for t in range(n_leads):
                for p in range(n_points):
                    d = x[m, o, t, p] - y[o, t, p]
                    good = d == d
                    squares[p] = np.float64(d * d) if good else 0.0
                    known[p] = 1.0 if good else 0.0
                out[m, t, :, 0] += np.dot(weights, squares)
                out[m, t, :, 1] += np.dot(weights, known)


# -- per-chunk sums: every score is a weighted mean (or count) of per-point quantities ---------------------
MEANS = ("crps", "crps_standard", "mse", "bias", "spread", "predicted", "skill", "outlier_fraction", "control", "twcrps",
         "climate_crps", "within", "between", "predicted_grouped", "skill_grouped")  # then one Brier score per event
RELIABILITY_BINS = 10


@numba.njit(nogil=True, cache=True)
def _chunk_sums(fields, y, weights, masks, edges, n_events, members, out):
    """Sums over the points of one chunk, per start date and lead, of every quantity the scores average.

    ``fields (init, lead, points, field)`` from :func:`_fields_numpy`, ``y (init, lead, points)``,
    ``weights (1 + regions, points)`` (row 0: the area weights alone; then area weight x region mask),
    ``masks (regions, points)``. ``out (init, lead, K)`` gets, in this order: for each of :data:`MEANS`
    and the Brier score per event, per region, the weighted sum and the sum of weights over the points
    where the quantity is defined (what ``Weighted.mean(skipna=True)`` divides); the same with the area
    weights for the counts beyond k sigma and the fair CRPS; per region the rank counts (``members + 1``
    bins); per event and probability bin the case count, the sum of weights, of weight x probability
    and of weight x outcome.
    """
    n_init, n_leads, n_points, _ = fields.shape
    n_regions = masks.shape[0]
    n_levels = len(SIGMA_LEVELS)
    n_means = len(MEANS) + n_events
    n_bins = edges.shape[0] - 1
    base_sigma = len(FIELDS)
    base_probability = base_sigma + n_levels
    base_outcome = base_probability + n_events
    o_sigma = n_means * n_regions * 2
    o_init = o_sigma + n_levels * 2
    o_rank = o_init + 2
    o_reliability = o_rank + n_regions * (members + 1)
    q = np.empty(n_means)
    for i in range(n_init):
        for t in range(n_leads):
            acc = out[i, t]
            for p in range(n_points):
                f = fields[i, t, p]
                known = not np.isnan(y[i, t, p])
                error = f[MEAN_ERROR]
                squared = error * error
                variance = f[VARIANCE]
                valid = f[VALID]
                predicted = variance * (valid + 1.0) / valid if (known and valid > 0) else np.nan
                predicted_grouped = f[PREDICTED_GROUPED] if known else np.nan
                q[0] = f[FAIR]
                q[1] = f[STANDARD]
                q[2] = squared
                q[3] = error
                q[4] = variance if known else np.nan
                q[5] = predicted
                q[6] = squared if not np.isnan(predicted) else np.nan
                q[7] = f[OUTSIDE]
                q[8] = f[CONTROL_ERROR]
                q[9] = f[TWCRPS]
                q[10] = f[CLIMATE_CRPS] if not np.isnan(f[FAIR]) else np.nan
                q[11] = f[WITHIN] if known else np.nan
                q[12] = f[BETWEEN] if known else np.nan
                q[13] = predicted_grouped
                q[14] = squared if not np.isnan(predicted_grouped) else np.nan
                for e in range(n_events):
                    d = f[base_probability + e] - f[base_outcome + e]
                    q[len(MEANS) + e] = d * d
                for k in range(n_means):
                    v = q[k]
                    if np.isnan(v):
                        continue
                    for r in range(n_regions):
                        w = weights[1 + r, p]
                        acc[(k * n_regions + r) * 2] += w * v
                        acc[(k * n_regions + r) * 2 + 1] += w
                w = weights[0, p]
                for k in range(n_levels):
                    v = f[base_sigma + k]
                    if not np.isnan(v):
                        acc[o_sigma + 2 * k] += w * v
                        acc[o_sigma + 2 * k + 1] += w
                if not np.isnan(f[FAIR]):
                    acc[o_init] += w * f[FAIR]
                    acc[o_init + 1] += w
                rank = int(f[RANK])
                if rank >= 0:
                    for r in range(n_regions):
                        acc[o_rank + r * (members + 1) + rank] += masks[r, p]
                for e in range(n_events):
                    probability = f[base_probability + e]
                    outcome = f[base_outcome + e]
                    if np.isnan(probability) or np.isnan(outcome):
                        continue
                    b = -1  # left-closed bins, the last one closed (verify._probability._bin_index)
                    for j in range(n_bins + 1):
                        if edges[j] <= probability:
                            b = j
                    if probability == edges[n_bins]:
                        b = n_bins - 1
                    if b < 0 or b > n_bins - 1:
                        continue
                    at = o_reliability + (e * n_bins + b) * 4
                    acc[at] += 1.0
                    acc[at + 1] += w
                    acc[at + 2] += w * probability
                    acc[at + 3] += w * outcome


def _sums_width(n_events: int, n_regions: int, members: int) -> int:
    return ((len(MEANS) + n_events) * n_regions * 2 + len(SIGMA_LEVELS) * 2 + 2 + n_regions * (members + 1)
            + n_events * RELIABILITY_BINS * 4)


def _chunk_block(x, y, thresholds, tw, sample, weights, masks, *, events: int, climate: bool, above, control: int,
                 group, n_groups: int):
    """The sums of one chunk ``x (member, init, lead, lat, lon)``: ``(init, lead, 1, 1, K)``."""
    m, n_init, n_leads, a, b = x.shape
    fields = _fields_numpy(np.moveaxis(x, 0, -1), y, *([np.moveaxis(thresholds, 0, -1), tw] if events else []),
                           *([sample] if climate else []), events=events, climate=climate, above=above,
                           control=control, group=group, n_groups=n_groups, threads=1)
    n_regions = masks.shape[0]
    width = _sums_width(events, n_regions, m)
    out = np.zeros((n_init, n_leads, width + m * n_regions * 2))
    y_points = np.broadcast_to(y, fields.shape[:-1]).reshape(n_init, n_leads, -1)
    weights = np.ascontiguousarray(weights).reshape(-1, a * b)
    _chunk_sums(fields.reshape(n_init, n_leads, a * b, -1), y_points, weights,
                np.ascontiguousarray(masks).reshape(-1, a * b), np.linspace(0.0, 1.0, RELIABILITY_BINS + 1), events, m,
                out)
    x_points = x.reshape(m, n_init, n_leads, a * b)
    region_weights = np.ascontiguousarray(weights[1:])
    for i in range(n_init):  # the best member: each member's weighted squared errors, (lead, member, region, 2)
        members = np.zeros((m, n_leads, n_regions, 2))
        _member_error_sums(x_points[:, i:i + 1], y_points[i:i + 1], region_weights, members)
        out[i, :, width:] = members.transpose(1, 0, 2, 3).reshape(n_leads, -1)
    return out[:, :, None, None, :]


def channel_sums(f: xr.DataArray, y: xr.DataArray, regions, events=None, twcrps_threshold=None,
                 climate_sample=None, control: int | None = None, group: str | None = None) -> xr.DataArray:
    """The per-chunk sums of :func:`_chunk_sums` added over the chunks: ``(init_time, lead_time, sum)``, lazy."""
    order = ("member", "init_time", "lead_time", "lat", "lon")
    f = f.transpose(*order)
    if f.chunks is None:
        f = f.chunk({"member": -1})
    chunks = f.chunksizes

    def like_f(a, **whole):  # the forecast's chunks (Dask would otherwise split the member chunks to match)
        return xr.DataArray(a).chunk({**{d: chunks[d] for d in a.dims if d in chunks}, **whole}).data

    y = y.transpose(*order[1:])
    names = list(events or {})
    plane = y.isel(init_time=0, lead_time=0, drop=True)
    if names:
        thresholds = xr.concat([events[e][0] for e in names], dim="event").broadcast_like(plane).transpose("event", "lat", "lon")
        tw = twcrps_threshold.broadcast_like(plane).transpose("lat", "lon")
    else:
        thresholds = xr.DataArray(np.zeros((0,) + plane.shape), dims=("event", "lat", "lon"))
        tw = xr.full_like(plane, np.nan, dtype=np.float64)
    if names and climate_sample is not None:
        sample = climate_sample.broadcast_like(plane).transpose("lat", "lon", "climate_sample")
    else:
        sample = xr.DataArray(np.zeros(plane.shape + (1,)), dims=("lat", "lon", "climate_sample"))
    area = weights_for(plane, ["lat", "lon"])
    region_weights = weights_for(plane, ["lat", "lon"], regions).broadcast_like(plane).transpose("region", "lat", "lon")
    weights = xr.concat([area.broadcast_like(plane).expand_dims(region=["_area"]), region_weights], dim="region")
    masks = xr.concat([r.mask(plane["lat"], plane["lon"]).broadcast_like(plane) for r in regions], dim="region")
    masks = masks.transpose("region", "lat", "lon")
    labels, n_groups = np.zeros(f.sizes["member"], dtype=np.int64), 0
    if group is not None:
        _, labels = np.unique(group_labels(f, "member", group), return_inverse=True)
        n_groups = int(labels.max()) + 1
    width = _sums_width(len(names), len(regions), f.sizes["member"]) + f.sizes["member"] * len(regions) * 2
    sums = da.blockwise(
        _chunk_block, "itabk", f.data, "mitab", like_f(y), "itab", like_f(thresholds, event=-1), "eab", like_f(tw), "ab",
        like_f(sample, climate_sample=-1).map_blocks(np.sort, axis=-1), "abs", like_f(weights.astype(np.float64), region=-1), "wab",
        like_f(masks.astype(np.float64), region=-1), "rab",
        new_axes={"k": width}, adjust_chunks={"a": 1, "b": 1}, concatenate=True, dtype=np.float64,
        meta=np.empty((0,) * 5), events=len(names), climate=bool(names) and climate_sample is not None,
        above=[events[e][1] for e in names], control=-1 if control is None else int(control), group=labels,
        n_groups=n_groups)
    return xr.DataArray(sums.sum(axis=(2, 3)), dims=("init_time", "lead_time", "sum"),
                        coords={"init_time": f["init_time"], "lead_time": f["lead_time"]})


def channel_scores(f: xr.DataArray, y: xr.DataArray, dims, regions, events=None, twcrps_threshold=None,
                   climate_sample=None, control: int | None = None, group: str | None = None,
                   rank_reference_members: int = 1024) -> dict:
    """The score set of :func:`forecast.verify.scores.score_ensemble` for one channel (without the maps),
    over ``dims = (init_time, lat, lon)`` per region: every member-reducing step in one pass per chunk,
    reduced in the chunk to sums (:func:`channel_sums`). ``events``: ``{name: (threshold, above)}``
    (``None``: no climate scores); ``twcrps_threshold``: the upper-tail twCRPS threshold;
    ``climate_sample``: a climatological ensemble along ``climate_sample`` for the CRPS skill score;
    ``control``: the control member's index; ``group``: the coordinate naming each member's checkpoint;
    the grouped design's rank reference is left out above ``rank_reference_members`` members."""
    from forecast.verify._common import _as_regions

    if set(dims) != {"init_time", "lat", "lon"}:
        raise ValueError(f"the fused score set averages over init_time, lat and lon, not {list(dims)}")
    regions = _as_regions(regions)
    names = list(events or {})
    m = f.sizes["member"]
    totals = channel_sums(f, y, regions, events, twcrps_threshold, climate_sample, control, group)
    total = totals.sum("init_time")
    region = xr.DataArray([r.name for r in regions], dims="region", name="region")
    n_regions, n_means = len(regions), len(MEANS) + len(names)

    def ratio(start, count, shape, data, names_dims, coords):
        block = data.isel(sum=slice(start, start + count)).data.reshape(data.shape[:-1] + shape)
        return xr.DataArray(block, dims=data.dims[:-1] + names_dims, coords={**dict(data.coords), **coords})

    def weighted_mean(parts):  # part 0: the weighted sum; part 1: the sum of weights (NaN where it is 0)
        return parts.isel(part=0) / parts.isel(part=1).where(parts.isel(part=1) != 0)

    means = ratio(0, n_means * n_regions * 2, (n_means, n_regions, 2), total, ("quantity", "region", "part"),
                  {"region": region})
    means = weighted_mean(means)
    mean = {name: means.isel(quantity=k, drop=True) for k, name in enumerate(list(MEANS) + [f"brier_{e}" for e in names])}
    offset = n_means * n_regions * 2
    sigma = ratio(offset, len(SIGMA_LEVELS) * 2, (len(SIGMA_LEVELS), 2), total, ("k", "part"),
                  {"k": np.asarray(SIGMA_LEVELS)})
    offset += len(SIGMA_LEVELS) * 2
    by_init = totals.isel(sum=offset) / totals.isel(sum=offset + 1).where(totals.isel(sum=offset + 1) != 0)
    offset += 2
    ranks = ratio(offset, n_regions * (m + 1), (n_regions, m + 1), total, ("region", "rank"),
                  {"region": region, "rank": np.arange(m + 1)})
    offset += n_regions * (m + 1)
    errors = ratio(_sums_width(len(names), n_regions, m), m * n_regions * 2, (m, n_regions, 2), total,
                   ("member", "region", "part"), {"region": region})
    best = np.sqrt(weighted_mean(errors)).min("member")

    outlier = mean["outlier_fraction"]
    outlier.attrs["reliable_value"] = 2.0 / (m + 1)
    scores = {
        "crps": mean["crps"],
        "crps_standard": mean["crps_standard"],
        "ensemble_mean_rmse": np.sqrt(mean["mse"]),
        "ensemble_mean_bias": mean["bias"],
        "spread": np.sqrt(mean["spread"]),
        "spread_skill_ratio": np.sqrt(mean["predicted"]) / np.sqrt(mean["skill"]),
        "best_member_rmse": best,
        "outlier_fraction": outlier,
        "rank_histogram": ranks.transpose("region", "lead_time", "rank").astype(np.int64),
        "sigma_exceedance_fraction": weighted_mean(sigma) / m,
    }
    if control is not None:
        scores["control_rmse"] = np.sqrt(mean["control"])
    if names:
        event_dim = xr.DataArray(names, dims="event", name="event")
        edges = np.linspace(0.0, 1.0, RELIABILITY_BINS + 1)
        bins = ratio(offset, len(names) * RELIABILITY_BINS * 4, (len(names), RELIABILITY_BINS, 4), total,
                     ("event", "bin", "part"), {"event": event_dim, "bin": (edges[1:] + edges[:-1]) / 2})
        weight = bins.isel(part=1).where(bins.isel(part=1) > 0)
        scores["crps_skill_score"] = 1.0 - mean["crps"] / mean["climate_crps"]
        scores["twcrps_above_q90"] = mean["twcrps"]
        scores["brier_score"] = xr.concat([mean[f"brier_{e}"] for e in names], dim=event_dim)
        scores["reliability_forecast_probability"] = (bins.isel(part=2) / weight).transpose("event", "lead_time", "bin")
        scores["reliability_observed_frequency"] = (bins.isel(part=3) / weight).transpose("event", "lead_time", "bin")
        scores["reliability_count"] = bins.isel(part=0).astype(np.int64).transpose("event", "lead_time", "bin")
    scores["crps_by_init_time"] = by_init
    if group is not None:
        within, between = mean["within"], mean["between"]
        ratio_groups, sizes = (between / within).clip(min=0.0), group_sizes(f, "member", group)
        scores.update({"spread_skill_ratio_grouped": np.sqrt(mean["predicted_grouped"]) / np.sqrt(mean["skill_grouped"]),
                       "within_group_variance": within, "between_group_variance": between,
                       "outlier_reliable_value_grouped": reliable_outlier_fraction(ratio_groups, sizes)})
        if sizes.sum() <= rank_reference_members:
            scores["rank_reliable_frequency_grouped"] = reliable_rank_frequency(ratio_groups, sizes)
    return scores

"""Per-point kernels over the member axis, run block by block so working memory stays bounded.

The engine (:func:`over_members`) takes an array whose last axis holds the members (any strides: a
member-major store chunk arrives as a transposed view) and walks it in blocks of points. Each block is
copied into a small contiguous ``(points, members)`` buffer owned by one thread (a transposing
copy, a slab of members at a time, when the members are strided), optionally transformed and sorted in place
(``numpy.sort``, which dispatches to a SIMD sort; float32 is sorted as int32 order keys, which NumPy
sorts faster), and handed to a compiled row kernel that reads each row once and writes a few numbers per
point. Working memory is one buffer per thread (about ``block_bytes``, or ``MIN_STRIDED_POINTS`` rows
when the members are strided) plus the outputs, whatever the size of the input; accumulation is in
float64. Numba kernels release the GIL, so blocks run on several threads.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from forecast.machine import available_cores

BLOCK_BYTES = 1 << 20
# a strided (member-major) block reads at least this many points (1 KB of float32) from each member row;
# shorter runs per row were slower at M = 7424 (run ``bench/verify.py --layout member-first --members 7424``
# with 32 here, the value before, to compare)
MIN_STRIDED_POINTS = 256
# let LLVM reorder (vectorise) float64 sums; no 'nnan'/'ninf', so NaN tests stay
REASSOCIATE = {"reassoc", "contract", "arcp", "nsz"}


# -- compiled row kernels ---------------------------------------------------------------------------
@numba.njit(nogil=True, cache=True)
def _gather(src, dst):
    """Copy ``src`` (points, members; any strides) into contiguous ``dst``, a slab of 8 members at a time:
    each point's 8 values land in one half cache line of ``dst`` while 8 member rows of ``src`` stream
    (the fixed inner trip count lets the compiler unroll it; ``python bench/verify.py --layout
    member-first`` shows the effect on CRPS throughput)."""
    n, m = src.shape
    j0 = 0
    while j0 + 8 <= m:
        for i in range(n):
            for k in range(8):
                dst[i, j0 + k] = src[i, j0 + k]
        j0 += 8
    for i in range(n):
        for j in range(j0, m):
            dst[i, j] = src[i, j]


@numba.njit(nogil=True, cache=True, inline="always")
def _flip_negative(b):
    """float32 bits (as int32) <-> an int32 with the float order: negative floats get their magnitude
    bits flipped. Its own inverse."""
    return b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))


@numba.njit(nogil=True, cache=True)
def _encode(keys):
    """float32 bits -> int32 order keys, in place (``keys``: a flat int32 view); NaN (either sign)
    becomes the largest key, so it sorts last and decodes to a NaN. Branch-free, so it vectorises."""
    for i in range(keys.shape[0]):
        b = keys[i]
        keys[i] = _flip_negative(b) if (b & np.int32(0x7FFFFFFF)) <= np.int32(0x7F800000) else np.int32(0x7FFFFFFF)


@numba.njit(nogil=True, cache=True)
def _decode(keys):
    """int32 order keys -> float32 bits, in place."""
    for i in range(keys.shape[0]):
        keys[i] = _flip_negative(keys[i])


@numba.njit(nogil=True, cache=True)
def _valid_count(row):
    """Members that are not NaN in a sorted row (NumPy sorts NaN last)."""
    n = row.shape[0]
    while n > 0 and np.isnan(row[n - 1]):
        n -= 1
    return n


@numba.njit(nogil=True, cache=True, fastmath=REASSOCIATE, inline="always")
def crps_terms(row, n, yy):
    """``(A, G)`` of :func:`crps_rows` for the first ``n`` (sorted, non-NaN) values of ``row`` against ``yy``."""
    a = 0.0
    s1 = 0.0
    s0 = 0.0
    rank = 0.0  # a float counter, not (i + 1): AVX2 has no vector int64 -> float64, so the loop would stay scalar
    for i in range(n):
        d = np.float64(row[i]) - yy
        rank += 1.0
        a += abs(d)
        s1 += rank * d
        s0 += d
    return a, 2.0 * s1 - (n + 1) * s0


@numba.njit(nogil=True, cache=True, fastmath=REASSOCIATE)
def crps_rows(xs, y, fair, standard):
    """Fair and standard CRPS per row of sorted members ``xs`` against ``y``.

    With ``d_(i) = x_(i) - y`` (i = 1..n over the n non-NaN members):
    ``A = sum |d_i|`` and ``G = sum_i (2 i - n - 1) d_(i) = sum_{i<j} |x_i - x_j|`` (the centring on
    ``y`` leaves G unchanged because the weights sum to zero). Standard: ``A/n - G/n^2``; fair:
    ``A/n - G/(n (n - 1))``; the fair CRPS of one member is undefined (NaN: it needs two members to
    estimate ``E|X - X'|``), its standard CRPS is the absolute error.
    """
    for p in range(xs.shape[0]):
        row = xs[p]
        n = _valid_count(row)
        yy = np.float64(y[p])
        if n == 0 or np.isnan(yy):
            fair[p] = np.nan
            standard[p] = np.nan
            continue
        a, g = crps_terms(row, n, yy)
        standard[p] = a / n - g / (n * n)
        fair[p] = a / n - g / (n * (n - 1.0)) if n > 1 else np.nan


@numba.njit(nogil=True, cache=True)
def quantile_rows(xs, q, out):
    """Quantiles ``q`` of each sorted row over its non-NaN members, linear interpolation between order
    statistics at position ``q (n - 1)`` (Hyndman & Fan type 7, NumPy's default)."""
    for p in range(xs.shape[0]):
        row = xs[p]
        n = _valid_count(row)
        for k in range(q.shape[0]):
            if n == 0:
                out[p, k] = np.nan
                continue
            pos = q[k] * (n - 1)
            lo = int(math.floor(pos))
            hi = min(lo + 1, n - 1)
            frac = pos - lo
            out[p, k] = np.float64(row[lo]) + frac * (np.float64(row[hi]) - np.float64(row[lo]))


@numba.njit(nogil=True, cache=True)
def _mix(h):
    """splitmix64 finaliser: a well-spread 64-bit hash of ``h``."""
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


@numba.njit(nogil=True, cache=True)
def tie_draw(seed, row_id, ties):
    """How many of ``ties`` members equal to the truth count as below it: uniform on ``0..ties``, from a
    hash of ``seed`` and the row's id (the same row gets the same draw however the data is chunked)."""
    if ties == 0:
        return 0
    u = _mix(np.uint64(seed) + np.uint64(row_id) * np.uint64(0x9E3779B97F4A7C15))
    return int(u % np.uint64(ties + 1))


@numba.njit(nogil=True, cache=True)
def rank_rows(x, y, ids, seed, rank):
    """Rank of ``y`` among the members of each (unsorted) row: the number of members below it, with
    ties broken uniformly at random from a hash of ``seed`` and the row's id; -1 where ``y`` or any
    member is NaN."""
    m = x.shape[1]
    for p in range(x.shape[0]):
        yy = y[p]
        below = 0
        ties = 0
        bad = np.isnan(yy)
        for i in range(m):
            v = x[p, i]
            if v < yy:
                below += 1
            elif v == yy:
                ties += 1
            elif np.isnan(v):
                bad = True
        if bad:
            rank[p] = -1
            continue
        rank[p] = below + tie_draw(seed, ids[p], ties)


@numba.njit(nogil=True, cache=True)
def efi_rows(x, climate, probability, out):
    """Extreme forecast index per row: the mean over non-NaN members of ``(2/pi) asin(2 P(x_i) - 1)``,
    where ``P`` is the model-climate CDF, piecewise linear through ``(climate[p, k], probability[k])``
    and clamped to the first/last probability outside the climate's range."""
    nq = probability.shape[0]
    for p in range(x.shape[0]):
        total = 0.0
        n = 0
        clim = climate[p]
        if np.isnan(clim[0]) or np.isnan(clim[nq - 1]):
            out[p] = np.nan
            continue
        for i in range(x.shape[1]):
            v = x[p, i]
            if np.isnan(v):
                continue
            if v <= clim[0]:
                cdf = probability[0]
            elif v >= clim[nq - 1]:
                cdf = probability[nq - 1]
            else:
                lo, hi = 0, nq - 1  # clim[lo] < v < clim[hi]
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if clim[mid] < v:
                        lo = mid
                    else:
                        hi = mid
                width = clim[hi] - clim[lo]
                cdf = probability[hi] if width <= 0 else probability[lo] + (v - clim[lo]) / width * (probability[hi] - probability[lo])
            total += math.asin(min(1.0, max(-1.0, 2.0 * cdf - 1.0)))
            n += 1
        out[p] = total * 2.0 / math.pi / n if n else np.nan


# -- the block engine -------------------------------------------------------------------------------
def _points_view(x: np.ndarray):
    """A view ``(outer..., points, members)`` of ``x`` (members last) that merges as many trailing
    leading axes as memory allows into one ``points`` axis (no copy)."""
    lead = x.shape[:-1]
    ones = tuple(i for i, n in enumerate(lead) if n == 1)
    squeezed = np.squeeze(x, axis=ones) if ones else x
    lead = squeezed.shape[:-1]
    if not lead:
        return squeezed[None, :]
    start = len(lead) - 1
    while start > 0 and squeezed.strides[start - 1] == squeezed.strides[start] * lead[start]:
        start -= 1
    points = int(np.prod(lead[start:]))
    shape = lead[:start] + (points, squeezed.shape[-1])
    strides = squeezed.strides[:start] + (squeezed.strides[len(lead) - 1], squeezed.strides[-1])
    return np.lib.stride_tricks.as_strided(squeezed, shape=shape, strides=strides, writeable=False)


def over_members(x, row_kernel, point_args=(), outputs=((), ), sort=False, transform=None, kernel_args=(),
                 threads: int | None = None, block_bytes: int = BLOCK_BYTES, dtype=None, before_sort=None):
    """Apply ``row_kernel(block, *point_arg_blocks, *kernel_args, *output_blocks)`` over blocks of points.

    Parameters
    ----------
    x : numpy.ndarray
        ``(..., member)``, any strides; float32 stays float32, anything else becomes float64.
    point_args : sequence of numpy.ndarray or (numpy.ndarray, int)
        Per-point inputs broadcastable to ``x.shape[:-1]``; a pair gives the number of trailing axes
        the array has beyond the points (per-point vectors such as climate quantiles).
    outputs : sequence of tuple
        Trailing shape of each float64 output (``()`` for one number per point).
    sort : bool
        Sort each row (NaN last) before the kernel sees it.
    transform : callable, optional
        ``transform(block, *point_arg_blocks)`` edits the block in place before sorting.
    threads : int, optional
        Worker threads (default: the available cores).
    dtype : numpy dtype, optional
        Buffer type (default float32 for float32 input, else float64); the copy into the buffer casts.
    before_sort : callable, optional
        ``before_sort(block, *point_arg_blocks, *output_blocks)`` reads the rows in member order (after
        ``transform``, before sorting): scores that need to know which member is which share the sort's copy.
    """
    m = x.shape[-1]
    shapes = [x.shape[:-1]]
    for a in point_args:
        a, trailing = a if isinstance(a, tuple) else (a, 0)
        shape = np.shape(a)
        shapes.append(shape[:len(shape) - trailing])
    lead = tuple(np.broadcast_shapes(*shapes))
    if lead != x.shape[:-1]:
        x = np.broadcast_to(x, lead + (m,))
    dtype = np.dtype(dtype or (np.float32 if x.dtype == np.float32 else np.float64))
    if x.size == 0:
        return tuple(np.full(lead + tuple(shape), np.nan) for shape in outputs)
    view = _points_view(x)
    outer, n_points = view.shape[:-2], view.shape[-2]
    args = []
    for a in point_args:
        a, trailing = a if isinstance(a, tuple) else (a, 0)
        a = np.asarray(a)
        tail = a.shape[a.ndim - trailing:] if trailing else ()
        a = np.broadcast_to(a, lead + tail)
        args.append(np.ascontiguousarray(a).reshape(outer + (n_points,) + tail))
    results = [np.empty(outer + (n_points,) + tuple(shape), dtype=np.float64) for shape in outputs]

    strided = view.strides[-1] != view.itemsize
    as_keys = dtype == np.float32  # NumPy's SIMD sort is faster on int32 than on float32 (which moves NaNs aside first)
    per_block = max(1, block_bytes // max(1, m * view.itemsize))
    if strided:
        per_block = max(per_block, MIN_STRIDED_POINTS)
    jobs = [(index, start, min(start + per_block, n_points))
            for index in np.ndindex(*outer) for start in range(0, n_points, per_block)]
    threads = max(1, min(threads or available_cores(), len(jobs)))

    def run(my_jobs):
        buffer = np.empty((min(per_block, n_points), m), dtype=dtype)
        for index, start, stop in my_jobs:
            src = view[index][start:stop]
            block = buffer[:stop - start]
            if strided:
                _gather(src, block)
            else:
                np.copyto(block, src)
            blocks = [a[index][start:stop] for a in args]
            if transform is not None:
                transform(block, *blocks)
            if before_sort is not None:
                before_sort(block, *blocks, *(r[index][start:stop] for r in results))
            if sort and as_keys:
                keys = block.view(np.int32)
                _encode(keys.reshape(-1))
                keys.sort(axis=-1)
                _decode(keys.reshape(-1))
            elif sort:
                block.sort(axis=-1)
            row_kernel(block, *blocks, *kernel_args, *(r[index][start:stop] for r in results))

    if threads == 1:
        run(jobs)
    else:
        share = -(-len(jobs) // threads)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, [jobs[k:k + share] for k in range(0, len(jobs), share)]))
    return tuple(r.reshape(lead + tuple(shape)) for r, shape in zip(results, outputs))

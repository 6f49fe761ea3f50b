"""Streaming statistics (ensembles/stats.py) against NumPy on all members at once: any split into batches
and ranks, merged in any order, gives the same moments (to round-off) and exactly the same extremes,
exceedance counts and tail quantiles."""

from __future__ import annotations

import numpy as np
import pytest

from ensembles.stats import EnsembleAccumulator, StatisticsSpec, tail_members_needed

M, LEADS, SHAPE = 41, 2, (3, 4)
SPEC = StatisticsSpec(channels=("z500", "tcwv"), thresholds={"tcwv": (0.0, 1.0)}, quantiles=(0.0, 0.05, 0.1, 0.9, 0.975, 1.0),
                      tail_members=5)


def members(seed: int = 0) -> np.ndarray:
    """``(member, lead, channel, lat, lon)`` float32 with ties (rounded values) and a heavy tail."""
    rng = np.random.default_rng(seed)
    values = rng.standard_t(3, size=(M, LEADS, 2, *SHAPE)).astype(np.float32)
    values[:, :, 1] = np.round(values[:, :, 1], 1)  # ties in the second channel
    return values


def accumulate(values: np.ndarray, bounds) -> EnsembleAccumulator:
    acc = EnsembleAccumulator(SPEC, LEADS, SHAPE)
    for a, b in zip(bounds[:-1], bounds[1:]):
        for lead in range(LEADS):
            acc.update(lead, values[a:b, lead])
    return acc


def split(values, cuts) -> list[EnsembleAccumulator]:
    """One accumulator per rank, each fed its members in batches of 3."""
    parts = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        parts.append(accumulate(values, list(range(a, b, 3)) + [b]))
    return parts


def test_any_split_and_merge_order_matches_numpy_on_all_members():
    values = members()
    reference = values.astype(np.float64)
    results = []
    for cuts, order in (([0, M], [0]), ([0, 7, 20, M], [0, 1, 2]), ([0, 7, 20, M], [2, 0, 1]), ([0, 1, 40, M], [1, 2, 0])):
        parts = split(values, cuts)
        merged = parts[order[0]]
        for k in order[1:]:
            merged.merge(parts[k])
        results.append(merged.result())
    for out in results:
        np.testing.assert_allclose(out["mean"], reference.mean(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(out["std"], reference.std(axis=0, ddof=1), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out["min"], values.min(axis=0))
        np.testing.assert_array_equal(out["max"], values.max(axis=0))
        above = np.stack([(values[:, :, 1] > t).mean(axis=0) for t in (0.0, 1.0)], axis=1).astype(np.float32)
        np.testing.assert_array_equal(out["exceedance_tcwv"], above)
        # all splits agree bit for bit on the order statistics
        np.testing.assert_array_equal(out["quantile"], results[0]["quantile"])


def test_tail_quantiles_are_exact_order_statistics():
    values = members(1)
    out = accumulate(values, [0, 10, 11, M]).result()["quantile"]  # (lead, channel, quantile, lat, lon)
    ordered = np.sort(values, axis=0)
    for j, q in enumerate(SPEC.quantiles):
        h = (M - 1) * q
        low, high = int(np.floor(h)), int(np.ceil(h))
        expected = ordered[low] + np.float32(h - low) * (ordered[high] - ordered[low])
        np.testing.assert_array_equal(out[:, :, j], expected)
        np.testing.assert_allclose(out[:, :, j], np.quantile(values, q, axis=0), rtol=1e-6, atol=1e-6)


def test_quantiles_beyond_the_tails_are_refused():
    # with 5 tail members of 41, exact quantiles reach (5 - 1) / 40 = 0.1 from either end
    assert tail_members_needed(0.1, M) == 5 and tail_members_needed(0.125, M) == 6
    spec = StatisticsSpec(channels=("z500",), quantiles=(0.125,), tail_members=5)
    with pytest.raises(ValueError, match="tail_members >= 6"):
        spec.check_members(M)


def test_needed_tail_members_closed_forms():
    assert tail_members_needed(0.5, 101) == 51  # the median of 101 is order statistic 50 from either end
    assert tail_members_needed(0.0, 7424) == 1 and tail_members_needed(1.0, 7424) == 1
    # the 1% quantile of 7,424 members interpolates order statistics 74 and 75: 76 tail members, not 75
    assert tail_members_needed(0.01, 7424) == 76 and tail_members_needed(74 / 7423, 7424) == 75


def test_persisted_parts_merge_like_live_ones():
    values = members(2)
    a, b = split(values, [0, 17, M])
    restored = EnsembleAccumulator.from_arrays(SPEC, {k: v.copy() for k, v in a.to_arrays().items()})
    restored.merge(b)
    a.merge(b)
    for name, value in a.result().items():
        np.testing.assert_array_equal(restored.result()[name], value)

"""Streaming ensemble statistics: accumulated while members stream, merged exactly across batches and ranks.

Per lead time, channel and grid point an accumulator keeps the member count, mean and sum of squared
deviations (float64, combined with Chan et al.'s parallel update, so any split of the members into
batches and ranks gives the same moments up to round-off), the minimum and maximum, counts of members
above each configured threshold, and the ``tail_members`` largest and smallest values. The tails give
*exact* quantiles (numpy's default linear interpolation between order statistics) for any quantile
whose order statistics lie within them, which for ``M`` members means ``q <= (k - 1) / (M - 1)`` or
``q >= 1 - (k - 1) / (M - 1)``. A 7,424-member ensemble with ``tail_members=76`` thus has exact 1% and
99% quantiles without keeping its members. :func:`finalise_statistics` merges the per-block parts a store
holds, then removes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from forecast.errors import InputError


@dataclass(frozen=True)
class StatisticsSpec:
    """Which statistics to keep. ``thresholds`` are in physical units per channel."""

    channels: tuple
    thresholds: dict = field(default_factory=dict)
    quantiles: tuple = ()
    tail_members: int = 0

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        object.__setattr__(self, "thresholds", {c: tuple(float(t) for t in v) for c, v in self.thresholds.items()})
        unknown = [c for c in self.thresholds if c not in self.channels]
        if unknown:
            raise InputError(f"thresholds given for channel(s) {unknown} that are not among the statistics channels {list(self.channels)}")
        if any(not 0.0 <= q <= 1.0 for q in self.quantiles):
            raise InputError(f"quantiles must lie in [0, 1], got {self.quantiles}")
        if self.tail_members < 0:
            raise InputError(f"tail_members must be non-negative, got {self.tail_members}")

    def check_members(self, members: int) -> None:
        """Refuse quantiles the tails cannot give exactly for an ensemble of ``members``."""
        needed = max((tail_members_needed(q, members) for q in self.quantiles), default=0)
        if needed > self.tail_members:
            raise InputError(f"quantiles {list(self.quantiles)} of {members} members need tail_members >= {needed}, "
                             f"got {self.tail_members}")


def tail_members_needed(q: float, members: int) -> int:
    """How many extreme members the exact ``q`` quantile of ``members`` values needs."""
    h = (members - 1) * q
    return max(min(i + 1, members - i) for i in (math.floor(h), math.ceil(h)))


class EnsembleAccumulator:
    """Statistics of members for one start date: arrays ``(lead, channel, lat, lon)``."""

    def __init__(self, spec: StatisticsSpec, n_leads: int, shape: tuple[int, int]):
        self.spec = spec
        c = len(spec.channels)
        self.count = 0
        self.mean = np.zeros((n_leads, c, *shape))
        self.m2 = np.zeros((n_leads, c, *shape))
        self.min = np.full((n_leads, c, *shape), np.inf, dtype=np.float32)
        self.max = np.full((n_leads, c, *shape), -np.inf, dtype=np.float32)
        self.exceed = {name: np.zeros((n_leads, len(t), *shape), dtype=np.int64) for name, t in spec.thresholds.items()}
        k = spec.tail_members
        self.top = np.full((n_leads, c, k, *shape), -np.inf, dtype=np.float32)  # largest, any order
        self.bottom = np.full((n_leads, c, k, *shape), np.inf, dtype=np.float32)  # smallest, any order
        self._counts = np.zeros(n_leads, dtype=np.int64)

    def update(self, lead: int, values: np.ndarray, threads: int = 1) -> None:
        """Add a batch ``(member, channel, lat, lon)`` (the spec's channels, in order) at one lead.

        ``threads > 1`` updates the moments of chunks of channels in parallel threads (a HENS-size batch
        is gigabytes; numpy releases the GIL); each value's arithmetic is unchanged, so the result is
        bit-identical to a single-threaded update.
        """
        values = np.asarray(values, dtype=np.float32)
        n = values.shape[0]
        if n == 0:
            return
        channels = values.shape[1]
        parts = max(1, min(channels, threads))
        if parts > 1:
            from concurrent.futures import ThreadPoolExecutor

            bounds = np.linspace(0, channels, parts + 1).astype(int)
            with ThreadPoolExecutor(parts, thread_name_prefix="statistics") as pool:
                list(pool.map(lambda a, b: self._update_moments(lead, values, slice(a, b)), bounds[:-1], bounds[1:]))
        else:
            self._update_moments(lead, values, slice(None))
        self._counts[lead] += n
        for name, thresholds in self.spec.thresholds.items():
            k = self.spec.channels.index(name)
            for j, t in enumerate(thresholds):
                self.exceed[name][lead, j] += (values[:, k] > t).sum(axis=0)
        if self.spec.tail_members:
            self._keep_tails(lead, values)

    def _update_moments(self, lead: int, values: np.ndarray, chunk: slice) -> None:
        """Mean, squared deviations (Chan et al.), minimum and maximum of the channels ``chunk``."""
        n = values.shape[0]
        batch = values[:, chunk].astype(np.float64)
        batch_mean = batch.mean(axis=0)
        batch_m2 = ((batch - batch_mean) ** 2).sum(axis=0)
        na = self._counts[lead]
        total = na + n
        delta = batch_mean - self.mean[lead, chunk]
        self.mean[lead, chunk] += delta * (n / total)
        self.m2[lead, chunk] += batch_m2 + delta**2 * (na * n / total)
        np.minimum(self.min[lead, chunk], values[:, chunk].min(axis=0), out=self.min[lead, chunk])
        np.maximum(self.max[lead, chunk], values[:, chunk].max(axis=0), out=self.max[lead, chunk])

    def _keep_tails(self, lead: int, values: np.ndarray) -> None:
        k = self.spec.tail_members
        stacked = np.concatenate([self.top[lead], values.transpose(1, 0, 2, 3)], axis=1)
        self.top[lead] = np.partition(stacked, stacked.shape[1] - k, axis=1)[:, -k:]
        stacked = np.concatenate([self.bottom[lead], values.transpose(1, 0, 2, 3)], axis=1)
        self.bottom[lead] = np.partition(stacked, k - 1, axis=1)[:, :k]

    def merge(self, other: "EnsembleAccumulator") -> None:
        """Fold ``other`` (members disjoint from this one's) into this accumulator, exactly."""
        for lead in range(len(self._counts)):
            na, nb = self._counts[lead], other._counts[lead]
            if nb == 0:
                continue
            total = na + nb
            delta = other.mean[lead] - self.mean[lead]
            self.mean[lead] += delta * (nb / total)
            self.m2[lead] += other.m2[lead] + delta**2 * (na * nb / total)
            self._counts[lead] = total
        np.minimum(self.min, other.min, out=self.min)
        np.maximum(self.max, other.max, out=self.max)
        for name in self.exceed:
            self.exceed[name] += other.exceed[name]
        k = self.spec.tail_members
        if k:
            stacked = np.concatenate([self.top, other.top], axis=2)
            self.top = np.partition(stacked, stacked.shape[2] - k, axis=2)[:, :, -k:]
            stacked = np.concatenate([self.bottom, other.bottom], axis=2)
            self.bottom = np.partition(stacked, k - 1, axis=2)[:, :, :k]

    # -- persistence ------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The accumulator's state as named arrays (stored per rank in the store)."""
        arrays = {"counts": self._counts, "mean": self.mean, "m2": self.m2, "min": self.min, "max": self.max,
                  "top": self.top, "bottom": self.bottom}
        arrays.update({f"exceed_{name}": v for name, v in self.exceed.items()})
        return arrays

    @classmethod
    def from_arrays(cls, spec: StatisticsSpec, arrays: dict) -> "EnsembleAccumulator":
        """An accumulator rebuilt from :meth:`to_arrays`."""
        n_leads = arrays["mean"].shape[0]
        acc = cls(spec, n_leads, arrays["mean"].shape[-2:])
        acc._counts = np.asarray(arrays["counts"], dtype=np.int64)
        for name in ("mean", "m2", "min", "max", "top", "bottom"):
            setattr(acc, name, np.asarray(arrays[name]))
        acc.exceed = {name: np.asarray(arrays[f"exceed_{name}"]) for name in spec.thresholds}
        return acc

    # -- results ----------------------------------------------------------------------------------
    def result(self) -> dict[str, np.ndarray]:
        """Final statistics: ``mean``, ``std`` (ddof=1), ``min``, ``max`` ``(lead, channel, lat, lon)``,
        ``exceedance_<channel>`` probabilities ``(lead, threshold, lat, lon)`` and ``quantile``
        ``(lead, channel, quantile, lat, lon)``."""
        counts = self._counts.reshape(-1, 1, 1, 1)
        if (counts == 0).any():
            raise ValueError("no members were accumulated for some lead times")
        out = {
            "mean": self.mean.astype(np.float32),
            "std": np.sqrt(self.m2 / np.maximum(counts - 1, 1)).astype(np.float32),
            "min": self.min,
            "max": self.max,
        }
        for name, counts_above in self.exceed.items():
            out[f"exceedance_{name}"] = (counts_above / self._counts.reshape(-1, 1, 1, 1)).astype(np.float32)
        if self.spec.quantiles:
            out["quantile"] = self._quantiles()
        return out

    def _quantiles(self) -> np.ndarray:
        members = int(self._counts[0])
        if (self._counts != members).any():
            raise ValueError("leads hold different member counts; quantiles need complete leads")
        self.spec.check_members(members)
        k = self.spec.tail_members
        top = np.sort(self.top, axis=2)  # ascending: order statistics M-k .. M-1
        bottom = np.sort(self.bottom, axis=2)  # order statistics 0 .. k-1
        results = []
        for q in self.spec.quantiles:
            h = (members - 1) * q
            low, high = math.floor(h), math.ceil(h)
            values = [bottom[:, :, i] if i < k else top[:, :, i - (members - k)] for i in (low, high)]
            results.append(values[0] + (h - low) * (values[1] - values[0]))
        return np.stack(results, axis=2).astype(np.float32)


def finalise_statistics(store, init_index: int) -> bool:
    """Merge the statistics parts of a start date stored in ``store`` (a :class:`forecast.store.EnsembleStore`),
    one per block in block order, write the final statistics once every block's part is stored, then
    remove the parts; returns whether the statistics are final.

    The fold order is fixed by the blocks, so the result is bit-identical however the blocks were run
    (ranks, reruns, concurrent runs). Concurrent finalisers take turns (the store's lock), the final
    statistics are durable before any part is removed, and a start date already final only has its
    leftover parts removed, so a kill at any point followed by a rerun gives the same store (idempotent).
    Where the file system has no locks, each part's flag is read again after its arrays: the flags are
    removed before the arrays, so a finaliser that finds one gone stops (another wrote the statistics).
    """
    with store.exclusive():
        if not store.statistics_done(init_index):
            complete = store.statistics_complete(init_index)
            if not complete.all():
                return False
            spec = StatisticsSpec(**store.schema.statistics)
            total = None
            for b in range(len(store.blocks)):
                part = EnsembleAccumulator.from_arrays(spec, store.statistics_part(init_index, b))
                if not store.statistics_part_stored(init_index, b):  # removed while read: another finaliser
                    return store.statistics_done(init_index)  # finished first (no lock on this file system)
                if total is None:
                    total = part
                else:
                    total.merge(part)
            store.write_statistics(init_index, total.result())
        store.drop_statistics_parts(init_index)
    return True

"""Bitwise real information content of float32 fields, and the BitRound keep-bits it implies.

Klöwer, Razinger, Dominguez, Düben and Palmer (2021), "Compressing atmospheric data into its real
information content", Nature Computational Science 1, 713-724. The real information of bit position
``i`` is the mutual information between that bit in adjacent grid points,

    I_i = sum over r, s in {0, 1} of p_rs log2(p_rs / (p_r q_s)),

where ``p_rs`` is the fraction of neighbouring pairs whose first value has bit ``i`` equal to ``r`` and
whose second has it equal to ``s``, and ``p_r``, ``q_s`` are the marginals. Bits that vary independently
of their neighbour (the noise in the low mantissa) carry none. A finite sample of independent bits still
shows a small positive estimate, so information below the value a fair coin reaches at the chosen
``confidence`` (the paper's binomial significance test) is set to zero. The keep-bits of a field are the
fewest mantissa bits that, with the sign and exponent bits, hold ``level`` (99% in the paper) of the
total. Bits are counted from the most significant: index 0 is the sign, 1-8 the exponent, 9-31 the
mantissa.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

SIGN_AND_EXPONENT_BITS = 9
MANTISSA_BITS = 23


def _entropy2(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits, 0 at p = 0 or 1."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    return np.nan_to_num(h, nan=0.0)


def free_entropy(pairs: int, confidence: float = 0.99) -> float:
    """The largest mutual information (bits) that independent fair bits reach in ``pairs`` pairs at
    ``confidence``: ``1 - H(1/2 + z / (2 sqrt(pairs)))`` with ``z`` the two-sided normal quantile.

    >>> round(free_entropy(10**6), 8)
    4.79e-06
    """
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = min(1.0, 0.5 + z / (2 * np.sqrt(pairs)))
    return float(1 - _entropy2(p))


def bitwise_real_information(values, axis: int = -1, confidence: float = 0.99) -> np.ndarray:
    """Real information (bits) of each of the 32 bit positions of float32 ``values``, sign bit first.

    Neighbours are adjacent points along ``axis`` (longitude for ``(..., lat, lon)`` fields); every other
    dimension only adds pairs. Pairs with a zero are left out: BitRound keeps zeros exact, and the runs of
    zeros of clipped fields (humidity, water vapour) would otherwise make every bit look informative.
    Non-finite values are not allowed.

    Examples
    --------
    White noise holds no information in its low mantissa bits; a smooth field does:

    >>> g = np.random.default_rng(0)
    >>> int(bitwise_real_information(g.standard_normal((64, 512)))[20:].sum() == 0)
    1
    >>> x = np.sin(np.linspace(0, 6.28, 512))[None] * np.ones((64, 1)) + 2
    >>> bool(bitwise_real_information(x)[9:14].sum() > 2)
    True
    """
    x = np.asarray(values, dtype=np.float32)
    if not np.isfinite(x).all():
        raise ValueError("bit information needs finite values (the field holds NaN or Inf)")
    x = np.moveaxis(x, axis, -1)
    if x.shape[-1] < 2:
        raise ValueError(f"bit information needs at least 2 points along the axis, got {x.shape[-1]}")
    bits = np.ascontiguousarray(x).view(np.uint32)
    first, second = bits[..., :-1].ravel(), bits[..., 1:].ravel()
    nonzero = ((first << np.uint32(1)) != 0) & ((second << np.uint32(1)) != 0)  # +0 and -0 are left out
    first, second = first[nonzero], second[nonzero]
    n = first.size
    if n == 0:
        return np.zeros(32)
    both = first & second
    information = np.zeros(32)
    for i in range(32):
        shift = np.uint32(31 - i)
        ones_first = np.count_nonzero((first >> shift) & np.uint32(1)) / n
        ones_second = np.count_nonzero((second >> shift) & np.uint32(1)) / n
        p11 = np.count_nonzero((both >> shift) & np.uint32(1)) / n
        joint = np.array([[1 - ones_first - ones_second + p11, ones_second - p11],  # rows: first bit 0, 1
                          [ones_first - p11, p11]])
        marginal = np.outer([1 - ones_first, ones_first], [1 - ones_second, ones_second])
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(joint > 0, joint * np.log2(joint / marginal), 0.0)
        information[i] = max(0.0, float(terms.sum()))
    information[information <= free_entropy(n, confidence)] = 0.0
    return information


def keepbits_for_information(information, level: float = 0.99) -> int:
    """The fewest float32 mantissa bits whose information, with the sign and exponent bits, is at least
    ``level`` of the total (0 when those alone hold it, or when there is none).

    >>> keepbits_for_information([0.0] * 9 + [1.0, 1.0, 0.5] + [0.0] * 20, level=0.9)
    3
    """
    information = np.asarray(information, dtype=np.float64)
    if information.shape != (32,):
        raise ValueError(f"expected the information of 32 bit positions, got shape {information.shape}")
    if not 0 < level <= 1:
        raise ValueError(f"the information level must be in (0, 1], got {level}")
    total = information.sum()
    if total <= 0:
        return 0
    cumulative = np.cumsum(information) / total
    needed = int(np.argmax(cumulative >= level - 1e-12)) + 1  # bit positions from the sign bit
    return int(np.clip(needed - SIGN_AND_EXPONENT_BITS, 0, MANTISSA_BITS))


def auto_keepbits(fields: dict, level: float = 0.99, confidence: float = 0.99, minimum: int = 1) -> dict[str, int]:
    """Keep-bits per channel from ``fields`` (channel -> array ``(..., lat, lon)``): the mantissa bits
    holding ``level`` of each field's real information, at least ``minimum`` (BitRound keeps 1 to 23)."""
    return {name: max(minimum, keepbits_for_information(bitwise_real_information(values, -1, confidence), level))
            for name, values in fields.items()}


def keepbits_from_source(source, channels, times, level: float = 0.99, confidence: float = 0.99,
                         max_times: int = 4) -> tuple[dict[str, int], dict]:
    """Keep-bits per channel from the analyses ``source`` (a ``forecast.data.Source``) at up to ``max_times``
    of ``times`` (evenly spread, so every process that asks gets the same answer), and a record of how
    they were chosen (for the store's attributes)."""
    times = np.atleast_1d(np.asarray(times, dtype="datetime64[ns]"))
    chosen = times[np.unique(np.linspace(0, len(times) - 1, min(max_times, len(times))).round().astype(int))]
    values = source.fields(chosen, list(channels))  # (time, channel, lat, lon)
    keepbits = auto_keepbits({c: values[:, k] for k, c in enumerate(channels)}, level, confidence)
    record = {"method": "bitwise real information of adjacent longitudes (Klöwer et al. 2021)",
              "information": level, "confidence": confidence,
              "analysis_times": [str(np.datetime_as_string(t, "s")) for t in chosen], "keepbits": keepbits}
    return keepbits, record

"""Bitwise real information (Klöwer et al. 2021) against closed forms, and keep-bits on simple fields."""

import numpy as np
import pytest

from forecast.bitinfo import (MANTISSA_BITS, auto_keepbits, bitwise_real_information, free_entropy,
                              keepbits_for_information)

ONE = np.uint32(0x3F800000)  # float32 1.0: sign 0, exponent 127, mantissa 0


def _binary_entropy(p):
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def _markov_bits(n, flip, generator):
    """A symmetric two-state Markov chain of ``n`` bits that flips with probability ``flip``."""
    flips = generator.random(n) < flip
    return (np.cumsum(flips) + generator.integers(2)) % 2


def test_mutual_information_of_markov_bits_equals_the_closed_form():
    # bit k of neighbouring points follows a symmetric Markov chain: I = 1 - H(flip) exactly
    g = np.random.default_rng(0)
    n = 400_000
    flips = {9: 0.02, 11: 0.1, 14: 0.25, 20: 0.4}  # bit position (0 = sign) -> flip probability
    bits = np.full(n, ONE, dtype=np.uint32)
    for position, flip in flips.items():
        bits |= _markov_bits(n, flip, g).astype(np.uint32) << np.uint32(31 - position)
    information = bitwise_real_information(bits.view(np.float32)[None])
    for position, flip in flips.items():
        assert information[position] == pytest.approx(1 - _binary_entropy(flip), abs=4e-3)
    others = [i for i in range(32) if i not in flips]
    assert np.all(information[others] == 0)  # constant bits hold no entropy, so no information


def test_independent_bits_hold_no_information_after_the_significance_test():
    g = np.random.default_rng(1)
    bits = ONE | g.integers(0, 2**23, size=(50, 2000), dtype=np.uint32)  # every mantissa bit a fair coin
    information = bitwise_real_information(bits.view(np.float32))
    assert np.all(information == 0)
    # the threshold is what independent bits reach by chance: above zero, shrinking as 1/n
    assert 0 < free_entropy(10**6) < free_entropy(10**4) < 1e-3
    assert free_entropy(10**6) == pytest.approx(free_entropy(10**4) / 100, rel=1e-3)


def test_white_noise_keeps_the_fewest_bits_and_a_smooth_field_more():
    g = np.random.default_rng(2)
    noise = g.standard_normal((64, 256)).astype(np.float32)
    assert keepbits_for_information(bitwise_real_information(noise)) == 0
    assert auto_keepbits({"noise": noise}) == {"noise": 1}  # BitRound keeps at least one mantissa bit
    lon = np.linspace(0, 2 * np.pi, 1024, endpoint=False)
    lat = np.linspace(-1, 1, 64)[:, None]
    smooth = 1.5 + 0.2 * np.sin(3 * lon) * np.cos(lat)
    kept = {k: keepbits_for_information(bitwise_real_information(smooth + g.uniform(-1, 1, smooth.shape) * 2.0**-k))
            for k in (4, 6, 8, 10)}
    # noise of size 2^-k on values in [1, 2) destroys every mantissa bit beyond the k-th
    assert all(1 <= kept[k] <= k for k in kept)
    assert kept[4] < kept[6] < kept[8] <= kept[10]


def test_a_field_stored_with_few_mantissa_bits_needs_no_more():
    g = np.random.default_rng(3)
    lon = np.linspace(0, 2 * np.pi, 2048, endpoint=False)
    field = (1.5 + 0.3 * np.sin(lon) + 0.01 * g.standard_normal((32, 1))).astype(np.float32)
    truncated = (field.view(np.uint32) & np.uint32(0xFFFFFFFF << (MANTISSA_BITS - 5) & 0xFFFFFFFF)).view(np.float32)
    information = bitwise_real_information(truncated)
    assert np.all(information[9 + 5:] == 0)
    assert keepbits_for_information(information) <= 5


def test_runs_of_zeros_add_no_information():
    # a clipped field (humidity): zeros in half the domain, where every bit of both neighbours agrees
    g = np.random.default_rng(4)
    lon = np.linspace(0, 2 * np.pi, 2048, endpoint=False)
    wet = 1.5 + 0.2 * np.sin(3 * lon) + g.uniform(-1, 1, (32, 2048)) * 2.0**-8
    clipped = np.where(np.sin(lon) > 0, wet, 0.0)
    information = bitwise_real_information(clipped)
    assert information[9 + 8:].sum() < 1e-3  # (at 99% confidence, a noise bit may pass the test by chance)
    assert keepbits_for_information(information) == keepbits_for_information(bitwise_real_information(wet[:, :1024]))
    assert np.all(bitwise_real_information(np.zeros((4, 64))) == 0)


def test_level_and_shape_are_checked():
    with pytest.raises(ValueError, match="32 bit positions"):
        keepbits_for_information(np.ones(16))
    with pytest.raises(ValueError, match="level"):
        keepbits_for_information(np.ones(32), level=1.5)
    with pytest.raises(ValueError, match="finite"):
        bitwise_real_information(np.array([[1.0, np.nan, 2.0]]))
    assert keepbits_for_information(np.zeros(32)) == 0
    assert keepbits_for_information(np.r_[np.zeros(9), np.ones(23)], level=1.0) == 23


def test_keepbits_auto_is_chosen_from_the_analyses_recorded_in_the_store_and_reused(tiny_world, tmp_path, monkeypatch):
    import json
    from dataclasses import replace

    import xarray as xr

    from workflows.recipes import build_engine

    path = tmp_path / "auto.zarr"
    config = replace(tiny_world, paths=replace(tiny_world.paths, store=str(path)),
                     ensemble=replace(tiny_world.ensemble, compression=replace(tiny_world.ensemble.compression,
                                                                              keepbits="auto")))
    engine = build_engine(config)
    analyses = xr.open_zarr(tiny_world.paths.resolve("analysis"), consolidated=False)
    times = config.ensemble.init_times.times()
    expected = auto_keepbits({c: analyses[c].sel(time=times).values for c in engine.stored})
    assert engine.keepbits == expected and all(1 <= b <= 23 for b in expected.values())
    engine.run(engine.create_store(path))
    exact = build_engine(tiny_world)
    exact.run(exact.create_store(tmp_path / "exact.zarr"))
    lossy, reference = xr.open_zarr(path, consolidated=False), xr.open_zarr(tmp_path / "exact.zarr", consolidated=False)
    record = json.loads(lossy.attrs["keepbits_auto"])
    assert record["keepbits"] == expected and record["information"] == 0.99 and len(record["analysis_times"]) == len(times)
    for channel, bits in expected.items():
        assert lossy[channel].attrs["bitround_keepbits"] == bits
        a, b = lossy[channel].values, reference[channel].values
        assert np.all(a[b == 0] == 0)  # clipped fields: zeros stay exact
        assert (np.abs(a - b)[b != 0] / np.abs(b[b != 0])).max() <= 2.0 ** -(bits + 1)
    # the dry-run sizes with the recorded bits instead of its assumption
    from workflows.dryrun import run_size

    size = run_size(config)
    assert size.keepbits == expected and "as recorded in" in size.keepbits_note
    # a resumed or parallel run takes the store's keep-bits without reading the analyses again
    monkeypatch.setattr("forecast.bitinfo.keepbits_from_source", lambda *a, **k: pytest.fail("analyses read again"))
    again = build_engine(config)
    assert again.keepbits == expected
    assert again.run(again.create_store(path))["blocks_run"] == 0

import math

import torch

from forecast.grid import Grid
from forecast.random_fields import SphericalNoise


def test_unit_variance_and_correlation_length():
    noise = SphericalNoise(Grid(33, 64), length_scale_km=1500.0)
    x = noise.sample((800,), torch.Generator().manual_seed(3))
    assert abs(float(x.var(0).mean()) - 1) < 0.05
    equator = x[:, 16, :]
    shift = 2  # 2 * 5.625 degrees along the equator
    distance = shift * 2 * math.pi * 6371 / 64
    corr = float((equator * equator.roll(shift, -1)).mean() / equator.var())
    assert abs(corr - math.exp(-distance**2 / (2 * 1500.0**2))) < 0.05


def test_same_generator_state_gives_the_same_field_and_others_differ():
    noise = SphericalNoise(Grid(17, 32), 1000.0)
    a = noise.sample((2,), torch.Generator().manual_seed(1))
    b = noise.sample((2,), torch.Generator().manual_seed(1))
    c = noise.sample((2,), torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)

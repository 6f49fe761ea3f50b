import numpy as np
import pytest

from forecast.grid import Grid
from forecast.verify import latitude_weights


@pytest.mark.parametrize("kind", ["equiangular", "legendre-gauss"])
def test_weights_sum_to_one_and_integrate_the_sphere(kind):
    grid = Grid(33, 64, kind)
    weights = grid.area_weights()
    assert weights.shape == (33, 64)
    assert abs(weights.sum() - 1) < 1e-12
    # the area share of the northern cap above 30N is (1 - sin 30) / 2 = 0.25
    lat = np.radians(grid.lat)
    field = (np.sin(lat) ** 2)[:, None] * np.ones(64)
    assert abs((weights * field).sum() - 1 / 3) < 1e-2  # mean of sin^2 over the sphere


def test_equiangular_weights_match_cell_areas_and_verify_helper():
    grid = Grid(17, 32)
    assert np.allclose(grid.latitude_weights(), latitude_weights(grid.lat))
    assert np.allclose(latitude_weights(grid.lat[::-1]), grid.latitude_weights()[::-1])


def test_from_coords_recognises_grids_and_names_mismatch():
    grid = Grid(17, 32)
    assert Grid.from_coords(grid.lat, grid.lon) == grid
    with pytest.raises(ValueError, match="not a global"):
        Grid.from_coords(grid.lat[::-1], grid.lon)

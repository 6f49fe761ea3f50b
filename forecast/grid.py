"""Latitude-longitude grids on the sphere and their area weights.

Only numpy here: the grid is needed by verification workers and by the command line,
which must not pay for importing torch or torch-harmonics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from forecast.errors import InputError

GRID_KINDS = ("equiangular", "legendre-gauss")


@dataclass(frozen=True)
class Grid:
    """A global latitude-longitude grid, latitudes north to south, longitudes east from 0.

    ``equiangular`` includes both poles (ERA5's 721x1440 is ``Grid(721, 1440)``);
    ``legendre-gauss`` uses the Gauss-Legendre nodes (torch-harmonics' internal SFNO grid).

    Examples
    --------
    >>> g = Grid(5, 8)
    >>> g.lat.tolist()
    [90.0, 45.0, 0.0, -45.0, -90.0]
    >>> round(float(g.area_weights().sum()), 12)
    1.0
    """

    nlat: int
    nlon: int
    kind: str = "equiangular"

    def __post_init__(self):
        if self.kind not in GRID_KINDS:
            raise InputError(f"unknown grid kind {self.kind!r}; expected one of {GRID_KINDS}")
        if self.nlat < 2 or self.nlon < 2:
            raise InputError(f"grid must have at least 2x2 points, got {self.nlat}x{self.nlon}")

    @property
    def shape(self) -> tuple[int, int]:
        """``(nlat, nlon)``."""
        return (self.nlat, self.nlon)

    @property
    def lat(self) -> np.ndarray:
        """Latitudes in degrees north, descending."""
        if self.kind == "equiangular":
            return np.linspace(90.0, -90.0, self.nlat)
        nodes, _ = np.polynomial.legendre.leggauss(self.nlat)
        return np.degrees(np.arcsin(nodes))[::-1].copy()

    @property
    def lon(self) -> np.ndarray:
        """Longitudes in degrees east in [0, 360)."""
        return np.arange(self.nlon) * (360.0 / self.nlon)

    def latitude_weights(self) -> np.ndarray:
        """Weights per latitude row summing to 1: the share of the sphere's area each row stands for.

        Equiangular: the area of the band between the midpoints to the neighbouring rows (the polar
        rows get the caps), which is cos-latitude weighting with the poles done right.
        Legendre-Gauss: the Gauss quadrature weights.
        """
        if self.kind == "legendre-gauss":
            _, weights = np.polynomial.legendre.leggauss(self.nlat)
            return weights[::-1] / weights.sum()
        lat = np.radians(self.lat)
        edges = np.concatenate([[np.pi / 2], (lat[:-1] + lat[1:]) / 2, [-np.pi / 2]])
        band = np.sin(edges[:-1]) - np.sin(edges[1:])
        return band / band.sum()

    def area_weights(self) -> np.ndarray:
        """Weights per grid point, shape ``(nlat, nlon)``, summing to 1."""
        return np.repeat(self.latitude_weights()[:, None] / self.nlon, self.nlon, axis=1)

    def to_dict(self) -> dict:
        """The grid as plain JSON values (``nlat``, ``nlon``, ``kind``), as cards and store schemas keep it."""
        return {"nlat": self.nlat, "nlon": self.nlon, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> "Grid":
        """The grid :meth:`to_dict` wrote."""
        return cls(int(d["nlat"]), int(d["nlon"]), str(d.get("kind", "equiangular")))

    @classmethod
    def from_coords(cls, lat, lon) -> "Grid":
        """The grid whose coordinates these are, or a ``ValueError`` naming what does not fit."""
        lat = np.asarray(lat, dtype=float)
        lon = np.asarray(lon, dtype=float)
        for kind in GRID_KINDS:
            grid = cls(len(lat), len(lon), kind)
            if np.allclose(grid.lat, lat, atol=1e-4) and np.allclose(grid.lon, lon, atol=1e-4):
                return grid
        raise InputError(
            f"coordinates ({len(lat)} latitudes {lat[0]:.3f}..{lat[-1]:.3f}, {len(lon)} longitudes "
            f"{lon[0]:.3f}..{lon[-1]:.3f}) are not a global equiangular or Gauss grid ordered north to "
            "south and east from 0"
        )

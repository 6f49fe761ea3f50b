"""Shared pieces of the scores: argument checks, area weights, regions and reductions over ``dim``."""

from __future__ import annotations

import math

from dataclasses import dataclass

import numpy as np
import xarray as xr

from forecast.errors import InputError


# -- area weights -----------------------------------------------------------------------------------
def latitude_weights(lat) -> np.ndarray:
    """Cell-area weights for latitude rows given in degrees (any order, global or regional), summing to 1.

    Each row stands for the band between the midpoints to its neighbours (the outer rows extend half a
    spacing outwards, clipped at the poles); the weight is the band's area, so a global equiangular grid
    gets cos-latitude weights with the polar caps done right. Latitudes that are the nodes of a
    Gauss-Legendre grid (a global Gauss grid, as inside SFNO) get that grid's quadrature weights.

    >>> w = latitude_weights([90, 0, -90])
    >>> [round(float(v), 4) for v in w]
    [0.1464, 0.7071, 0.1464]
    >>> gauss = np.degrees(np.arcsin(np.polynomial.legendre.leggauss(4)[0]))
    >>> [round(float(v), 4) for v in latitude_weights(gauss)]
    [0.1739, 0.3261, 0.3261, 0.1739]
    """
    lat = np.asarray(lat, dtype=float)
    if lat.size == 1:
        return np.ones(1)
    if lat.size > 2:
        nodes, quadrature = np.polynomial.legendre.leggauss(lat.size)
        order = np.argsort(lat)
        if np.allclose(np.sort(lat), np.degrees(np.arcsin(nodes)), atol=1e-6):
            weights = np.empty(lat.size)
            weights[order] = quadrature
            return weights / weights.sum()
    order = np.argsort(lat)
    s = lat[order]
    edges = np.concatenate([[s[0] - (s[1] - s[0]) / 2], (s[1:] + s[:-1]) / 2, [s[-1] + (s[-1] - s[-2]) / 2]])
    edges = np.radians(np.clip(edges, -90.0, 90.0))
    band = np.sin(edges[1:]) - np.sin(edges[:-1])
    weights = np.empty_like(band)
    weights[order] = band
    return weights / weights.sum()


# -- regions ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """A latitude band, optionally cut to a longitude box, over which scores are averaged.

    ``lat`` is ``(south, north)`` in degrees, bounds included unless ``lat_open`` says otherwise
    (``(True, False)``: south bound excluded). ``lon`` is ``(west, east)`` in degrees east, bounds
    included; ``west > east`` wraps through the 0/360 meridian; ``None`` takes every longitude.

    >>> Region.box("europe", 35, 70, -10, 30).lon
    (350.0, 30.0)
    """

    name: str
    lat: tuple = (-90.0, 90.0)
    lon: tuple | None = None
    lat_open: tuple = (False, False)

    @classmethod
    def box(cls, name: str, south: float, north: float, west: float, east: float) -> "Region":
        """A user box; longitudes may be given in -180..180 or 0..360."""
        if not str(name).strip():
            raise InputError("a region needs a name, e.g. europe:35:70:-10:30")
        if not all(math.isfinite(v) for v in (south, north, west, east)):
            raise InputError(f"region {name!r}: the bounds must be finite numbers")
        if not (-90 <= south <= 90 and -90 <= north <= 90):
            raise InputError(f"region {name!r}: latitudes must lie in -90..90, got {south} and {north}")
        if not (-180 <= west <= 360 and -180 <= east <= 360):
            raise InputError(f"region {name!r}: longitudes must lie in -180..360, got {west} and {east}")
        if south >= north:
            raise InputError(f"region {name!r}: south ({south}) must be below north ({north})")
        return cls(name, (float(south), float(north)), (float(west) % 360.0, float(east) % 360.0))

    @classmethod
    def parse(cls, text: str) -> "Region":
        """``NAME:SOUTH:NORTH:WEST:EAST`` (degrees), e.g. ``europe:35:70:-10:30``."""
        parts = text.split(":")
        if len(parts) != 5:
            raise InputError(f"region {text!r} must read NAME:SOUTH:NORTH:WEST:EAST (degrees)")
        try:
            south, north, west, east = (float(p) for p in parts[1:])
        except ValueError:
            raise InputError(f"region {text!r}: the bounds must be numbers") from None
        return cls.box(parts[0], south, north, west, east)

    def mask(self, lat, lon=None) -> xr.DataArray:
        """Boolean mask on the ``lat`` (and ``lon``) coordinates."""
        south, north = self.lat
        inside = (lat > south if self.lat_open[0] else lat >= south) & (lat < north if self.lat_open[1] else lat <= north)
        if self.lon is not None:
            if lon is None:
                raise ValueError(f"region {self.name!r} has a longitude box but the field has no lon coordinate")
            west, east = self.lon
            lon360 = lon % 360.0
            inside = inside & ((lon360 >= west) & (lon360 <= east) if west <= east else (lon360 >= west) | (lon360 <= east))
        return inside


GLOBAL = Region("global")
NH_EXTRATROPICS = Region("nh_extratropics", (20.0, 90.0), lat_open=(True, False))
TROPICS = Region("tropics", (-20.0, 20.0))
SH_EXTRATROPICS = Region("sh_extratropics", (-90.0, -20.0), lat_open=(False, True))
REGIONS = (GLOBAL, NH_EXTRATROPICS, TROPICS, SH_EXTRATROPICS)


# -- argument handling ------------------------------------------------------------------------------
def dims_of(dim) -> list[str]:
    if dim is None:
        return []
    return [dim] if isinstance(dim, str) else list(dim)


def check(forecast, truth, member_dim: str) -> None:
    if not isinstance(forecast, (xr.DataArray, xr.Dataset)):
        raise ValueError(f"forecast must be an xarray DataArray or Dataset, got {type(forecast).__name__}")
    if member_dim not in forecast.dims:
        raise ValueError(f"forecast has no member dimension {member_dim!r} (dims: {list(forecast.dims)})")
    if forecast.sizes[member_dim] < 1:
        raise ValueError(f"forecast has no members along {member_dim!r}")
    if truth is not None:
        if not isinstance(truth, (xr.DataArray, xr.Dataset)):
            raise ValueError(f"truth must be an xarray DataArray or Dataset, got {type(truth).__name__}")
        if member_dim in truth.dims:
            raise ValueError(f"truth must not have the member dimension {member_dim!r}")
        check_truth_dims(forecast, truth)


_TIME_DIMS = ("time", "valid_time")
_SAME_AXIS = (("latitude", "lat"), ("longitude", "lon"))


def check_truth_dims(forecast, truth) -> None:
    """Refuse a truth that xarray would broadcast instead of align: one with its own time axis (not yet
    taken at the forecast's valid times) or naming latitude/longitude differently from the forecast.

    >>> f = xr.DataArray(np.zeros((2, 3)), dims=("member", "lat"))
    >>> check_truth_dims(f, xr.DataArray(np.zeros((4, 3)), dims=("time", "lat")))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: truth has its own time dimension 'time', which the forecast lacks ...; take the truth at the ...
    """
    for dim in truth.dims:
        if dim in _TIME_DIMS and dim not in forecast.dims:
            raise ValueError(f"truth has its own time dimension {dim!r}, which the forecast lacks (forecast dims "
                             f"{list(forecast.dims)}); take the truth at the forecast's valid times with "
                             "verify.align_truth(forecast, truth) first")
    for names in _SAME_AXIS:
        mine = [d for d in names if d in truth.dims and d not in forecast.dims]
        theirs = [d for d in names if d in forecast.dims and d not in truth.dims]
        if mine and theirs:
            raise ValueError(f"truth dimension {mine[0]!r} and forecast dimension {theirs[0]!r} name the same axis; "
                             "put the truth on the forecast's grid with verify.align_truth(forecast, truth)")


def is_lazy(obj) -> bool:
    if isinstance(obj, xr.Dataset):
        return any(v.chunks is not None for v in obj.data_vars.values())
    return isinstance(obj, xr.DataArray) and obj.chunks is not None


def members_in_one_chunk(forecast, member_dim: str):
    """Rechunk so each Dask chunk holds every member (kernels that sort or rank need them together)."""
    if is_lazy(forecast):
        return forecast.chunk({member_dim: -1})
    return forecast


def threads_for(*objects) -> int | None:
    """One thread per kernel call under Dask (Dask runs chunks in parallel), all cores otherwise."""
    return 1 if any(is_lazy(o) for o in objects) else None


# -- reductions -------------------------------------------------------------------------------------
def _as_regions(regions):
    if regions is None:
        return None
    if isinstance(regions, Region):
        return [regions]
    regions = list(regions)
    if not regions or not all(isinstance(r, Region) for r in regions):
        raise ValueError("regions must be a Region or a non-empty sequence of Region")
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise InputError(f"region names must be unique, got {names}")
    return regions


def weights_for(score, dims: list[str], regions=None):
    """Area weights (cell area when ``lat`` is reduced), times region masks (with a ``region`` dim)."""
    weights = None
    if "lat" in dims:
        weights = xr.DataArray(latitude_weights(score["lat"].values), dims="lat", coords={"lat": score["lat"]})
    regions = _as_regions(regions)
    if regions is None:
        return weights
    if "lat" not in dims:
        raise ValueError("regions need 'lat' among the dimensions averaged over (dim)")
    lon = score["lon"] if "lon" in score.coords else None
    masks = xr.concat([r.mask(score["lat"], lon).astype(float) for r in regions],
                      dim=xr.DataArray([r.name for r in regions], dims="region", name="region"), coords="minimal")
    masks = masks.drop_vars([c for c in masks.coords if c not in masks.dims and c != "region"])
    return masks if weights is None else masks * weights


def reduce_mean(score, dim, regions=None):
    """Mean over ``dim``, area-weighted when it includes ``lat``, per region when ``regions`` is given;
    NaNs are skipped."""
    dims = dims_of(dim)
    if not dims:
        if regions is not None:
            raise ValueError("regions need dim to include 'lat' (and 'lon')")
        return score
    weights = weights_for(score, dims, regions)
    if weights is None:
        return score.mean(dims, skipna=True)
    return score.weighted(weights).mean(dims, skipna=True)


def reduce_sum(score, dim, regions=None):
    """Weighted sum over ``dim`` with the weights of :func:`reduce_mean` (counts for histograms)."""
    dims = dims_of(dim)
    weights = weights_for(score, dims, regions)
    if weights is None:
        return score.sum(dims, skipna=True)
    return score.weighted(weights).sum(dims, skipna=True)

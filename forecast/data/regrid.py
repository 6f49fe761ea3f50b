"""Regridding between global latitude-longitude grids (ERA5 at another resolution -> the model grid).

Both methods are separable: the target field is ``W_lat @ field @ W_lon.T`` with two sparse matrices.

- **bilinear** (refining, or similar resolution): linear in latitude between the two neighbouring source
  rows, linear in longitude with the periodic wrap; target latitudes beyond the source's outermost rows
  (a source without the poles) take the outermost row's value.
- **conservative** (coarsening in both directions): first-order conservative remapping. Each target cell
  (bounded by the midpoints between rows and columns, the polar rows by the poles) is the area-weighted
  mean of the source cells it overlaps: latitude overlaps are measured in sin(latitude), which makes
  the weights exact areas on the sphere; longitude overlaps wrap around. The area-weighted global mean
  is preserved.

``method="auto"`` picks conservative when the target is coarser in both directions, bilinear otherwise.
Source and target are ordered as the system's grids: latitudes north to south, longitudes east from 0.
"""

from __future__ import annotations

import numpy as np

from forecast.errors import InputError

METHODS = ("auto", "bilinear", "conservative")


def _bilinear_lat(src: np.ndarray, dst: np.ndarray):
    from scipy import sparse

    order = np.argsort(src)  # ascending
    asc = src[order]
    x = np.clip(dst, asc[0], asc[-1])
    upper = np.clip(np.searchsorted(asc, x, side="right"), 1, len(asc) - 1)
    lower = upper - 1
    weight = (x - asc[lower]) / (asc[upper] - asc[lower])
    rows = np.repeat(np.arange(len(dst)), 2)
    cols = np.stack([order[lower], order[upper]], axis=1).ravel()
    vals = np.stack([1 - weight, weight], axis=1).ravel()
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(dst), len(src)))


def _bilinear_lon(src: np.ndarray, dst: np.ndarray):
    from scipy import sparse

    n = len(src)
    x = np.mod(dst, 360.0)
    lower = np.searchsorted(src, x, side="right") - 1  # -1: before the first column, wrap to the last
    lower = np.mod(lower, n)
    upper = np.mod(lower + 1, n)
    span = np.mod(src[upper] - src[lower], 360.0)
    span[span == 0] = 360.0
    weight = np.mod(x - src[lower], 360.0) / span
    rows = np.repeat(np.arange(len(dst)), 2)
    cols = np.stack([lower, upper], axis=1).ravel()
    vals = np.stack([1 - weight, weight], axis=1).ravel()
    return sparse.csr_matrix((vals, (rows, cols)), shape=(len(dst), n))


def _lat_edges(lat: np.ndarray) -> np.ndarray:
    """Cell edges (degrees) of latitude rows ordered north to south: midpoints, poles outside."""
    mid = (lat[:-1] + lat[1:]) / 2
    return np.concatenate([[90.0], mid, [-90.0]])


def _conservative_lat(src: np.ndarray, dst: np.ndarray):
    from scipy import sparse

    s_edges, d_edges = np.sin(np.radians(_lat_edges(src))), np.sin(np.radians(_lat_edges(dst)))
    top = np.minimum(d_edges[:-1, None], s_edges[None, :-1])
    bottom = np.maximum(d_edges[1:, None], s_edges[None, 1:])
    overlap = np.clip(top - bottom, 0.0, None)
    overlap /= overlap.sum(axis=1, keepdims=True)
    return sparse.csr_matrix(overlap)


def _conservative_lon(src: np.ndarray, dst: np.ndarray):
    from scipy import sparse

    def edges(lon):
        step = 360.0 / len(lon)
        return lon - step / 2, lon + step / 2

    s_lo, s_hi = edges(src)
    d_lo, d_hi = edges(dst)
    overlap = np.zeros((len(dst), len(src)))
    for shift in (-360.0, 0.0, 360.0):  # the periodic images of the source cells
        lo = np.maximum(d_lo[:, None], s_lo[None, :] + shift)
        hi = np.minimum(d_hi[:, None], s_hi[None, :] + shift)
        overlap += np.clip(hi - lo, 0.0, None)
    overlap /= overlap.sum(axis=1, keepdims=True)
    return sparse.csr_matrix(overlap)


class Regridder:
    """Maps fields ``(..., len(src_lat), len(src_lon))`` to ``(..., len(dst_lat), len(dst_lon))``.

    Examples
    --------
    >>> from forecast.grid import Grid
    >>> fine, coarse = Grid(9, 16), Grid(5, 8)
    >>> r = Regridder(fine.lat, fine.lon, coarse.lat, coarse.lon)
    >>> r.method
    'conservative'
    >>> out = r(np.ones((2, 9, 16), dtype=np.float32))
    >>> out.shape, bool(np.allclose(out, 1.0)), out.dtype
    ((2, 5, 8), True, dtype('float32'))
    """

    def __init__(self, src_lat, src_lon, dst_lat, dst_lon, method: str = "auto"):
        if method not in METHODS:
            raise InputError(f"regridding method must be one of {METHODS}, got {method!r}")
        src_lat, src_lon = np.asarray(src_lat, float), np.asarray(src_lon, float)
        dst_lat, dst_lon = np.asarray(dst_lat, float), np.asarray(dst_lon, float)
        if np.any(np.diff(src_lat) >= 0) or np.any(np.diff(dst_lat) >= 0):
            raise InputError("regridding needs latitudes ordered north to south")
        if np.any(np.diff(src_lon) <= 0) or np.any(np.diff(dst_lon) <= 0):
            raise InputError("regridding needs longitudes ascending")
        if method == "auto":
            coarser = len(dst_lat) < len(src_lat) and len(dst_lon) < len(src_lon)
            method = "conservative" if coarser else "bilinear"
        self.method = method
        self.shape = (len(dst_lat), len(dst_lon))
        self.src_shape = (len(src_lat), len(src_lon))
        if method == "conservative":
            self.w_lat, self.w_lon = _conservative_lat(src_lat, dst_lat), _conservative_lon(src_lon, dst_lon)
        else:
            self.w_lat, self.w_lon = _bilinear_lat(src_lat, dst_lat), _bilinear_lon(src_lon, dst_lon)

    def __call__(self, field: np.ndarray) -> np.ndarray:
        field = np.asarray(field)
        if field.shape[-2:] != self.src_shape:
            raise ValueError(f"field of shape {field.shape} does not end with the source grid {self.src_shape}")
        lead = field.shape[:-2]
        x = field.reshape(-1, *self.src_shape).astype(np.float64)
        nb, ny, nx = x.shape
        x = (self.w_lon @ x.reshape(nb * ny, nx).T).T.reshape(nb, ny, -1)  # longitudes
        x = self.w_lat @ x.transpose(1, 0, 2).reshape(ny, -1)  # latitudes
        x = x.reshape(self.shape[0], nb, self.shape[1]).transpose(1, 0, 2)
        return x.reshape(*lead, *self.shape).astype(field.dtype if field.dtype.kind == "f" else np.float32)


def regrid_dataset(dataset, grid, method: str = "auto"):
    """A lazy copy of ``dataset`` (dims ``..., lat, lon``, system order) on ``grid``."""
    import xarray as xr

    regridder = Regridder(dataset["lat"].values, dataset["lon"].values, grid.lat, grid.lon, method)
    out = {}
    for name, da in dataset.data_vars.items():
        if da.dims[-2:] != ("lat", "lon"):
            continue
        da = da.chunk({"lat": -1, "lon": -1})
        new = xr.apply_ufunc(
            regridder, da, input_core_dims=[["lat", "lon"]], output_core_dims=[["lat_", "lon_"]],
            exclude_dims={"lat", "lon"}, dask="parallelized", output_dtypes=[da.dtype],
            dask_gufunc_kwargs={"output_sizes": {"lat_": grid.nlat, "lon_": grid.nlon}}, keep_attrs=True,
        )
        out[name] = new.rename({"lat_": "lat", "lon_": "lon"})
    result = xr.Dataset(out).assign_coords(lat=("lat", grid.lat), lon=("lon", grid.lon))
    result.attrs = dict(dataset.attrs, regridding=f"{regridder.method} from {regridder.src_shape[0]}x{regridder.src_shape[1]}")
    return result

"""Forecast-ensemble system: grids, data, rollout, the Zarr store and verification.

The public Python entry point to a store is :func:`open_store`; running an ensemble from Python is
``workflows.run`` (``docs/python-api.md``).
"""

__version__ = "0.1.0"


def open_store(path, chunk_bytes: int = 64 << 20):
    """Open an ensemble store (from ``forecast run``) as a lazy ``xarray.Dataset``.

    Dims ``member, init_time, lead_time, lat, lon`` with CF attributes (``member`` is the
    ``realization``, ``init_time`` the ``forecast_reference_time``, ``lead_time`` the
    ``forecast_period``; longitudes 0..360 east). Reads the consolidated metadata; Dask chunks hold
    all members of a tile of points (what scoring wants: see ``forecast.scores``), about
    ``chunk_bytes`` each. String coordinates are ``str`` objects and the on-disk encoding is dropped,
    so ``ds.isel(member=slice(4)).to_zarr(...)`` and ``.to_netcdf(...)`` work as they are.
    ``xr.open_zarr(path)`` opens the same store too (store chunks, no warning).

    Parameters
    ----------
    path : str or os.PathLike
        The store (a folder holding ``zarr.json``).
    chunk_bytes : int
        Target size of one Dask chunk.

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> import tempfile, forecast
    >>> from forecast.mock import write_mock_store
    >>> store, _ = write_mock_store(tempfile.mkdtemp() + "/s.zarr", members=4, leads=1)
    >>> ds = forecast.open_store(store)
    >>> dict(ds.sizes), ds["member"].attrs["standard_name"]
    ({'member': 4, 'init_time': 1, 'lead_time': 1, 'lat': 17, 'lon': 32}, 'realization')
    """
    from forecast.scores import open_ensemble

    return open_ensemble(path, chunk_bytes)

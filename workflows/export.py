"""``forecast export``: (part of) an ensemble store as a CF NetCDF file for other tools.

The file holds the selection exactly as :func:`forecast.open_store` shows it (values, coordinates and
attributes; ``xr.open_dataset`` reads it back equal), with CF coordinate metadata
(:mod:`forecast.cf`), zlib-compressed floats, and is written to a temporary name and renamed into place.
"""

from __future__ import annotations

from pathlib import Path

from forecast.files import atomic_write
from workflows.config import ConfigError


def select(ds, members: str | None = None, channels=None, statistics_only: bool = False):
    """The part of an opened store that :func:`export_netcdf` writes.

    ``members``: a range ``"A:B"``; ``channels``: names (a list or ``"z500,t2m"``) of member fields and of
    streaming statistics (``z500`` also selects ``z500_ensemble_mean`` and the rest); ``statistics_only``:
    no member fields, only the statistics the store carries (``statistics.channels`` in the run's config).
    """
    from ensembles.plan import parse_member_range

    if isinstance(channels, str):
        names = [c.strip() for c in channels.split(",") if c.strip()]
        if not names:
            raise ConfigError(f"--channels {channels!r} names no channel; give names such as z500,tcwv or leave it out")
        channels = names
    fields = [name for name in ds.data_vars if "member" in ds[name].dims]
    statistics = [name for name in ds.data_vars if name not in fields]
    if channels:
        unknown = [c for c in channels if c not in fields and not any(s.startswith(f"{c}_") for s in statistics)]
        if unknown:
            raise ConfigError(f"--channels: {unknown} not in the store (member fields: {fields}, statistics: "
                              f"{statistics})")
        fields = [name for name in fields if name in channels]
        statistics = [name for name in statistics if any(name.startswith(f"{c}_") for c in channels)]
    if statistics_only:
        if not statistics:
            raise ConfigError("--statistics-only: the store has no ensemble statistics for the channels asked for "
                              "(set ensemble.statistics.channels in the run's config)")
        return ds[statistics].drop_vars([c for c in ds.coords if "member" in ds[c].dims] + ["member"], errors="ignore")
    out = ds[fields + statistics]
    if members:
        start, stop = parse_member_range(members, ds.sizes["member"])
        out = out.isel(member=slice(start, stop))
    return out


def export_netcdf(store, out, members: str | None = None, channels=None, statistics_only: bool = False,
                  zlib_level: int = 4) -> Path:
    """Write the :func:`select` ion of ``store`` to the NetCDF file ``out`` (netCDF4 format); returns ``out``.

    Examples
    --------
    >>> import tempfile, xarray as xr, forecast
    >>> from forecast.verify.mock import write_mock_store
    >>> folder = tempfile.mkdtemp()
    >>> store, _ = write_mock_store(folder + "/s.zarr", members=4, leads=1)
    >>> path = export_netcdf(store, folder + "/z500.nc", members="0:2", channels="z500")
    >>> xr.open_dataset(path)["z500"].sizes["member"]
    2
    """
    import forecast
    from forecast.cf import time_encoding, with_cf_attributes
    from forecast.files import output_file

    out = output_file(out, "export: output")  # before the store is read or anything computed
    ds = select(forecast.open_store(store), members, channels, statistics_only)
    ds = with_cf_attributes(ds)
    encoding = {name: {"zlib": True, "complevel": zlib_level} for name in ds.data_vars if ds[name].dtype.kind == "f"}
    encoding.update(time_encoding(ds))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=encoding)
    return out

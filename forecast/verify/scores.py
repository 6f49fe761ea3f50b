"""The standard score set for an ensemble store: per channel, lead time and region, over start dates.

Chunking (what :func:`open_ensemble` asks Dask for): every chunk spans **all members** of one tile of
points (a few start dates x the store's chunk of leads x a band of latitude rows), sized to about
``chunk_bytes`` (64 MB). Sorting scores (CRPS, twCRPS, ranks, EFI) need all members of a point at once,
and with all members in the chunk the moment scores come from the same read, so each value is read
once; each kernel walks its chunk in blocks of points, so a worker holds about one chunk plus small
buffers whatever M is. The alternative, reducing members block by block, would suit the moment scores
but not the sorted ones (a fair CRPS is not a sum over member blocks) and would need a transpose
(what HENS did). The tile is aligned with the store's own chunks: a store chunked per member and
whole field is read once per latitude band of the tile (a 7,424-member store on a small grid fits one
band, so it is read once); a sharded store whose inner chunks are spatial tiles is read exactly once.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import xarray as xr

from forecast import verify
from forecast.cf import plain_strings
from forecast.errors import InputError
from forecast.store import StoreSchema
from forecast.verify._common import _as_regions
from forecast.verify._fused import channel_scores

log = logging.getLogger(__name__)

SCORE_DIMS = ("init_time", "lat", "lon")
EVENT_QUANTILES = {"above_q90": (0.9, True), "below_q10": (0.1, False)}
CLIMATE_SAMPLES = 120  # truth times kept as the climatological ensemble (CRPS skill score)
EFI_LEVELS = 101  # model-climate quantiles for the EFI
GROUPED_RANK_REFERENCE_MEMBERS = 1024  # larger grouped stores get the (cheap) outlier reference, not the rank one
SCORE_ORDER = ("crps", "crps_standard", "ensemble_mean_rmse", "ensemble_mean_bias", "spread", "spread_skill_ratio",
               "best_member_rmse", "outlier_fraction", "rank_histogram", "sigma_exceedance_fraction", "control_rmse",
               "crps_skill_score", "twcrps_above_q90", "brier_score", "reliability_forecast_probability",
               "reliability_observed_frequency", "reliability_count", "exceedance_probability_map", "efi_map",
               "crps_by_init_time", "spread_skill_ratio_grouped", "within_group_variance", "between_group_variance",
               "outlier_reliable_value_grouped", "rank_reliable_frequency_grouped")  # the variables of scores.nc


def _schema(ds) -> StoreSchema | None:
    """The run description our stores carry in ``attrs["schema"]`` (None for other datasets)."""
    return StoreSchema.from_json(ds.attrs["schema"]) if "schema" in ds.attrs else None


def _store_chunks(ds) -> dict:
    """The store's own chunk shape per dimension (the shards of a sharded store: what one file holds)."""
    for name in ds.data_vars:
        chunks = ds[name].encoding.get("shards") or ds[name].encoding.get("chunks") or ds[name].encoding.get("preferred_chunks")
        if isinstance(chunks, dict):
            return dict(chunks)
        if chunks is not None and len(chunks) == ds[name].ndim:
            return dict(zip(ds[name].dims, chunks))
    return {}


def ensemble_chunks(sizes: dict, store_chunks: dict, chunk_bytes: int = 64 << 20, itemsize: int = 4) -> dict:
    """Dask chunks spanning all members over a tile of (start dates, leads, lat rows, lon) of about
    ``chunk_bytes``; leads follow the store's lead chunk, the tile grows in whole store chunks.

    >>> ensemble_chunks({"member": 7424, "init_time": 2, "lead_time": 8, "lat": 721, "lon": 1440},
    ...                 {"member": 1, "init_time": 1, "lead_time": 1, "lat": 721, "lon": 1440}, 64 << 20)
    {'member': -1, 'init_time': 1, 'lead_time': 1, 'lat': 1, 'lon': 1440}
    """
    m, nlat, nlon = sizes["member"], sizes["lat"], sizes["lon"]
    lead_chunk = int(store_chunks.get("lead_time", sizes["lead_time"]) or sizes["lead_time"])
    per_row = m * nlon * itemsize
    lead = lead_chunk
    while lead > 1 and per_row * lead > chunk_bytes:
        lead = max(1, lead // 2)
    rows = int(max(1, min(nlat, chunk_bytes // (per_row * lead))))
    store_rows = int(store_chunks.get("lat", nlat) or nlat)
    if store_rows < nlat and rows > store_rows:
        rows = rows // store_rows * store_rows
    lon = nlon
    if rows == 1 and per_row * lead > chunk_bytes:
        lon = int(max(1, chunk_bytes // (m * lead * itemsize)))
    per_init = m * lead * rows * lon * itemsize
    init = int(max(1, min(sizes["init_time"], chunk_bytes // per_init))) if rows == nlat and lon == nlon else 1
    return {"member": -1, "init_time": init, "lead_time": lead, "lat": rows, "lon": lon}


def _decode_chunks(ds) -> dict:
    """The store's unit of decoding per dimension (the inner chunks of a sharded store)."""
    for name in ds.data_vars:
        chunks = ds[name].encoding.get("chunks")
        if chunks is not None and len(chunks) == ds[name].ndim:
            return dict(zip(ds[name].dims, chunks))
    return {}


def read_chunks(sizes: dict, decode: dict, tiles: dict, chunk_bytes: int = 64 << 20, itemsize: int = 4) -> dict | None:
    """Chunks to read a store in when the scoring ``tiles`` (:func:`ensemble_chunks`) would cut through its
    stored chunks (``decode``: a stored chunk spanning several tiles would be decoded once per tile): whole
    stored chunks along lead time, lat and lon, as many members as fit ``chunk_bytes``. ``None`` when the
    tiles hold whole stored chunks.

    >>> read_chunks({"member": 128, "init_time": 2, "lead_time": 9, "lat": 181, "lon": 360},
    ...             {"member": 1, "init_time": 1, "lead_time": 3, "lat": 181, "lon": 360},
    ...             {"member": -1, "init_time": 1, "lead_time": 9, "lat": 40, "lon": 360})
    {'member': 85, 'init_time': 1, 'lead_time': 3, 'lat': 181, 'lon': 360}
    """
    dims = ("lead_time", "lat", "lon")
    if not decode or all(tiles[d] >= sizes[d] or tiles[d] % int(decode.get(d) or 1) == 0 for d in dims):
        return None
    whole = {d: min(sizes[d], int(decode.get(d) or sizes[d])) for d in dims}
    member = int(decode.get("member") or 1)
    per_member = whole["lead_time"] * whole["lat"] * whole["lon"] * itemsize
    members = max(member, min(sizes["member"], chunk_bytes // per_member) // member * member)
    return {"member": members, "init_time": 1, **whole}


def open_ensemble(path, chunk_bytes: int = 64 << 20, dims: dict | None = None) -> xr.Dataset:
    """Open a store lazily in Dask chunks from :func:`ensemble_chunks` (all members per chunk).

    The public name is :func:`forecast.open_store` (see there). Reads the consolidated metadata when the
    store has it (stores written before it was added are read group by group); string coordinates come
    back as ``str`` objects and the store's on-disk encoding (shards, codecs) is dropped, so a selection
    writes to a new Zarr store or NetCDF file as it is.

    ``dims`` names the dimensions of a store another tool wrote (the system's name -> the store's, e.g.
    ``{"member": "ensemble", "init_time": "time"}``); the store is returned with the system's names, its
    variables in ERA5 layout names (``geopotential`` over ``level``) as our channels.
    A path that is no Zarr store, or a store without a needed dimension, raises a ``StoreError`` naming it.
    """
    plain, renames = _open_foreign(path, dims)
    store_chunks = {renames.get(d, d): n for d, n in _store_chunks(plain).items()}
    plain = plain.rename(renames)
    schema = _schema(plain)
    if "lead_time" not in store_chunks and schema is not None:
        store_chunks["lead_time"] = schema.store_layout.lead_chunk
    chunks = ensemble_chunks(dict(plain.sizes), store_chunks, chunk_bytes)
    log.info("open %s: %d members, Dask chunks %s (store chunks %s)", path, plain.sizes["member"], chunks,
             store_chunks)
    theirs = {ours: theirs for theirs, ours in renames.items()}
    read = read_chunks(dict(plain.sizes), {renames.get(d, d): n for d, n in _decode_chunks(plain).items()}, chunks,
                       chunk_bytes)
    if read:  # tiles of the stored chunk's leads: a tile then needs few read chunks, and they are freed soon
        chunks = ensemble_chunks(dict(plain.sizes), {**store_chunks, "lead_time": read["lead_time"]}, chunk_bytes)
    opened = xr.open_zarr(str(path), consolidated=has_consolidated_metadata(path) if schema else None,
                          chunks={theirs.get(d, d): n for d, n in (read or chunks).items()})
    opened = opened.rename(renames)
    if read:  # read whole stored chunks, then regroup in memory: a chunk decoded once, not once per tile it touches
        log.info("open %s: read in chunks %s, regrouped to the tiles", path, read)
        opened = opened.chunk(chunks)
    opened = opened if schema else verify.forecast_channels(opened)  # ERA5 layout names -> our channels
    return plain_strings(opened).drop_encoding()


def has_consolidated_metadata(path) -> bool:
    """Whether the Zarr v3 store at ``path`` carries consolidated metadata in its root ``zarr.json``."""
    from pathlib import Path

    try:
        return bool(json.loads((Path(path) / "zarr.json").read_text()).get("consolidated_metadata"))
    except (OSError, ValueError):
        return False



def _open_foreign(path, dims: dict | None):
    """The store opened without Dask, and the renames to the system's dimension names (checked)."""
    import warnings

    from forecast.store import StoreError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "failed to open consolidated metadata"
            plain = xr.open_zarr(str(path), consolidated=None, chunks=None)
    except Exception as error:  # zarr and xarray raise many types for what is not a store
        raise StoreError(f"{path} is not a readable Zarr store ({' '.join(str(error).split())})") from None
    try:
        renames = verify.forecast_renames(plain.dims, dims)
    except ValueError as error:
        raise StoreError(f"{path}: {error}") from None
    for role, kind in (("init_time", "M"), ("lead_time", "m")):
        name = next((theirs for theirs, ours in renames.items() if ours == role), role)
        if plain[name].dtype.kind != kind:
            raise StoreError(f"{path}: dimension {name!r} ({role}) holds {plain[name].dtype}, not "
                             f"{'datetimes' if kind == 'M' else 'time differences'}")
    return plain, renames


def open_truth(path) -> xr.Dataset:
    """The truth at ``path`` (Zarr store or netCDF file) opened lazily; its layout is read when it is scored
    (:func:`scoring_truth`). A path that is neither raises a ``DataError`` naming it."""
    from forecast.data import open_dataset

    return open_dataset(path)


# score -> (long_name, units): "channel" takes the channel's units, "channel^2" their square, else as written
SCORE_METADATA = {
    "crps": ("fair continuous ranked probability score", "channel"),
    "crps_standard": ("continuous ranked probability score of the empirical distribution", "channel"),
    "crps_by_init_time": ("fair CRPS per start date, global area-weighted mean", "channel"),
    "crps_skill_score": ("CRPS skill score against the truth's climatology", "1"),
    "ensemble_mean_rmse": ("root-mean-square error of the ensemble mean", "channel"),
    "ensemble_mean_bias": ("mean error of the ensemble mean", "channel"),
    "spread": ("ensemble spread (root of the mean unbiased member variance)", "channel"),
    "spread_skill_ratio": ("spread-skill ratio, exchangeable members (sqrt((M+1)/M) spread / RMSE)", "1"),
    "spread_skill_ratio_grouped": ("consistency ratio of a grouped (multi-checkpoint) ensemble, random-effects ANOVA",
                                   "1"),
    "within_group_variance": ("member variance within checkpoints (ANOVA)", "channel^2"),
    "between_group_variance": ("variance between checkpoints (ANOVA)", "channel^2"),
    "best_member_rmse": ("root-mean-square error of the best member", "channel"),
    "control_rmse": ("root-mean-square error of the control member", "channel"),
    "outlier_fraction": ("fraction of cases with the truth outside the ensemble range", "1"),
    "outlier_reliable_value_grouped": ("outlier fraction of a consistent grouped ensemble of this design", "1"),
    "rank_histogram": ("number of cases with the truth at each rank among the members", "1"),
    "rank_reliable_frequency_grouped": ("rank probabilities of a consistent grouped ensemble of this design", "1"),
    "sigma_exceedance_fraction": ("fraction of members beyond k standard deviations from the ensemble mean", "1"),
    "twcrps_above_q90": ("threshold-weighted CRPS above the truth's climatological 90th percentile", "channel"),
    "brier_score": ("Brier score of the event", "1"),
    "reliability_forecast_probability": ("mean forecast probability in the bin", "1"),
    "reliability_observed_frequency": ("observed frequency of the event in the bin", "1"),
    "reliability_count": ("number of cases in the bin", "1"),
    "exceedance_probability_map": ("probability of the event (first start date, last lead)", "1"),
    "efi_map": ("extreme forecast index (first start date, last lead)", "1"),
}


def describe_scores(result: xr.Dataset, channel_units: dict) -> xr.Dataset:
    """Give every score its own ``long_name`` and ``units`` (``1`` for ratios, counts and probabilities;
    the channel's units, or their square, when all channels share them; otherwise the ``channel_units``
    coordinate says them per channel)."""
    units = [channel_units.get(c, "") for c in result["channel"].values]
    shared = units[0] if len(set(units)) == 1 else None
    result = result.assign_coords(channel_units=("channel", units))
    for name, variable in result.data_vars.items():
        long_name, kind = SCORE_METADATA.get(name, (name.replace("_", " "), "1"))
        attrs = {k: v for k, v in variable.attrs.items() if k in ("reliable_value",)}
        attrs["long_name"] = long_name
        if kind.startswith("channel"):
            if shared is not None:
                attrs["units"] = shared if kind == "channel" else f"({shared})^2"
            else:
                attrs["units_per_channel"] = "channel_units" + ("" if kind == "channel" else ", squared")
        else:
            attrs["units"] = kind
        variable.attrs = attrs
    return result


def control_member(forecast: xr.Dataset) -> int | None:
    plan = json.loads(forecast.attrs.get("member_plan", "{}"))
    return 0 if plan.get("control") else None


def truth_climate(truth: xr.Dataset, forecast: xr.Dataset, time_dim: str = "time"):
    """Per-point event thresholds, EFI model climate and a climatological ensemble from the truth's own
    time axis (the truth's climate stands in for the model climate when there is no model climate)."""
    times = truth.sizes[time_dim]
    sample = truth.isel({time_dim: np.unique(np.linspace(0, times - 1, min(times, CLIMATE_SAMPLES)).astype(int))})
    sample = sample.chunk({time_dim: -1})
    levels = np.linspace(0.0, 1.0, EFI_LEVELS)
    thresholds = {}
    model_climate = {}
    for name in truth.data_vars:
        quantiles = verify.climatological_thresholds(truth[name].chunk({time_dim: -1}), levels, time_dim)
        model_climate[name] = quantiles
        thresholds[name] = {event: quantiles.sel(quantile=q, method="nearest", drop=True)
                            for event, (q, _) in EVENT_QUANTILES.items()}
    return thresholds, model_climate, sample


def scoring_truth(forecast: xr.Dataset, truth: xr.Dataset, regrid: bool = False, name: str = "truth"):
    """``(channels, truth at the valid times, truth fields on the forecast grid)`` for scoring.

    ``truth`` is any layout ``forecast run`` reads (``forecast.verify.forecast_truth``: the system's,
    WeatherBench2, ARCO-ERA5, CDS), covering the forecast's area and times or more; channels it lacks
    are left out with a warning; the fields keep the truth's whole time axis (its climate).
    """
    schema = _schema(forecast)
    fields = [v for v, da in forecast.data_vars.items() if set(verify.FORECAST_DIMS) <= set(da.dims)]
    order = list(schema.channels if schema else ()) + sorted(fields)  # the model's order first
    channels = [c for c in dict.fromkeys(order) if c in fields]
    if not channels:
        raise InputError(f"the forecast has no field with dimensions member, init_time, lead_time, lat, lon "
                         f"(variables {list(forecast.data_vars)})")
    on_grid = verify.forecast_truth(forecast[channels], truth, regrid, name)
    channels = [c for c in channels if c in on_grid.data_vars]
    # in the forecast's precision: a float64 copy of float32 fields scores exactly as the float32 original
    on_grid = on_grid[channels].assign({c: on_grid[c].astype(forecast[c].dtype) for c in channels})
    aligned = verify.valid_time_truth(forecast[channels], on_grid, name=name)
    if forecast.chunks:
        aligned = aligned.chunk({d: forecast.chunksizes[d] for d in aligned.dims if d in forecast.chunksizes})
    return channels, aligned, on_grid


def score_ensemble(forecast: xr.Dataset, truth: xr.Dataset, dims=SCORE_DIMS, regions=verify.REGIONS,
                   climate: bool = True, regrid: bool = False) -> xr.Dataset:
    """Lazy scores per ``(channel, lead_time, region)``.

    Fair and standard CRPS, CRPS skill score against the truth's climatology, ensemble-mean RMSE and
    bias, spread, spread-skill ratio, best-member RMSE, control RMSE (when the plan has a control),
    outlier fraction (attribute ``reliable_value``), threshold-weighted CRPS above the climatological
    90th percentile, Brier scores for the events in :data:`EVENT_QUANTILES` (``event``), the rank
    histogram (``rank``), members beyond k sigma (``k``), reliability diagrams (``event, bin``), and
    maps ``(channel, event, lat, lon)`` / ``(channel, lat, lon)`` of exceedance probability and EFI at
    the first start date and last lead. ``climate=False`` leaves out what needs the truth's climatology.
    ``truth`` is any layout :func:`scoring_truth` reads; ``regrid`` puts a truth on another grid on the
    forecast's (refused otherwise).
    """
    for region in _as_regions(regions) if regions else ():  # a box between two grid points averages nothing
        if not bool(region.mask(forecast["lat"], forecast["lon"]).any()):
            raise InputError(f"region {region.name!r} holds no point of the forecast's {forecast.sizes['lat']}x"
                             f"{forecast.sizes['lon']} grid; widen it")
    channels, aligned, truth = scoring_truth(forecast, truth, regrid)
    schema = _schema(forecast)
    dims = list(dims)
    control = control_member(forecast)
    m = forecast.sizes["member"]
    groups = "checkpoint" if "checkpoint" in forecast.coords and np.unique(forecast["checkpoint"].values).size > 1 else None
    if climate:
        thresholds, model_climate, sample = truth_climate(truth, forecast)
    per_channel = []
    for name in channels:
        f, y = forecast[name], aligned[name]
        events, tw, clim = None, None, None
        if climate:
            events = {e: (thresholds[name][e], above) for e, (_, above) in EVENT_QUANTILES.items()}
            tw = thresholds[name]["above_q90"]
            clim = sample[name].rename({"time": "climate_sample"}).drop_vars("climate_sample", errors="ignore")
        scores = channel_scores(f, y, dims, regions, events, tw, clim, control, groups,
                                rank_reference_members=GROUPED_RANK_REFERENCE_MEMBERS)
        if climate:
            first = f.isel(init_time=0, lead_time=-1, drop=True)
            scores["exceedance_probability_map"] = xr.concat(
                [verify.exceedance_probability(first, thresholds[name][e], above=EVENT_QUANTILES[e][1])
                 for e in EVENT_QUANTILES], dim=xr.DataArray(list(EVENT_QUANTILES), dims="event", name="event"))
            scores["efi_map"] = verify.extreme_forecast_index(first, model_climate[name])
        scores = {key: scores[key] for key in SCORE_ORDER if key in scores}
        ds = xr.Dataset(scores)
        ds = ds.drop_vars([c for c in ("valid_time", "member", "quantile", "init_time") if c in ds.coords and c not in ds.dims])
        per_channel.append(ds)
    result = xr.concat(per_channel, dim=xr.DataArray(channels, dims="channel", name="channel"), coords="minimal",
                       compat="override")
    result.attrs = {"members": int(m), "init_times": int(forecast.sizes["init_time"]),
                    "crps": "fair (Ferro 2014); crps_standard: empirical-distribution CRPS",
                    "averaged_over": ", ".join(dims) + " (area-weighted)",
                    "outlier_reliable_value": 2.0 / (m + 1),
                    "events": "; ".join(f"{e}: value {'>' if above else '<'} the truth's climatological {int(q * 100)}th "
                                        "percentile" for e, (q, above) in EVENT_QUANTILES.items()),
                    "maps": "first start date, last lead; EFI against the truth's climate"}
    schema = _schema(forecast)
    if schema is not None and "amplitude_calibration" in schema.attrs:
        result.attrs["amplitude_calibration"] = json.dumps(schema.attrs["amplitude_calibration"])
    if groups is not None:
        result.attrs["groups"] = f"{np.unique(forecast[groups].values).size} checkpoints (coordinate {groups!r})"
    for name in channels:
        result.attrs[f"units_{name}"] = forecast[name].attrs.get("units", "")
    return describe_scores(result, {name: forecast[name].attrs.get("units", "") for name in channels})

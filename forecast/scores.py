"""The standard score set for an ensemble store: per channel and lead time, over start dates and the globe."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from forecast import verify

SCORE_DIMS = ("init_time", "lat", "lon")


def open_ensemble(path, chunk_bytes: int = 128 << 20):
    """Open a store lazily in Dask chunks that hold all members, the store's chunk of leads, and as many
    start dates as fit in about ``chunk_bytes``."""
    ds = xr.open_zarr(str(path), consolidated=False, chunks=None)
    lead_chunk = json.loads(ds.attrs["schema"])["layout"]["lead_chunk"] if "schema" in ds.attrs else 1
    per_init = ds.sizes["member"] * lead_chunk * ds.sizes["lat"] * ds.sizes["lon"] * 4
    init_chunk = int(max(1, min(ds.sizes["init_time"], chunk_bytes // per_init)))
    chunks = {"member": -1, "init_time": init_chunk, "lead_time": lead_chunk, "lat": -1, "lon": -1}
    return xr.open_zarr(str(path), consolidated=False, chunks=chunks)


def control_member(forecast: xr.Dataset) -> int | None:
    plan = json.loads(forecast.attrs.get("member_plan", "{}"))
    return 0 if plan.get("control") else None


def score_ensemble(forecast: xr.Dataset, truth: xr.Dataset, dims=SCORE_DIMS) -> xr.Dataset:
    """Lazy scores ``(channel, lead_time)``: fair and standard CRPS, ensemble-mean RMSE, spread, spread-skill
    ratio, control RMSE (when the plan has a control) and the rank histogram ``(channel, lead_time, rank)``."""
    channels = [c for c in forecast.data_vars if c in truth.data_vars]
    if not channels:
        raise ValueError(f"truth shares no channel with the forecast ({list(forecast.data_vars)})")
    aligned = verify.align_truth(forecast[channels], truth[channels])
    aligned = aligned.chunk({d: forecast.chunksizes[d] for d in aligned.dims if d in forecast.chunksizes})
    control = control_member(forecast)
    per_channel = []
    for name in channels:
        f, y = forecast[name], aligned[name]
        scores = {
            "crps": verify.crps(f, y, dim=dims),
            "crps_standard": verify.crps(f, y, fair=False, dim=dims),
            "ensemble_mean_rmse": verify.ensemble_mean_rmse(f, y, dim=dims),
            "spread": verify.ensemble_spread(f.where(y.notnull()), dim=dims),
            "spread_skill_ratio": verify.spread_skill_ratio(f, y, dim=dims),
            "rank_histogram": verify.rank_histogram(f, y, dim=list(dims)),
        }
        if control is not None:
            error = (f.isel(member=control, drop=True) - y) ** 2
            scores["control_rmse"] = np.sqrt(verify._mean(error, list(dims)))
        per_channel.append(xr.Dataset(scores).drop_vars([c for c in ("valid_time", "member") if c in xr.Dataset(scores).coords]))
    result = xr.concat(per_channel, dim=xr.DataArray(channels, dims="channel", name="channel"))
    result.attrs = {"members": int(forecast.sizes["member"]), "init_times": int(forecast.sizes["init_time"]),
                    "crps": "fair (Ferro 2014); crps_standard: empirical-distribution CRPS",
                    "averaged_over": ", ".join(dims) + " (area-weighted)"}
    for name in channels:
        result.attrs[f"units_{name}"] = forecast[name].attrs.get("units", "")
    return result

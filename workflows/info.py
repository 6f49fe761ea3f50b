"""``forecast info`` and ``forecast plot``: what a store holds, and quick plots of it.

:func:`store_info` reads the store's schema and manifest only (no values): members, checkpoints, start
dates, leads, channels, how many members are finished per start date (complete or partial), the size on
disk and the compression.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _disk_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # a file removed while we walk
                pass
    return total


def human_bytes(n: float) -> str:
    """A byte count in binary units.

    >>> human_bytes(1536), human_bytes(3 * 2**30)
    ('1.5 KiB', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def store_info(path) -> dict:
    """Everything ``forecast info`` prints, as JSON-able values. Raises ``StoreError`` for a path that is
    not an ensemble store."""
    from forecast.store import EnsembleStore

    store = EnsembleStore.open(path)
    schema = store.schema
    done = np.asarray(store.done[:])
    finished = {init: int(done[i].sum()) for i, init in enumerate(schema.init_times)}
    statistics = schema.statistics or {}
    statistics_done = [store.statistics_done(i) for i in range(len(schema.init_times))]
    members = schema.members
    layout = schema.layout
    complete = all(n == schema.n_members for n in finished.values()) and all(statistics_done)
    raw = schema.n_members * len(schema.init_times) * len(schema.lead_hours) * len(schema.channels) \
        * schema.grid["nlat"] * schema.grid["nlon"] * 4
    on_disk = _disk_bytes(Path(path))
    return {
        "store": str(path),
        "complete": complete,
        "members": schema.n_members,
        "members_finished": finished,
        "statistics_finalised": dict(zip(schema.init_times, statistics_done)) if statistics.get("channels") else {},
        "checkpoints": ([c.get("name") for c in schema.attrs.get("checkpoints", [])]
                        or sorted(set(members.get("checkpoint", [])))),
        "model_families": sorted(set(members.get("model_family", []))),
        "init_times": list(schema.init_times),
        "lead_hours": list(schema.lead_hours),
        "channels": list(schema.channels),
        "statistics_channels": list(statistics.get("channels", [])),
        "grid": schema.grid,
        "size_bytes": on_disk,
        "uncompressed_bytes": raw,
        "compression": {"codec": f"zstd level {layout.get('zstd_level', 3)}",
                        "bitround_keepbits": layout.get("keepbits", {}),
                        "shard": {"members": layout.get("shard_members"), "leads": layout.get("lead_chunk")}},
        "code_version": str(dict(store.group.attrs).get("code_version", "")),
    }


def _span(values: list, fmt=str) -> str:
    if not values:
        return "none"
    if len(values) <= 4:
        return ", ".join(fmt(v) for v in values)
    return f"{fmt(values[0])} .. {fmt(values[-1])} ({len(values)})"


def describe_store(info: dict) -> str:
    """The few lines ``forecast info`` prints for :func:`store_info`'s result."""
    n, dates = info["members"], info["init_times"]
    finished = info["members_finished"]
    state = "complete" if info["complete"] else "PARTIAL"
    lines = [f"{info['store']}: {state}, {sum(finished.values())}/{n * len(dates)} member runs finished"]
    for init, count in finished.items():
        tail = "" if count == n else f"  ({n - count} to run)"
        stats = info["statistics_finalised"].get(init)
        tail += "" if stats is None or stats else "  (statistics not finalised)"
        lines.append(f"  {init}: {count}/{n} members{tail}")
    ratio = info["uncompressed_bytes"] / info["size_bytes"] if info["size_bytes"] else float("nan")
    keepbits = info["compression"]["bitround_keepbits"]
    lines += [
        f"members: {n} from {len(info['checkpoints'])} checkpoint(s) {_span(info['checkpoints'])}"
        + (f" ({', '.join(info['model_families'])})" if info["model_families"] else ""),
        f"start dates: {_span(dates)}",
        f"leads: {_span(info['lead_hours'], lambda h: f'{h} h')}",
        f"channels: {', '.join(info['channels']) or 'none'}"
        + (f"; statistics of {', '.join(info['statistics_channels'])}" if info["statistics_channels"] else ""),
        f"grid: {info['grid']['nlat']} x {info['grid']['nlon']} {info['grid'].get('kind', '')}".rstrip(),
        f"size on disk: {human_bytes(info['size_bytes'])} (member fields {human_bytes(info['uncompressed_bytes'])} "
        + (f"uncompressed, ratio {ratio:.2f})" if info["complete"] else "uncompressed when complete)"),
        f"compression: {info['compression']['codec']}"
        + (f", BitRound keepbits {keepbits}" if keepbits else ", lossless")
        + "; shards of {members} member(s) x {leads} lead(s)".format(**info["compression"]["shard"]),
    ]
    return "\n".join(lines)


PLOT_SUFFIXES = (".png", ".pdf", ".svg")


def plot_store(path, plume: str | None = None, channel: str | None = None, init_time: str | None = None,
               lead: float | None = None, out: str | None = None) -> list[Path]:
    """``forecast plot``: a plume at ``plume`` (``"LAT,LON"``), else a map of the ensemble mean and
    spread. Returns the PNG files written."""
    import forecast
    from forecast.verify import plots
    from forecast.files import output_file
    from workflows.config import ConfigError

    if out:
        out = output_file(out, "--out", PLOT_SUFFIXES)
    ds = forecast.open_store(path)
    channels = [c for c in ds.data_vars if "member" in ds[c].dims]
    channel = channel or (channels[0] if channels else None)
    if channel not in channels:
        raise ConfigError(f"channel {channel!r} is not a member field of {path}; it has {channels}")
    if init_time is not None:
        try:
            when = np.datetime64(init_time, "ns")
        except ValueError:
            when = np.datetime64("NaT")
        if np.isnat(when) or when not in ds["init_time"].values:
            raise ConfigError(f"--init-time {init_time} is not a start date of {path} "
                              f"({', '.join(np.datetime_as_string(ds['init_time'].values, 'h'))})")
    ds = ds.sel(init_time=when) if init_time is not None else ds.isel(init_time=0)
    base = Path(path).with_suffix("")
    if plume:
        try:
            lat, lon = (float(v) for v in plume.split(","))
        except ValueError:
            raise ConfigError(f"--plume must be LAT,LON in degrees, e.g. 52.5,13.4; got {plume!r}") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 360):
            raise ConfigError(f"--plume {plume}: latitude must lie in -90..90 and longitude in -180..360 degrees")
        target = Path(out) if out else Path(f"{base}-plume-{channel}.png")
        return [plots.plot_plume(plots.plume(ds, lat=lat, lon=lon, channel=channel), target)]
    hours = ds["lead_time"].values / np.timedelta64(1, "h")
    if lead is not None and lead not in hours:
        raise ConfigError(f"--lead {lead:g} is not a lead time of {path} (hours: {', '.join(f'{h:g}' for h in hours)})")
    step = ds.isel(lead_time=int(np.flatnonzero(hours == lead)[0]) if lead is not None else -1)
    target = Path(out) if out else Path(f"{base}-map-{channel}.png")
    field = step[channel]
    return [plots.plot_ensemble_maps(field.mean("member"), field.std("member"), target)]

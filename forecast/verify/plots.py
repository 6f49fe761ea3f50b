"""PNG plots of scores (matplotlib, headless): scores vs lead per channel and region, rank histograms,
reliability diagrams with their sharpness, and maps of exceedance probability and EFI; and of a store's
members: maps of the ensemble mean and spread, and plumes (every member at one point against lead time).

Maps label latitude and longitude in degrees and say the date, the lead and the units. Coastlines are
drawn on request (``coastlines=True``, for data on the Earth: the embedded planet has none) when the
optional ``cartopy`` extra and its Natural Earth files are installed; nothing is downloaded, and without
them the map has no coastlines and the log says so once.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Drawing time goes into ticks and text, not lines: a fixed title position (the automatic one measures
# every axis' tick labels), grid lines set once by style rather than per axis (which rebuilds the ticks),
# and shared axes whose inner tick labels are not drawn. rc_context restores the user's settings.
STYLE = {"axes.titley": 1.0, "axes.titlepad": 4.0}
GRID = {"axes.grid": True, "grid.alpha": 0.3}


def styled(**rc):
    """Decorator: draw a plot function under :data:`STYLE` (and the extra ``rc`` settings, e.g. :data:`GRID`)."""
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            import matplotlib

            with matplotlib.rc_context({**STYLE, **rc}):
                return function(*args, **kwargs)
        return wrapper
    return decorate


def _lead_hours(scores) -> np.ndarray:
    return (scores["lead_time"].values / np.timedelta64(1, "h")).astype(float)


def figure_grid(rows: int, cols: int, width: float = 3.6, height: float = 2.8, sharex: bool | str = False,
                sharey: bool | str = False):
    """A headless figure of ``rows`` x ``cols`` panels (the one plot set-up); finish it with :func:`save_figure`.

    Parameters
    ----------
    rows, cols : int
        Panels down and across.
    width, height : float
        Size of one panel in inches.
    sharex, sharey : bool or str
        Shared axes as in ``matplotlib.pyplot.subplots`` (``True``, ``"row"``, ``"col"``): only the outer
        panels draw tick labels.

    Returns
    -------
    tuple
        ``(pyplot, figure, axes)``, ``axes`` a 2-d array of ``rows`` x ``cols``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharex=sharex,
                             sharey=sharey)
    return plt, fig, axes


def _panels(n: int):
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    plt, fig, axes = figure_grid(rows, cols, 4, 3.2)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return plt, fig, axes.ravel()


def save_figure(plt, fig, path: Path, title: str, left: float = 0.7, bottom: float = 0.5, close: bool = True,
                hspace: float = 0.5) -> Path:
    """Title, fixed margins (``left`` and ``bottom`` inches; ``hspace`` between rows, a fraction of a
    panel), PNG at 90 dpi, and the figure closed (unless ``close`` is false)."""
    fig.suptitle(title)
    width, height = fig.get_size_inches()  # fixed margins in inches: tight_layout costs as much as drawing
    fig.subplots_adjust(left=left / width, right=1 - 0.2 / width, bottom=bottom / height, top=1 - 0.6 / height,
                        wspace=0.3, hspace=hspace)
    fig.savefig(path, dpi=90)
    if close:
        plt.close(fig)
    return path


def _regions(scores) -> list:
    return list(scores["region"].values) if "region" in scores.dims else [None]


@styled(**GRID)
def plot_vs_lead(scores, variables: dict, path: Path, title: str, reference: float | None = None) -> Path:
    """One panel per channel (rows) and region (columns); ``variables`` maps score names to legend labels.
    The panels share the lead-time axis (labelled on the bottom row); each keeps its own score axis."""
    return plot_vs_lead_figures(scores, [(variables, path, title, reference)])[0]


@styled(**GRID)
def plot_vs_lead_figures(scores, figures: list) -> list[Path]:
    """Several :func:`plot_vs_lead` figures, ``figures`` a list of ``(variables, path, title, reference)``.

    They are drawn one after the other on one set of panels, each figure's lines replacing the last's:
    building the panels and their ticks costs more than drawing the lines, and is done once.
    """
    channels = list(scores["channel"].values)
    regions = _regions(scores)
    plt, fig, axes = figure_grid(len(channels), len(regions), sharex=True)
    for ax in axes[-1]:
        ax.set_xlabel("lead time (h)")
    lead = _lead_hours(scores)
    paths = []
    for variables, path, title, reference in figures:
        present = {name: scores[name] for name in variables if name in scores}
        for r, channel in enumerate(channels):
            units = scores.attrs.get(f"units_{channel}", "")
            head = f"{channel} [{units}]" if units and reference is None else str(channel)
            by_channel = {name: values.sel(channel=channel) for name, values in present.items()}
            for c, region in enumerate(regions):
                ax = axes[r, c]
                for line in list(ax.lines):  # the previous figure's
                    line.remove()
                ax.set_prop_cycle(None)  # the same colours as on a fresh panel
                for name, values in by_channel.items():
                    if region is not None and "region" in values.dims:
                        values = values.sel(region=region)
                    ax.plot(lead, values.values, marker="o", ms=3, label=variables[name])
                if reference is not None:
                    ax.axhline(reference, color="grey", lw=0.8, ls="--")
                ax.relim()
                ax.autoscale_view(scalex=False)  # lead, shared: scaled once for all panels when drawn
                ax.set_title(head if region is None else f"{head}, {region}", fontsize=9)
        axes[0, 0].legend(fontsize=7)
        paths.append(save_figure(plt, fig, path, title, close=False, hspace=0.35))  # no inner lead labels
    plt.close(fig)
    return paths


def _lead_picks(lead: np.ndarray, count: int) -> list[int]:
    return sorted(set(np.linspace(1 if len(lead) > 1 else 0, len(lead) - 1, count).astype(int)))


def plot_rank_histograms(scores, path: Path, leads: int = 3, region: str = "global") -> Path:
    """Normalised rank histograms for a few leads per channel; a reliable ensemble is flat at 1."""
    channels = list(scores["channel"].values)
    plt, fig, axes = _panels(len(channels))
    lead = _lead_hours(scores)
    histograms = scores["rank_histogram"]
    if "region" in histograms.dims:
        histograms = histograms.sel(region=region)
    for ax, channel in zip(axes, channels):
        for k in _lead_picks(lead, leads):
            counts = histograms.sel(channel=channel).isel(lead_time=k).values.astype(float)
            total = counts.sum()
            if total > 0:
                ax.step(np.arange(len(counts)), counts * len(counts) / total, where="mid", label=f"{lead[k]:.0f} h")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(channel)
        ax.set_xlabel("rank of the truth")
    axes[0].legend(fontsize=8)
    return save_figure(plt, fig, path, f"rank histograms, {region} (count x bins / total)")


@styled()
def plot_reliability(scores, path: Path, leads: int = 3) -> Path:
    """Reliability diagrams: observed frequency vs forecast probability per channel (rows) and event
    (columns) for a few leads; the diagonal is perfect reliability. The panels share both axes (0 to 1,
    labelled on the outer panels)."""
    channels = list(scores["channel"].values)
    events = list(scores["event"].values)
    plt, fig, axes = figure_grid(len(channels), len(events), 3.4, 3.2, sharex=True, sharey=True)
    lead = _lead_hours(scores)
    picks = _lead_picks(lead, leads)
    names = ["reliability_forecast_probability", "reliability_observed_frequency"]
    names += ["reliability_count"] if "reliability_count" in scores else []
    table = {name: scores[name].isel(lead_time=picks).transpose("channel", "event", "lead_time", ...).values
             for name in names}
    for r, channel in enumerate(channels):
        for c, event in enumerate(events):
            ax = axes[r, c]
            for j, k in enumerate(picks):
                p, o = table[names[0]][r, c, j], table[names[1]][r, c, j]
                ok = np.isfinite(p) & np.isfinite(o)
                line, = ax.plot(p[ok], o[ok], marker="o", ms=3, label=f"{lead[k]:.0f} h")
                if len(names) > 2:
                    _sharpness(ax, table[names[2]][r, c, j].astype(float), line.get_color())
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            ax.set_title(f"{channel}, {event}", fontsize=9)
    axes[0, 0].set_xlim(0, 1)
    axes[0, 0].set_ylim(0, 1)
    for ax in axes[-1]:
        ax.set_xlabel("forecast probability")
    for ax in axes[:, 0]:
        ax.set_ylabel("observed frequency")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    return save_figure(plt, fig, path, "reliability (global); insets: sharpness (log count per bin)")


def _sharpness(ax, counts: np.ndarray, color) -> None:
    """Sharpness: how often each forecast probability bin was issued, as a step histogram in an inset
    at the upper left, where a reliability curve seldom goes (log counts, decades marked; a sharp
    ensemble fills the end bins)."""
    from matplotlib.ticker import LogLocator, NullLocator

    inset = getattr(ax, "_sharpness_inset", None)
    if inset is None:
        inset = ax.inset_axes([0.1, 0.6, 0.38, 0.33])
        inset.set_yscale("log")
        inset.set_xlim(0, 1)
        inset.tick_params(labelsize=5, length=2, which="both")
        inset.set_xticks([0, 0.5, 1])
        inset.yaxis.set_major_locator(LogLocator(numticks=3))
        inset.yaxis.set_minor_locator(NullLocator())  # unlabelled minor ticks cost as much as the rest of the inset
        ax._sharpness_inset = inset
    edges = np.linspace(0.0, 1.0, len(counts) + 1)
    inset.stairs(np.where(counts > 0, counts, np.nan), edges, color=color, lw=0.8)


@styled(**{"xtick.labelsize": 7, "ytick.labelsize": 7})
def plot_maps(scores, path: Path) -> Path:
    """Maps per channel (rows): exceedance probability for each event, then the EFI. The panels share
    latitude and longitude (labelled on the outer panels); each column has one colour scale, drawn
    under it."""
    channels = list(scores["channel"].values)
    events = list(scores["event"].values) if "exceedance_probability_map" in scores else []
    columns = [("exceedance_probability_map", e, f"P({e})", "viridis", (0, 1)) for e in events]
    columns += [("efi_map", None, "EFI", "RdBu_r", (-1, 1))] if "efi_map" in scores else []
    plt, fig, axes = figure_grid(len(channels), max(len(columns), 1), 4.2, 2.6, sharex=True, sharey=True)
    lon, lat = scores["lon"].values, scores["lat"].values
    for c, (name, event, label, cmap, limits) in enumerate(columns):
        fields = scores[name] if event is None else scores[name].sel(event=event)
        fields = fields.transpose("channel", "lat", "lon").values
        for r, channel in enumerate(channels):
            ax = axes[r, c]
            mesh = ax.pcolormesh(lon, lat, fields[r], cmap=cmap, vmin=limits[0], vmax=limits[1], shading="nearest")
            ax.set_title(f"{channel}: {label}", fontsize=9)
        bar = fig.colorbar(mesh, cax=axes[-1, c].inset_axes([0.1, -0.36, 0.8, 0.07]), orientation="horizontal",
                           ticks=np.linspace(limits[0], limits[1], 5))
        bar.set_label(f"{label} (1)", fontsize=8)
    degree_axes(axes[0, 0], lat, lon)  # shared: the ticks and labels of one are those of all
    when = [f"start {scores.attrs['maps_init_time']}"] if "maps_init_time" in scores.attrs else []
    when += [f"lead {_lead_hours(scores)[-1]:g} h"] if "lead_time" in scores.coords else []
    return save_figure(plt, fig, path, f"{scores.attrs.get('maps', 'maps')} ({', '.join(when)})" if when
                       else scores.attrs.get("maps", "maps"), bottom=1.2)


# -- maps and plumes of a store's members ---------------------------------------------------------------
def degree_axes(ax, lat: np.ndarray, lon: np.ndarray) -> None:
    """Latitude and longitude ticks in degrees (``30N``, ``120E``) over the grid's extent."""
    ax.set_xlim(float(np.min(lon)), float(np.max(lon)))
    ax.set_ylim(float(np.min(lat)), float(np.max(lat)))
    span = float(np.max(lon) - np.min(lon))
    step = 60 if span > 180 else 30 if span > 60 else 10
    ax.set_xticks(np.arange(np.ceil(np.min(lon) / step) * step, np.max(lon) + 1e-9, step))
    ax.set_yticks(np.arange(np.ceil(np.min(lat) / 30) * 30, np.max(lat) + 1e-9, 30))
    ax.set_xticklabels([longitude_label(x) for x in ax.get_xticks()], fontsize=7)
    ax.set_yticklabels([latitude_label(y) for y in ax.get_yticks()], fontsize=7)


def longitude_label(lon: float) -> str:
    """A tick label for a longitude in degrees east (any convention).

    >>> longitude_label(300.0), longitude_label(90.0), longitude_label(0.0), longitude_label(180.0)
    ('60W', '90E', '0', '180')
    """
    lon = (float(lon) + 180.0) % 360.0 - 180.0
    if abs(lon) < 1e-9 or abs(abs(lon) - 180.0) < 1e-9:
        return f"{abs(lon):.0f}"
    return f"{abs(lon):.0f}{'E' if lon > 0 else 'W'}"


def latitude_label(lat: float) -> str:
    """A tick label for a latitude in degrees north.

    >>> latitude_label(-30.0), latitude_label(0.0)
    ('30S', '0')
    """
    return "0" if abs(lat) < 1e-9 else f"{abs(lat):.0f}{'N' if lat > 0 else 'S'}"


def _is_global(lat: np.ndarray, lon: np.ndarray) -> bool:
    return float(np.ptp(lat)) > 150 and float(np.ptp(lon)) > 300


def natural_earth_coastline() -> Path | None:
    """The 110 m Natural Earth coastline shapefile of an installed ``cartopy``, if present on disk
    (cartopy's ``pre_existing_data_dir`` or ``data_dir``); never downloads."""
    try:
        import cartopy
    except ImportError:
        return None
    relative = Path("shapefiles", "natural_earth", "physical", "ne_110m_coastline.shp")
    for key in ("pre_existing_data_dir", "data_dir"):
        folder = cartopy.config.get(key)
        if folder and (Path(folder) / relative).is_file():
            return Path(folder) / relative
    return None


def draw_coastlines(ax, lat: np.ndarray, lon: np.ndarray) -> bool:
    """Coastlines on a plain lon/lat axis (0..360 east) from Natural Earth through cartopy's shapefile
    reader. Returns whether they were drawn; without cartopy or its files, or on a regional grid, it logs
    one line and draws nothing."""
    shapefile = natural_earth_coastline() if _is_global(lat, lon) else None
    if shapefile is None:
        log.info("plot: no coastlines (%s)", "grid is not global" if not _is_global(lat, lon) else
                 "install the 'maps' extra: cartopy with its Natural Earth files")
        return False
    from cartopy.io.shapereader import Reader

    for geometry in Reader(str(shapefile)).geometries():
        for line in getattr(geometry, "geoms", [geometry]):
            x, y = np.asarray(line.coords).T
            x = np.mod(x, 360.0)
            breaks = np.flatnonzero(np.abs(np.diff(x)) > 180) + 1  # split where the line crosses 0 E
            for xs, ys in zip(np.split(x, breaks), np.split(y, breaks)):
                ax.plot(xs, ys, color="black", lw=0.5)
    return True


def _when(field) -> str:
    parts = []
    if "init_time" in field.coords and field["init_time"].size == 1:
        parts.append(f"start {np.datetime_as_string(field['init_time'].values, 'h')}")
    if "lead_time" in field.coords and field["lead_time"].size == 1:
        hours = field["lead_time"].values / np.timedelta64(1, "h")
        parts.append(f"lead {hours:g} h")
    if "valid_time" in field.coords and field["valid_time"].size == 1:
        parts.append(f"valid {np.datetime_as_string(field['valid_time'].values, 'h')}")
    return ", ".join(parts)


def plot_ensemble_maps(mean, spread, path: Path, coastlines: bool = False) -> Path:
    """Maps of the ensemble mean and spread of one channel at one start date and lead (DataArrays
    ``(lat, lon)``); the title names the channel, units, start date, lead and valid time."""
    plt, fig, axes = figure_grid(1, 2, 5.2, 3.2)
    lat, lon = mean["lat"].values, mean["lon"].values
    units = mean.attrs.get("units", "")
    name = mean.attrs.get("long_name", mean.name)
    for ax, field, label, cmap in ((axes[0, 0], mean, "ensemble mean", "viridis"),
                                   (axes[0, 1], spread, "ensemble spread (std)", "magma")):
        mesh = ax.pcolormesh(lon, lat, field.transpose("lat", "lon").values, cmap=cmap, shading="nearest")
        fig.colorbar(mesh, ax=ax, shrink=0.8, label=units)
        ax.set_title(label, fontsize=9)
        degree_axes(ax, lat, lon)
        if coastlines:
            draw_coastlines(ax, lat, lon)
    return save_figure(plt, fig, path, f"{name} [{units}], {_when(mean)}")


def plume(ds, lat: float, lon: float, channel: str):
    """Every member of ``channel`` at the grid point nearest ``(lat, lon)`` against lead time: a
    DataArray ``(member, lead_time)`` (one start date: select it first, else the first is taken).
    ``lon`` may be given from -180 to 180; the store's longitudes are 0..360 east.

    >>> from forecast.verify.mock import mock_ensemble
    >>> f, _ = mock_ensemble(members=5, leads=3)
    >>> plume(f, lat=45.0, lon=-74.0, channel="t2m").dims
    ('member', 'lead_time')
    """
    from forecast.cf import longitude_360

    field = ds[channel]
    if "init_time" in field.dims:
        field = field.isel(init_time=0)
    point = field.sel(lat=lat, lon=longitude_360(lon), method="nearest")
    point.attrs = dict(ds[channel].attrs)
    point.attrs["requested_point"] = f"{lat:g}, {lon:g}"
    return point.transpose("member", "lead_time").load()


def plot_plume(point, path: Path) -> Path:
    """A plume (meteogram) from :func:`plume`: thin lines per member, the ensemble mean, and the 10-90 %
    range shaded, against lead time; the title names the point, the start date and the units."""
    plt, fig, axes = figure_grid(1, 1, 6.4, 4.0)
    ax = axes[0, 0]
    hours = point["lead_time"].values / np.timedelta64(1, "h")
    values = point.values
    for row in values:
        ax.plot(hours, row, color="tab:blue", lw=0.6, alpha=0.35)
    ax.fill_between(hours, np.nanquantile(values, 0.1, axis=0), np.nanquantile(values, 0.9, axis=0),
                    color="tab:orange", alpha=0.25, label="10-90 %")
    ax.plot(hours, np.nanmean(values, axis=0), color="black", lw=1.6, label="ensemble mean")
    ax.set_xlabel("lead time (h)")
    units = point.attrs.get("units", "")
    ax.set_ylabel(f"{point.name} [{units}]")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    where = f"{latitude_label(float(point['lat']))} {longitude_label(float(point['lon']))}"
    start = (f", start {np.datetime_as_string(point['init_time'].values, 'h')}"
             if "init_time" in point.coords and point["init_time"].size == 1 else "")
    finished = int(np.isfinite(values).all(axis=1).sum())
    return save_figure(plt, fig, path, f"{point.name} [{units}] at {where}{start}\n(grid point nearest "
                       f"{point.attrs.get('requested_point', '')}; {finished} of {values.shape[0]} members)", left=1.0)

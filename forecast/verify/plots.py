"""PNG plots of scores (matplotlib, headless): scores vs lead per channel and region, rank histograms,
reliability diagrams, and maps of exceedance probability and EFI."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _lead_hours(scores) -> np.ndarray:
    return (scores["lead_time"].values / np.timedelta64(1, "h")).astype(float)


def figure_grid(rows: int, cols: int, width: float = 3.6, height: float = 2.8):
    """A headless figure of ``rows`` x ``cols`` panels (the one plot set-up); finish it with :func:`save_figure`.

    Parameters
    ----------
    rows, cols : int
        Panels down and across.
    width, height : float
        Size of one panel in inches.

    Returns
    -------
    tuple
        ``(pyplot, figure, axes)``, ``axes`` a 2-d array of ``rows`` x ``cols``.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    return plt, fig, axes


def _panels(n: int):
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    plt, fig, axes = figure_grid(rows, cols, 4, 3.2)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return plt, fig, axes.ravel()


def save_figure(plt, fig, path: Path, title: str) -> Path:
    """Title, fixed margins, PNG at 90 dpi, and the figure closed."""
    fig.suptitle(title)
    width, height = fig.get_size_inches()  # fixed margins in inches: tight_layout costs as much as drawing
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.2 / width, bottom=0.5 / height, top=1 - 0.6 / height,
                        wspace=0.3, hspace=0.5)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _regions(scores) -> list:
    return list(scores["region"].values) if "region" in scores.dims else [None]


def plot_vs_lead(scores, variables: dict, path: Path, title: str, reference: float | None = None) -> Path:
    """One panel per channel (rows) and region (columns); ``variables`` maps score names to legend labels."""
    channels = list(scores["channel"].values)
    regions = _regions(scores)
    plt, fig, axes = figure_grid(len(channels), len(regions))
    lead = _lead_hours(scores)
    for r, channel in enumerate(channels):
        for c, region in enumerate(regions):
            ax = axes[r, c]
            for name, label in variables.items():
                if name in scores:
                    values = scores[name].sel(channel=channel)
                    if region is not None and "region" in values.dims:
                        values = values.sel(region=region)
                    ax.plot(lead, values.values, marker="o", ms=3, label=label)
            if reference is not None:
                ax.axhline(reference, color="grey", lw=0.8, ls="--")
            units = scores.attrs.get(f"units_{channel}", "")
            head = f"{channel} [{units}]" if units and reference is None else str(channel)
            ax.set_title(head if region is None else f"{head}, {region}", fontsize=9)
            ax.set_xlabel("lead time (h)")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    return save_figure(plt, fig, path, title)


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


def plot_reliability(scores, path: Path, leads: int = 3) -> Path:
    """Reliability diagrams: observed frequency vs forecast probability per channel (rows) and event
    (columns) for a few leads; the diagonal is perfect reliability."""
    channels = list(scores["channel"].values)
    events = list(scores["event"].values)
    plt, fig, axes = figure_grid(len(channels), len(events), 3.4, 3.2)
    lead = _lead_hours(scores)
    for r, channel in enumerate(channels):
        for c, event in enumerate(events):
            ax = axes[r, c]
            for k in _lead_picks(lead, leads):
                sel = dict(channel=channel, event=event)
                p = scores["reliability_forecast_probability"].sel(sel).isel(lead_time=k).values
                o = scores["reliability_observed_frequency"].sel(sel).isel(lead_time=k).values
                ok = np.isfinite(p) & np.isfinite(o)
                ax.plot(p[ok], o[ok], marker="o", ms=3, label=f"{lead[k]:.0f} h")
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"{channel}, {event}", fontsize=9)
            ax.set_xlabel("forecast probability")
            ax.set_ylabel("observed frequency")
    axes[0, 0].legend(fontsize=7)
    return save_figure(plt, fig, path, "reliability diagrams (global)")


def plot_maps(scores, path: Path) -> Path:
    """Maps per channel (rows): exceedance probability for each event, then the EFI."""
    channels = list(scores["channel"].values)
    events = list(scores["event"].values) if "exceedance_probability_map" in scores else []
    cols = len(events) + ("efi_map" in scores)
    plt, fig, axes = figure_grid(len(channels), max(cols, 1), 4.2, 2.6)
    lon, lat = scores["lon"].values, scores["lat"].values
    for r, channel in enumerate(channels):
        panels = [(scores["exceedance_probability_map"].sel(channel=channel, event=e), f"P({e})", "viridis", (0, 1))
                  for e in events]
        if "efi_map" in scores:
            panels.append((scores["efi_map"].sel(channel=channel), "EFI", "RdBu_r", (-1, 1)))
        for c, (field, label, cmap, limits) in enumerate(panels):
            ax = axes[r, c]
            mesh = ax.pcolormesh(lon, lat, field.transpose("lat", "lon").values, cmap=cmap, vmin=limits[0],
                                 vmax=limits[1], shading="nearest")
            fig.colorbar(mesh, ax=ax, shrink=0.8)
            ax.set_title(f"{channel}: {label}", fontsize=9)
    return save_figure(plt, fig, path, scores.attrs.get("maps", "maps"))

"""PNG plots of scores (matplotlib, headless)."""

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


def _panels(n: int):
    plt = _pyplot()
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return plt, fig, axes.ravel()


def plot_vs_lead(scores, variables: dict, path: Path, title: str, reference: float | None = None) -> Path:
    """One panel per channel; ``variables`` maps score names to legend labels."""
    channels = list(scores["channel"].values)
    plt, fig, axes = _panels(len(channels))
    lead = _lead_hours(scores)
    for ax, channel in zip(axes, channels):
        for name, label in variables.items():
            if name in scores:
                ax.plot(lead, scores[name].sel(channel=channel).values, marker="o", ms=3, label=label)
        if reference is not None:
            ax.axhline(reference, color="grey", lw=0.8, ls="--")
        units = scores.attrs.get(f"units_{channel}", "")
        ax.set_title(f"{channel} [{units}]" if units and reference is None else channel)
        ax.set_xlabel("lead time (h)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_rank_histograms(scores, path: Path, leads: int = 3) -> Path:
    """Normalised rank histograms for a few leads per channel; a reliable ensemble is flat at 1."""
    channels = list(scores["channel"].values)
    plt, fig, axes = _panels(len(channels))
    lead = _lead_hours(scores)
    picks = sorted(set(np.linspace(1 if len(lead) > 1 else 0, len(lead) - 1, leads).astype(int)))
    for ax, channel in zip(axes, channels):
        for k in picks:
            counts = scores["rank_histogram"].sel(channel=channel).isel(lead_time=k).values.astype(float)
            total = counts.sum()
            if total > 0:
                ax.step(np.arange(len(counts)), counts * len(counts) / total, where="mid", label=f"{lead[k]:.0f} h")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(channel)
        ax.set_xlabel("rank of the truth")
    axes[0].legend(fontsize=8)
    fig.suptitle("rank histograms (count x bins / total)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

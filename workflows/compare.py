"""Side-by-side comparison of several ensembles (e.g. SFNO bred vectors, VAE latent noise, both mixed).

Appends to a report: per channel, fair CRPS, spread-skill ratio and ensemble-mean RMSE of each ensemble
at a few leads, plots with one line per ensemble, rank histograms at the longest lead, and sentences
saying which ensemble wins where (lowest fair CRPS at the first and the last lead, spread-skill
closest to 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forecast.verify.plots import figure_grid, save_figure

METRICS = {"crps": "fair CRPS", "spread_skill_ratio": "spread-skill", "ensemble_mean_rmse": "ens-mean RMSE"}


def _global(scores):
    """The global-region scores (score files hold several regions)."""
    return scores.sel(region="global", drop=True) if "region" in scores.dims else scores


def _hours(scores) -> np.ndarray:
    return (scores["lead_time"].values / np.timedelta64(1, "h")).astype(int)


def plot_comparison(all_scores: dict, variable: str, path: Path, title: str, reference: float | None = None) -> Path:
    channels = list(next(iter(all_scores.values()))["channel"].values)
    plt, fig, axes = figure_grid(1, len(channels), 4, 3.2)
    for ax, channel in zip(axes[0], channels):
        for name, scores in all_scores.items():
            ax.plot(_hours(scores), scores[variable].sel(channel=channel).values, marker="o", ms=3, label=name)
        if reference is not None:
            ax.axhline(reference, color="grey", lw=0.8, ls="--")
        ax.set_title(channel)
        ax.set_xlabel("lead time (h)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(plt, fig, path, title)


def plot_rank_comparison(all_scores: dict, path: Path) -> Path:
    channels = list(next(iter(all_scores.values()))["channel"].values)
    plt, fig, axes = figure_grid(1, len(channels), 4, 3.2)
    for ax, channel in zip(axes[0], channels):
        for name, scores in all_scores.items():
            counts = scores["rank_histogram"].sel(channel=channel).isel(lead_time=-1).values.astype(float)
            ranks = np.linspace(0, 1, len(counts))
            ax.step(ranks, counts * len(counts) / counts.sum(), where="mid", label=name)
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{channel}, longest lead")
        ax.set_xlabel("normalised rank of the truth")
    axes[0][0].legend(fontsize=8)
    return save_figure(plt, fig, path, "rank histograms (flat at 1 = reliable)")


def verdicts(all_scores: dict) -> list[str]:
    """Which ensemble wins where, in words."""
    lines = []
    first = next(iter(all_scores.values()))
    hours = _hours(first)
    early = 1 if len(hours) > 1 else 0
    for channel in first["channel"].values:
        def best(variable, lead, key=lambda v: v):
            values = {n: float(s[variable].sel(channel=channel).isel(lead_time=lead)) for n, s in all_scores.items()}
            return min(values, key=lambda n: key(values[n])), values

        early_best, early_values = best("crps", early)
        late_best, late_values = best("crps", -1)
        ssr_best, ssr_values = best("spread_skill_ratio", -1, key=lambda v: abs(np.log(v)) if v > 0 else np.inf)
        lines.append(
            f"- **{channel}**: lowest fair CRPS at {hours[early]} h: **{early_best}** ({early_values[early_best]:.4g}); "
            f"at {hours[-1]} h: **{late_best}** ({late_values[late_best]:.4g}); spread-skill closest to 1 at "
            f"{hours[-1]} h: **{ssr_best}** (" + ", ".join(f"{n} {v:.2f}" for n, v in ssr_values.items()) + ")."
        )
    return lines


def append_comparison(report: Path, score_files: dict, descriptions: dict) -> Path:
    """Add the comparison of the ensembles whose ``scores.nc`` files are given to ``report``."""
    import xarray as xr

    report = Path(report)
    out = report.parent
    all_scores = {name: _global(xr.open_dataset(path).load()) for name, path in score_files.items()}
    plots = [
        plot_comparison(all_scores, "crps", out / "comparison_crps.png", "fair CRPS vs lead"),
        plot_comparison(all_scores, "spread_skill_ratio", out / "comparison_spread_skill.png", "spread-skill ratio vs lead", 1.0),
        plot_comparison(all_scores, "ensemble_mean_rmse", out / "comparison_rmse.png", "ensemble-mean RMSE vs lead"),
        plot_rank_comparison(all_scores, out / "comparison_rank_histograms.png"),
    ]
    lines = ["", "## Ensembles side by side", ""]
    lines += [f"- **{name}**: {descriptions.get(name, '')}" for name in all_scores]
    lines += ["", "### Which wins where", "", *verdicts(all_scores), ""]
    first = next(iter(all_scores.values()))
    hours = _hours(first)
    picks = sorted({1 if len(hours) > 1 else 0, len(hours) // 2, len(hours) - 1})
    for channel in first["channel"].values:
        lines += [f"### {channel}", "", "| lead (h) | ensemble | " + " | ".join(METRICS.values()) + " |",
                  "|---:|---|" + "---:|" * len(METRICS)]
        for k in picks:
            for name, scores in all_scores.items():
                row = scores.sel(channel=channel).isel(lead_time=k)
                lines.append(f"| {hours[k]} | {name} | " + " | ".join(f"{float(row[m]):.4g}" for m in METRICS) + " |")
        lines.append("")
    lines += [f"![{p.name}]({p.name})" for p in plots] + [""]
    with open(report, "a") as f:
        f.write("\n".join(lines))
    return report

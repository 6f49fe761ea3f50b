"""Side-by-side comparison of several ensembles (e.g. SFNO bred vectors, VAE latent noise, both mixed).

Appends to a report: per channel, fair CRPS, spread-skill ratio and ensemble-mean RMSE of each ensemble
at a few leads, plots with one line per ensemble, the paired CRPS differences to the first ensemble with
their confidence intervals, rank histograms at the longest lead, and sentences saying which ensemble
wins where: lowest fair CRPS at the first and the last lead, named only where the paired interval over
start dates excludes zero.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forecast.plots import save_figure

METRICS = {"crps": "fair CRPS", "spread_skill_ratio": "spread-skill", "ensemble_mean_rmse": "ens-mean RMSE"}


def _global(scores):
    """The global-region scores (score files hold several regions)."""
    return scores.sel(region="global", drop=True) if "region" in scores.dims else scores


def _hours(scores) -> np.ndarray:
    return (scores["lead_time"].values / np.timedelta64(1, "h")).astype(int)


def plot_comparison(all_scores: dict, variable: str, path: Path, title: str, reference: float | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels = list(next(iter(all_scores.values()))["channel"].values)
    fig, axes = plt.subplots(1, len(channels), figsize=(4 * len(channels), 3.2), squeeze=False)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels = list(next(iter(all_scores.values()))["channel"].values)
    fig, axes = plt.subplots(1, len(channels), figsize=(4 * len(channels), 3.2), squeeze=False)
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


def crps_differences(all_scores: dict, confidence: float = 0.95) -> dict:
    """Paired differences of fair CRPS over start dates, each ensemble minus the first, per channel and
    lead (:func:`forecast.verify.paired_difference`); empty when a score file has no per-start-date CRPS
    or the start dates differ."""
    from forecast.verify import paired_difference

    names = list(all_scores)
    first = all_scores[names[0]]
    if any("crps_by_init_time" not in s for s in all_scores.values()):
        return {}
    out = {}
    for name in names[1:]:
        a, b = all_scores[name]["crps_by_init_time"], first["crps_by_init_time"]
        if a.sizes["init_time"] != b.sizes["init_time"] or not np.array_equal(a["init_time"].values, b["init_time"].values):
            return {}
        out[name] = paired_difference(a, b, dim="init_time", confidence=confidence)
    return out


def _winner(all_scores: dict, channel, lead: int, confidence: float = 0.95) -> str:
    """The ensemble with the lowest mean fair CRPS at ``lead`` when its paired difference to every other
    excludes zero; otherwise says that none is significantly better."""
    from forecast.verify import paired_difference

    values = {n: float(s["crps"].sel(channel=channel).isel(lead_time=lead)) for n, s in all_scores.items()}
    best = min(values, key=values.get)
    listed = ", ".join(f"{n} {v:.4g}" for n, v in values.items())
    if any("crps_by_init_time" not in s for s in all_scores.values()):
        return f"no per-start-date scores, so no winner ({listed})"
    tests = {}
    for name, scores in all_scores.items():
        if name == best:
            continue
        a = all_scores[best]["crps_by_init_time"].sel(channel=channel).isel(lead_time=lead)
        b = scores["crps_by_init_time"].sel(channel=channel).isel(lead_time=lead)
        if not np.array_equal(a["init_time"].values, b["init_time"].values):
            return f"different start dates, so no winner ({listed})"
        tests[name] = paired_difference(a, b, confidence=confidence)
    if not tests:
        return f"**{best}** ({values[best]:.4g}; the only ensemble)"
    uppers = {name: float(test["upper"]) for name, test in tests.items()}
    if not all(np.isfinite(list(uppers.values()))):
        return f"too few start dates for an interval, so no winner ({listed})"
    name = max(uppers, key=uppers.get)
    worst_upper, test = uppers[name], tests[name]
    interval = (f"{best} - {name} = {float(test['difference']):.3g} "
                f"[{float(test['lower']):.3g}, {float(test['upper']):.3g}]")
    if worst_upper < 0:
        return f"**{best}** ({values[best]:.4g}; significantly lower than every other at {confidence:.0%}: {interval})"
    return f"no significant winner at {confidence:.0%} ({listed}; {interval})"


def verdicts(all_scores: dict, confidence: float = 0.95) -> list[str]:
    """Which ensemble wins where, in words: a winner only where the paired interval over start dates
    excludes zero."""
    lines = []
    first = next(iter(all_scores.values()))
    hours = _hours(first)
    early = 1 if len(hours) > 1 else 0
    for channel in first["channel"].values:
        ratio = {n: float(s["spread_skill_ratio"].sel(channel=channel).isel(lead_time=-1)) for n, s in all_scores.items()}
        text = (f"- **{channel}**: lowest fair CRPS at {hours[early]} h: {_winner(all_scores, channel, early, confidence)}; "
                f"at {hours[-1]} h: {_winner(all_scores, channel, -1, confidence)}; spread-skill at {hours[-1]} h: "
                + ", ".join(f"{n} {v:.2f}" for n, v in ratio.items()))
        if all("spread_skill_ratio_grouped" in s for s in all_scores.values()):
            grouped = {n: float(s["spread_skill_ratio_grouped"].sel(channel=channel).isel(lead_time=-1))
                       for n, s in all_scores.items()}
            text += " (grouped by checkpoint: " + ", ".join(f"{n} {v:.2f}" for n, v in grouped.items()) + ")"
        lines.append(text + ".")
    return lines


def plot_differences(all_scores: dict, differences: dict, path: Path, confidence: float = 0.95) -> Path:
    """Fair CRPS of each ensemble minus the first vs lead, with the paired confidence interval as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reference = next(iter(all_scores))
    channels = list(all_scores[reference]["channel"].values)
    fig, axes = plt.subplots(1, len(channels), figsize=(4 * len(channels), 3.2), squeeze=False)
    for ax, channel in zip(axes[0], channels):
        for name, test in differences.items():
            hours = _hours(all_scores[name])
            row = test.sel(channel=channel)
            line, = ax.plot(hours, row["difference"].values, marker="o", ms=3, label=f"{name} - {reference}")
            ax.fill_between(hours, row["lower"].values, row["upper"].values, color=line.get_color(), alpha=0.25, lw=0)
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_title(channel)
        ax.set_xlabel("lead time (h)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save_figure(plt, fig, path, f"fair CRPS difference with {confidence:.0%} intervals (below 0: better than {reference})")


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
    differences = crps_differences(all_scores)
    if differences:
        plots.append(plot_differences(all_scores, differences, out / "comparison_crps_difference.png"))
    lines = ["", "## Ensembles side by side", ""]
    lines += [f"- **{name}**: {descriptions.get(name, '')}" for name in all_scores]
    lines += ["", "### Which wins where", "",
              "A winner is named only where the 95% interval of its paired CRPS difference to every other ensemble "
              "over the start dates excludes zero (Diebold-Mariano-type test with an autocorrelation-corrected "
              "variance; docs/verification.md).", "", *verdicts(all_scores), ""]
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

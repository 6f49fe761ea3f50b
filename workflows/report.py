"""The verification report: report.md with tables and PNG plots, from a scores dataset."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from forecast.verify.plots import plot_maps, plot_rank_histograms, plot_reliability, plot_vs_lead_figures


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "nan"
    return f"{value:.4g}"


def _global(scores):
    return scores.sel(region="global") if "region" in scores.dims else scores


def summary_lines(scores) -> list[str]:
    """Sentences on the longest lead: does the ensemble mean beat the control, is the spread right."""
    lines = []
    last = _global(scores).isel(lead_time=-1)
    hours = int(scores["lead_time"].values[-1] / np.timedelta64(1, "h"))
    for channel in scores["channel"].values:
        s = last.sel(channel=channel)
        text = f"- **{channel}** at {hours} h: ensemble-mean RMSE {_fmt(float(s['ensemble_mean_rmse']))}"
        if "control_rmse" in s:
            mean, control = float(s["ensemble_mean_rmse"]), float(s["control_rmse"])
            verdict = "beats" if mean < control else "does not beat"
            text += f" {verdict} the control's {_fmt(control)} ({100 * (control - mean) / control:+.1f}%)"
        text += f"; spread-skill ratio {_fmt(float(s['spread_skill_ratio']))}"
        if "spread_skill_ratio_grouped" in s:
            text += (f" (exchangeable members), grouped consistency {_fmt(float(s['spread_skill_ratio_grouped']))} "
                     f"({scores.attrs.get('groups', 'checkpoints')}; 1 = consistent)")
        text += f"; fair CRPS {_fmt(float(s['crps']))}"
        if "outlier_fraction" in s:
            reliable = (float(s["outlier_reliable_value_grouped"]) if "outlier_reliable_value_grouped" in s
                        else scores.attrs.get("outlier_reliable_value", np.nan))
            design = "for this checkpoint design" if "outlier_reliable_value_grouped" in s else "exchangeable"
            text += (f"; truth outside the ensemble in {100 * float(s['outlier_fraction']):.1f}% of cases "
                     f"(reliable, {design}: {100 * reliable:.1f}%)")
        lines.append(text + ".")
    return lines


COLUMNS = [("crps", "fair CRPS"), ("crps_standard", "standard CRPS"), ("crps_skill_score", "CRPSS"),
           ("ensemble_mean_rmse", "ens-mean RMSE"), ("control_rmse", "control RMSE"), ("ensemble_mean_bias", "bias"),
           ("spread", "spread"), ("spread_skill_ratio", "spread-skill"),
           ("spread_skill_ratio_grouped", "consistency (grouped)"), ("best_member_rmse", "best-member RMSE"),
           ("outlier_fraction", "outliers"), ("outlier_reliable_value_grouped", "outliers reliable (grouped)"),
           ("twcrps_above_q90", "twCRPS >q90")]


def channel_table(scores, channel) -> list[str]:
    s = _global(scores).sel(channel=channel)
    columns = [(name, label) for name, label in COLUMNS if name in s]
    events = list(scores["event"].values) if "brier_score" in s else []
    header = "| lead (h) | " + " | ".join(label for _, label in columns) + "".join(f" | Brier {e}" for e in events) + " |"
    lines = [header, "|---:|" + "---:|" * (len(columns) + len(events))]
    lead = (scores["lead_time"].values / np.timedelta64(1, "h")).astype(int)
    table = [s[name].transpose("lead_time").values for name, _ in columns]  # one array per column, not per cell
    table += [s["brier_score"].sel(event=e).transpose("lead_time").values for e in events]
    for k, hours in enumerate(lead):
        lines.append(f"| {hours} | " + " | ".join(_fmt(float(column[k])) for column in table) + " |")
    return lines


def region_table(scores) -> list[str]:
    if "region" not in scores.dims:
        return []
    last = scores.isel(lead_time=-1)
    hours = int(scores["lead_time"].values[-1] / np.timedelta64(1, "h"))
    names = [n for n in ("crps", "ensemble_mean_rmse", "spread", "spread_skill_ratio", "spread_skill_ratio_grouped",
                         "outlier_fraction") if n in last]
    lines = [f"## Regions at {hours} h", "", "| channel | region | " + " | ".join(names) + " |",
             "|---|---|" + "---:|" * len(names)]
    for channel in scores["channel"].values:
        for region in scores["region"].values:
            row = last.sel(channel=channel, region=region)
            lines.append(f"| {channel} | {region} | " + " | ".join(_fmt(float(row[n])) for n in names) + " |")
    return lines + [""]


def flatness_lines(scores) -> list[str]:
    from forecast.verify import rank_histogram_flatness

    if "rank_histogram" not in scores:
        return []
    counts = _global(scores)["rank_histogram"]
    if "rank_reliable_frequency_grouped" in scores:  # expected counts of this checkpoint design, lead by lead
        expected = (_global(scores)["rank_reliable_frequency_grouped"] * counts.sum("rank")).sum("lead_time")
        test = rank_histogram_flatness(counts.sum("lead_time"), expected=expected / expected.sum("rank"))
        text = ("chi-square / degrees of freedom against the rank frequencies of a consistent ensemble with this "
                "checkpoint design (not flat; about 1 when consistent):")
    else:
        test = rank_histogram_flatness(counts.sum("lead_time"))
        text = "chi-square / degrees of freedom (about 1 when flat; Jolliffe & Primo 2008):"
    lines = ["## Rank histogram flatness (all leads, global)", "", text, ""]
    for channel in scores["channel"].values:
        value = float(test["relative_chi2"].sel(channel=channel))
        lines.append(f"- {channel}: {_fmt(value)} (p = {_fmt(float(test['p_value'].sel(channel=channel)))})")
    return lines + [""]


def calibration_lines(scores) -> list[str]:
    """The bred-vector amplitude chosen by ``amplitude_factor: auto`` and its CRPS curve."""
    import json

    if "amplitude_calibration" not in scores.attrs:
        return []
    record = json.loads(scores.attrs["amplitude_calibration"])
    curve = record["fair_crps"]
    lines = ["## Perturbation amplitude (amplitude_factor: auto)", "",
             f"Chosen factor {record['chosen']:g} x the deterministic RMSE, lowest fair CRPS ({record['measure']}) "
             f"on {len(record['init_times'])} training-period start dates ({', '.join(record['init_times'])}), "
             f"leads to {record['lead_hours']} h:", "", "| factor | fair CRPS |", "|---:|---:|"]
    lines += [f"| {factor} | {value:.5g} |" for factor, value in curve.items()]
    if record.get("at_edge"):
        lines += ["", "The chosen factor is at the edge of the candidates: the best may lie beyond them."]
    return lines + [""]


VS_LEAD = {
    "crps_vs_lead.png": ({"crps": "fair CRPS", "crps_standard": "standard CRPS", "twcrps_above_q90": "twCRPS > q90"},
                         "CRPS vs lead time", None),
    "rmse_vs_lead.png": ({"ensemble_mean_rmse": "ensemble-mean RMSE", "control_rmse": "control RMSE",
                          "spread": "spread", "best_member_rmse": "best-member RMSE"},
                         "RMSE of the ensemble mean vs the control, and spread", None),
    "spread_skill_vs_lead.png": ({"spread_skill_ratio": "spread-skill ratio (exchangeable)",
                                  "spread_skill_ratio_grouped": "consistency (grouped by checkpoint)"},
                                 "spread-skill ratio (1 = consistent)", 1.0),
}


def _plot_jobs(scores, out_dir: Path) -> list:
    """The report's figures as ``(names, function, arguments)``, the costliest first."""
    def vs_lead(names):
        return names, plot_vs_lead_figures, (scores, [(VS_LEAD[n][0], out_dir / n, *VS_LEAD[n][1:]) for n in names])

    jobs = [vs_lead(["crps_vs_lead.png", "rmse_vs_lead.png"]), vs_lead(["spread_skill_vs_lead.png"])]
    if "reliability_observed_frequency" in scores:
        jobs.append((["reliability.png"], plot_reliability, (scores, out_dir / "reliability.png")))
    if "efi_map" in scores or "exceedance_probability_map" in scores:
        jobs.append((["maps.png"], plot_maps, (scores, out_dir / "maps.png")))
    jobs.append((["rank_histograms.png"], plot_rank_histograms, (scores, out_dir / "rank_histograms.png")))
    return jobs


def draw_plots(scores, out_dir: Path, workers: int | None = None, meanwhile=None):
    """Draw the report's PNGs into ``out_dir``; returns their names in the report's order and what
    ``meanwhile()`` (work for this process while the plots are drawn, e.g. the tables) returned.

    Drawing is single-threaded Python (matplotlib), so with ``workers`` > 1 (default: the cores this
    process may use, at most one per figure group) the figures are drawn by that many forked processes,
    which inherit the imported matplotlib and get the scores (a few hundred kB) by pickle. Without
    ``fork`` (not Linux) they are drawn here, one after the other; the PNGs are the same either way.
    """
    import multiprocessing

    from forecast.machine import available_cores
    from forecast.verify.plots import _pyplot

    jobs = _plot_jobs(scores, out_dir)
    workers = min(len(jobs), available_cores() if workers is None else workers)
    _pyplot()  # imported once, before the fork
    if workers > 1 and sys.platform == "linux":
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = [pool.submit(function, *arguments) for _, function, arguments in jobs]
            result = meanwhile() if meanwhile else None
            for future in futures:
                future.result()
    else:
        for _, function, arguments in jobs:
            function(*arguments)
        result = meanwhile() if meanwhile else None
    drawn = [name for names, _, _ in jobs for name in names]
    order = [*VS_LEAD, "rank_histograms.png", "reliability.png", "maps.png"]
    return sorted(drawn, key=order.index), result


def _text(scores, store_path) -> list:
    """The report's text above its plots: summary and tables."""
    lines = [
        "# Ensemble verification report",
        "",
        f"Store: `{store_path}`  " if store_path else "",
        f"**Unfinished store**: {scores.attrs['partial']}.  " if scores.attrs.get("partial") else None,
        f"Members: {scores.attrs.get('members')}, start dates: {scores.attrs.get('init_times')}; scores averaged over "
        f"{scores.attrs.get('averaged_over')}. CRPS is the fair estimator (Ferro 2014) unless marked standard; the "
        "spread-skill ratio includes the sqrt((M+1)/M) factor; for several checkpoints the grouped consistency "
        "ratio (random-effects ANOVA, truth a member of a new checkpoint; docs/verification.md) is the one that "
        "reads 1 for a consistent ensemble. Tables are global; events: "
        f"{scores.attrs.get('events', 'none')}.",
        "",
        "## Summary at the longest lead",
        "",
        *summary_lines(scores),
        "",
    ]
    for channel in scores["channel"].values:
        units = scores.attrs.get(f"units_{channel}", "")
        lines += [f"## {channel} [{units}]", "", *channel_table(scores, channel), ""]
    lines += region_table(scores)
    lines += calibration_lines(scores)
    lines += flatness_lines(scores)
    return lines


def write_report(scores, out_dir, store_path=None, workers: int | None = None) -> Path:
    """``report.md`` and its PNG plots in ``out_dir`` from a scores dataset (``forecast score``'s
    ``scores.nc``); ``workers`` processes draw the plots (:func:`draw_plots`). Returns the report's path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots, lines = draw_plots(scores, out_dir, workers, meanwhile=lambda: _text(scores, store_path))
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    path = out_dir / "report.md"
    path.write_text("\n".join(line for line in lines if line is not None))
    return path

"""The verification report: report.md with tables and PNG plots, from a scores dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from forecast.plots import plot_rank_histograms, plot_vs_lead


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "nan"
    return f"{value:.4g}"


def summary_lines(scores) -> list[str]:
    """Sentences on the longest lead: does the ensemble mean beat the control, is the spread right."""
    lines = []
    last = scores.isel(lead_time=-1)
    hours = int(scores["lead_time"].values[-1] / np.timedelta64(1, "h"))
    for channel in scores["channel"].values:
        s = last.sel(channel=channel)
        text = f"- **{channel}** at {hours} h: ensemble-mean RMSE {_fmt(float(s['ensemble_mean_rmse']))}"
        if "control_rmse" in s:
            mean, control = float(s["ensemble_mean_rmse"]), float(s["control_rmse"])
            verdict = "beats" if mean < control else "does not beat"
            text += f" {verdict} the control's {_fmt(control)} ({100 * (control - mean) / control:+.1f}%)"
        text += f"; spread-skill ratio {_fmt(float(s['spread_skill_ratio']))}; fair CRPS {_fmt(float(s['crps']))}."
        lines.append(text)
    return lines


def write_report(scores, out_dir, store_path=None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {
        "crps_vs_lead.png": plot_vs_lead(scores, {"crps": "fair CRPS", "crps_standard": "standard CRPS"},
                                         out_dir / "crps_vs_lead.png", "CRPS vs lead time"),
        "rmse_vs_lead.png": plot_vs_lead(scores, {"ensemble_mean_rmse": "ensemble-mean RMSE", "control_rmse": "control RMSE",
                                                  "spread": "spread"}, out_dir / "rmse_vs_lead.png",
                                         "RMSE of the ensemble mean vs the control, and spread"),
        "spread_skill_vs_lead.png": plot_vs_lead(scores, {"spread_skill_ratio": "spread-skill ratio"},
                                                 out_dir / "spread_skill_vs_lead.png", "spread-skill ratio (1 = consistent)",
                                                 reference=1.0),
        "rank_histograms.png": plot_rank_histograms(scores, out_dir / "rank_histograms.png"),
    }
    lead = (scores["lead_time"].values / np.timedelta64(1, "h")).astype(int)
    lines = [
        "# Ensemble verification report",
        "",
        f"Store: `{store_path}`  " if store_path else "",
        f"Members: {scores.attrs.get('members')}, start dates: {scores.attrs.get('init_times')}; scores averaged over "
        f"{scores.attrs.get('averaged_over')}. CRPS is the fair estimator (Ferro 2014) unless marked standard; the "
        "spread-skill ratio includes the sqrt((M+1)/M) factor.",
        "",
        "## Summary at the longest lead",
        "",
        *summary_lines(scores),
        "",
    ]
    for channel in scores["channel"].values:
        s = scores.sel(channel=channel)
        units = scores.attrs.get(f"units_{channel}", "")
        has_control = "control_rmse" in s
        lines += [f"## {channel} [{units}]", "",
                  "| lead (h) | fair CRPS | standard CRPS | ens-mean RMSE |" + (" control RMSE |" if has_control else "")
                  + " spread | spread-skill |",
                  "|---:|---:|---:|---:|" + ("---:|" if has_control else "") + "---:|---:|"]
        for k, hours in enumerate(lead):
            row = s.isel(lead_time=k)
            cells = [_fmt(float(row[v])) for v in ("crps", "crps_standard", "ensemble_mean_rmse")]
            if has_control:
                cells.append(_fmt(float(row["control_rmse"])))
            cells += [_fmt(float(row["spread"])), _fmt(float(row["spread_skill_ratio"]))]
            lines.append(f"| {hours} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in plots] + [""]
    path = out_dir / "report.md"
    path.write_text("\n".join(line for line in lines if line is not None))
    return path

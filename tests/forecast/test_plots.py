"""What the report's plots draw: every score value in its panel, on tiny scores built here (the plots were
made faster by sharing axes and reusing panels; these tests say no content went with it)."""

import numpy as np
import pytest
import xarray as xr

from forecast.verify import plots

CHANNELS, REGIONS, EVENTS = ["z500", "t2m"], ["global", "tropics", "box"], ["above_q90", "below_q10"]


@pytest.fixture(scope="module")
def scores():
    rng = np.random.default_rng(7)
    lead = (np.arange(5) * 6).astype("timedelta64[h]").astype("timedelta64[ns]")
    shape = (len(CHANNELS), len(lead), len(REGIONS))
    dims = ("channel", "lead_time", "region")
    data = {name: (dims, rng.uniform(1, 10, shape) * scale) for name, scale in
            (("crps", 1), ("crps_standard", 1.1), ("spread", 1), ("ensemble_mean_rmse", 2), ("spread_skill_ratio", 0.1))}
    data["rank_histogram"] = (dims + ("rank",), rng.integers(1, 50, shape + (6,)))
    probability = np.sort(rng.uniform(0, 1, (2, 5, 2, 4)), axis=-1)
    probability[0, 1, 0, 2] = np.nan  # an empty bin: left out of its curve
    relia = ("channel", "lead_time", "event", "bin")
    data["reliability_forecast_probability"] = (relia, probability)
    data["reliability_observed_frequency"] = (relia, rng.uniform(0, 1, probability.shape))
    data["reliability_count"] = (relia, rng.integers(0, 100, probability.shape))
    data["exceedance_probability_map"] = (("channel", "event", "lat", "lon"), rng.uniform(0, 1, (2, 2, 5, 8)))
    data["efi_map"] = (("channel", "lon", "lat"), rng.uniform(-1, 1, (2, 8, 5)))  # other order: transposed
    return xr.Dataset(data, coords={"channel": CHANNELS, "lead_time": lead, "region": REGIONS, "event": EVENTS,
                                    "lat": np.linspace(-80, 80, 5), "lon": np.arange(8) * 45.0},
                      attrs={"units_z500": "m2 s-2", "units_t2m": "K"})


@pytest.fixture()
def drawn(monkeypatch):
    """Each figure's panels as they are saved: title, lines, meshes, visible tick labels, axis labels."""
    figures = []
    save = plots.save_figure

    def record(plt, fig, path, title, **kwargs):
        fig.canvas.draw()
        panels = []
        for ax in fig.axes:
            panels.append({"title": ax.get_title(), "lines": [(line.get_xdata(), line.get_ydata(), line.get_label(),
                                                               line.get_color()) for line in ax.lines],
                           "meshes": [mesh.get_array() for mesh in ax.collections],
                           "xticklabels": [t.get_text() for t in ax.get_xticklabels() if t.get_visible() and t.get_text()],
                           "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(), "children": ax.child_axes,
                           "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []})
        figures.append({"title": title, "panels": panels})
        return save(plt, fig, path, title, **kwargs)

    monkeypatch.setattr(plots, "save_figure", record)
    return figures


def test_vs_lead_draws_every_score_of_every_channel_and_region_in_its_panel(scores, drawn, tmp_path):
    variables = {"crps": "fair CRPS", "crps_standard": "standard CRPS", "not_there": "skipped"}
    plots.plot_vs_lead(scores, variables, tmp_path / "a.png", "CRPS")
    panels = drawn[0]["panels"]
    assert len(panels) == len(CHANNELS) * len(REGIONS)
    hours = [0, 6, 12, 18, 24]
    for r, channel in enumerate(CHANNELS):
        for c, region in enumerate(REGIONS):
            panel = panels[r * len(REGIONS) + c]
            units = scores.attrs[f"units_{channel}"]
            assert panel["title"] == f"{channel} [{units}], {region}"
            assert [label for _, _, label, _ in panel["lines"]] == ["fair CRPS", "standard CRPS"]
            for (x, y, _, _), name in zip(panel["lines"], ["crps", "crps_standard"]):
                np.testing.assert_array_equal(x, hours)
                np.testing.assert_array_equal(y, scores[name].sel(channel=channel, region=region).values)
            # the lead axis is shared: labelled (ticks and name) on the bottom row only
            bottom = r == len(CHANNELS) - 1
            assert (panel["xlabel"] == "lead time (h)") == bottom and bool(panel["xticklabels"]) == bottom
    assert panels[0]["legend"] == ["fair CRPS", "standard CRPS"]


def test_vs_lead_figures_on_reused_panels_equal_figures_drawn_alone(scores, drawn, tmp_path):
    specs = [({"crps": "fair CRPS", "crps_standard": "standard CRPS"}, tmp_path / "1.png", "CRPS", None),
             ({"spread_skill_ratio": "spread-skill"}, tmp_path / "2.png", "ratio", 1.0),
             ({"spread": "spread", "ensemble_mean_rmse": "RMSE"}, tmp_path / "3.png", "RMSE", None)]
    plots.plot_vs_lead_figures(scores, specs)
    together = list(drawn)
    drawn.clear()
    for variables, path, title, reference in specs:
        plots.plot_vs_lead(scores, variables, path.with_suffix(".alone.png"), title, reference)
    assert len(together) == len(drawn) == 3
    for one, alone in zip(together, drawn):  # no line of the previous figure is left, colours restart
        for a, b in zip(one["panels"], alone["panels"]):
            assert a["title"] == b["title"] and a["legend"] == b["legend"]
            assert [line[2:] for line in a["lines"]] == [line[2:] for line in b["lines"]]  # labels and colours
            for (_, ya, _, _), (_, yb, _, _) in zip(a["lines"], b["lines"]):
                np.testing.assert_array_equal(ya, yb)
    for _, path, _, _ in specs:  # the same pixels: limits and ticks follow each figure's own data
        assert path.read_bytes() == path.with_suffix(".alone.png").read_bytes()


def test_reliability_draws_each_lead_curve_without_empty_bins_and_its_sharpness_inset(scores, drawn, tmp_path):
    plots.plot_reliability(scores, tmp_path / "r.png", leads=2)
    panels = drawn[0]["panels"]
    assert len(panels) == len(CHANNELS) * len(EVENTS)
    picks = plots._lead_picks(np.arange(5) * 6.0, 2)
    for r, channel in enumerate(CHANNELS):
        for c, event in enumerate(EVENTS):
            panel = panels[r * len(EVENTS) + c]
            assert panel["title"] == f"{channel}, {event}"
            assert len(panel["lines"]) == len(picks) + 1  # and the diagonal
            for (x, y, label, _), k in zip(panel["lines"], picks):
                p = scores["reliability_forecast_probability"].sel(channel=channel, event=event).isel(lead_time=k).values
                o = scores["reliability_observed_frequency"].sel(channel=channel, event=event).isel(lead_time=k).values
                ok = np.isfinite(p)
                np.testing.assert_array_equal(x, p[ok])
                np.testing.assert_array_equal(y, o[ok])
                assert label == f"{6 * k} h"
            (inset,) = panel["children"]
            assert len(inset.patches) == len(picks)  # one sharpness histogram per lead
            assert (panel["xlabel"] != "") == (r == len(CHANNELS) - 1) and (panel["ylabel"] != "") == (c == 0)


def test_maps_draw_each_field_and_one_colour_scale_per_column(scores, drawn, tmp_path):
    plots.plot_maps(scores, tmp_path / "m.png")
    panels = drawn[0]["panels"]
    columns = len(EVENTS) + 1
    assert len(panels) == len(CHANNELS) * columns
    for r, channel in enumerate(CHANNELS):
        for c in range(columns):
            panel = panels[r * columns + c]
            label = "EFI" if c == len(EVENTS) else f"P({EVENTS[c]})"
            expected = (scores["efi_map"].sel(channel=channel).transpose("lat", "lon") if c == len(EVENTS) else
                        scores["exceedance_probability_map"].sel(channel=channel, event=EVENTS[c]))
            np.testing.assert_array_equal(np.asarray(panel["meshes"][0]).reshape(5, 8), expected.values)
            assert panel["title"] == f"{channel}: {label}"
            bottom = r == len(CHANNELS) - 1
            assert panel["xticklabels"] == (["0", "60E", "120E", "180", "120W", "60W"] if bottom else [])
            # one colour scale per column, under its bottom panel
            assert [bar.get_xlabel() for bar in panel["children"]] == ([f"{label} (1)"] if bottom else [])


def test_report_drawn_by_two_processes_equals_the_report_drawn_by_one(scores, tmp_path):
    from workflows.report import write_report

    one = write_report(scores, tmp_path / "one", workers=1).parent
    two = write_report(scores, tmp_path / "two", workers=2).parent
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir())
    assert {"report.md", "crps_vs_lead.png", "spread_skill_vs_lead.png", "rank_histograms.png", "reliability.png",
            "maps.png"} <= set(names)
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    assert "![maps.png](maps.png)" in (one / "report.md").read_text()

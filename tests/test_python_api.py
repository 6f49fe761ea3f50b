"""What users reach for first: opening a store from Python and plain xarray, CF metadata that other tools
decode, subsets written elsewhere, ``forecast info``, ``forecast export``, plots, progress and umask."""

from __future__ import annotations

import json
import logging
import re
import stat
import warnings

import numpy as np
import pytest
import xarray as xr

import forecast
from forecast.mock import write_mock_store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two stores of two experiments with different member counts and model families."""
    folder = tmp_path_factory.mktemp("stores")
    a, truth = write_mock_store(folder / "sfno.zarr", members=6, leads=2, block=4)
    b, _ = write_mock_store(folder / "vae.zarr", members=4, leads=2, block=4, seed=1)
    return a, b


def test_open_store_and_plain_open_zarr_open_without_a_warning(stores):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = forecast.open_store(stores[0])
        plain = xr.open_zarr(stores[0])
    xr.testing.assert_identical(ds[["z500", "t2m"]].load(), plain[["z500", "t2m"]].load().pipe(_plain_strings))
    assert dict(ds.sizes) == {"member": 6, "init_time": 1, "lead_time": 2, "lat": 17, "lon": 32}


def _plain_strings(ds):
    from forecast.cf import plain_strings

    return plain_strings(ds).drop_encoding()


def test_cf_attributes_name_the_coordinates_and_cf_xarray_finds_them(stores):
    cf_xarray = pytest.importorskip("cf_xarray")  # noqa: F841
    ds = forecast.open_store(stores[0])
    assert ds["member"].attrs["standard_name"] == "realization"
    assert ds["init_time"].attrs["standard_name"] == "forecast_reference_time"
    assert ds["lead_time"].attrs["standard_name"] == "forecast_period"
    assert (ds["lat"].attrs["axis"], ds["lon"].attrs["axis"]) == ("Y", "X")
    assert "0 to 360" in ds.attrs["longitude_convention"] and "0 to 360" in ds["lon"].attrs["comment"]
    on_disk = xr.open_zarr(stores[0], decode_times=False)
    for name in on_disk.coords:  # every coordinate says its units (strings have none in CF)
        if on_disk[name].dtype.kind != "T" and on_disk[name].dtype != object:
            assert "units" in on_disk[name].attrs, name
    assert on_disk["init_time"].attrs["units"] == "hours since 1970-01-01"
    assert on_disk["lead_time"].attrs["units"] == "hours"
    assert ds.cf["realization"].name == "member"
    assert ds.cf["forecast_reference_time"].name == "init_time"
    assert ds.cf["forecast_period"].name == "lead_time"
    assert ds.cf["Y"].name == "lat" and ds.cf["X"].name == "lon"
    assert ds.cf["latitude"].name == "lat" and ds.cf["longitude"].name == "lon"


def test_two_experiment_stores_concatenate_over_a_new_dimension(stores):
    a, b = (forecast.open_store(s) for s in stores)
    assert a["model_family"].dtype == object and isinstance(a["model_family"].values[0], str)
    both = xr.concat([a, b.assign_coords(model_family=("member", ["vae"] * 4))], dim="experiment", join="outer")
    assert both.sizes["experiment"] == 2 and both.sizes["member"] == 6
    families = both["model_family"].values
    assert list(families[0]) == ["mock"] * 6 and list(families[1][:4]) == ["vae"] * 4
    np.testing.assert_array_equal(both["z500"].isel(experiment=1, member=slice(0, 4)).values, b["z500"].values)
    assert np.isnan(both["z500"].isel(experiment=1, member=slice(4, None)).values).all()
    with warnings.catch_warnings():  # plain xarray: same member count
        warnings.simplefilter("error")
        plain = xr.concat([xr.open_zarr(stores[0]), xr.open_zarr(stores[0])], dim="experiment")
    assert plain.sizes["experiment"] == 2


def test_a_subset_writes_to_a_new_zarr_store_and_to_netcdf(stores, tmp_path):
    ds = forecast.open_store(stores[0])
    subset = ds.isel(member=slice(1, 4)).sel(lat=slice(60, -30))
    subset.to_zarr(tmp_path / "subset.zarr", zarr_format=3, consolidated=False)
    subset.to_netcdf(tmp_path / "subset.nc")
    expected = subset.load()
    xr.testing.assert_identical(xr.open_zarr(tmp_path / "subset.zarr", consolidated=False).load().drop_encoding(),
                                expected)
    back = xr.open_dataset(tmp_path / "subset.nc").load().drop_encoding()
    xr.testing.assert_identical(back, expected)
    # plain xarray keeps the store's shard encoding, which a subset does not fit: drop it first
    plain = xr.open_zarr(stores[0]).isel(member=slice(1, 4))
    with pytest.raises(ValueError, match="chunks"):
        plain.to_zarr(tmp_path / "fails.zarr", zarr_format=3, consolidated=False)
    plain.drop_encoding().to_zarr(tmp_path / "plain.zarr", zarr_format=3, consolidated=False)
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "plain.zarr", consolidated=False)["t2m"].values,
                                  ds["t2m"].isel(member=slice(1, 4)).values)


def test_open_store_reads_a_store_without_consolidated_metadata(stores, tmp_path):
    """Stores written before consolidation was added open as before (group by group)."""
    import shutil

    from forecast.scores import has_consolidated_metadata

    old = tmp_path / "old.zarr"
    shutil.copytree(stores[1], old)
    meta = json.loads((old / "zarr.json").read_text())
    meta.pop("consolidated_metadata")
    (old / "zarr.json").write_text(json.dumps(meta))
    assert has_consolidated_metadata(stores[1]) and not has_consolidated_metadata(old)
    xr.testing.assert_identical(forecast.open_store(old).load(), forecast.open_store(stores[1]).load())


def test_export_round_trips_the_selection(stores, tmp_path):
    from workflows.cli import main

    out = tmp_path / "export.nc"
    assert main(["export", str(stores[0]), str(out), "--members", "2:5", "--channels", "t2m"]) == 0
    expected = forecast.open_store(stores[0])[["t2m"]].isel(member=slice(2, 5)).load()
    back = xr.open_dataset(out).load()
    xr.testing.assert_equal(back.drop_encoding(), expected)
    assert back["member"].attrs["standard_name"] == "realization" and back.attrs["Conventions"] == "CF-1.10"
    assert back["t2m"].encoding["zlib"]
    assert main(["export", str(stores[0]), str(tmp_path / "bad.nc"), "--channels", "nope"]) == 2
    assert not (tmp_path / "bad.nc").exists()
    assert main(["export", str(stores[0]), str(tmp_path / "bad.nc"), "--statistics-only"]) == 2


def test_info_says_complete_or_partial_with_counts_and_size(stores, tmp_path, capsys):
    import shutil

    from forecast.store import EnsembleStore
    from workflows.cli import main

    assert main(["info", str(stores[0])]) == 0
    text = capsys.readouterr().out
    assert "complete, 6/6 member runs finished" in text and "2001-01-01T00:00:00: 6/6 members" in text
    assert "size on disk:" in text and "zstd level 3" in text and "channels: z500, t2m" in text
    partial = tmp_path / "partial.zarr"
    shutil.copytree(stores[0], partial)
    EnsembleStore.open(partial).reset(0, 4, 6)
    assert main(["info", str(partial), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["complete"] is False and info["members_finished"] == {"2001-01-01T00:00:00": 4}
    size = sum(p.stat().st_size for p in partial.rglob("*") if p.is_file())
    assert info["size_bytes"] == size and info["lead_hours"] == [0, 6]
    assert main(["info", str(partial)]) == 0
    assert "PARTIAL, 4/6 member runs finished" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "missing.zarr")]) == 3


def test_progress_logs_members_done_rate_and_eta(caplog):
    from workflows.progress import Progress

    now = [0.0]
    progress = Progress("run", bar=False, log_every=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="forecast.progress"):
        progress.start(total=20, done=4, steps=10)
        now[0] = 5.0
        progress.advance(4)  # within log_every: no line
        now[0] = 16.0
        progress.advance(4)  # 8 members x 10 steps in 16 s = 5 member-steps/s; 8 left x 10 / 5 = 16 s
        now[0] = 17.0
        progress.advance(8)  # the last one is always logged
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["run: 16 members to run (4 of 20 already done)",
                     "run: members 12/20 (60%), 5 member-steps/s, ETA 0:00:16",
                     "run: members 20/20 (100%), 9.41 member-steps/s, ETA 0:00:00"]


def test_plume_and_maps_plot_with_labels(stores, tmp_path):
    from forecast import plots
    from workflows.cli import main

    ds = forecast.open_store(stores[0])
    point = plots.plume(ds, lat=50.0, lon=-74.0, channel="t2m")
    nearest_lon = ds["lon"].values[np.argmin(np.abs(ds["lon"].values - 286.0))]
    assert float(point["lon"]) == nearest_lon  # -74 E is 286 E, not lon 0
    np.testing.assert_array_equal(point.values, ds["t2m"].isel(init_time=0).sel(lat=50.0, lon=286.0,
                                                                                 method="nearest").values)
    assert main(["plot", str(stores[0]), "--plume", "50,-74", "--channel", "t2m", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 5000
    assert main(["plot", str(stores[0]), "--out", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").stat().st_size > 5000
    assert main(["plot", str(stores[0]), "--plume", "50"]) == 2
    assert main(["plot", str(stores[0]), "--lead", "6", "--init-time", "2001-01-01T00", "--out", str(tmp_path / "l.png")]) == 0
    assert main(["plot", str(stores[0]), "--lead", "7"]) == 2
    assert main(["plot", str(stores[0]), "--init-time", "2001-02-01"]) == 2
    assert main(["plot", str(stores[0]), "--channel", "nope"]) == 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    plots.degree_axes(ax, ds["lat"].values, ds["lon"].values)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "60E", "120E", "180", "120W", "60W"]
    assert plots.draw_coastlines(ax, ds["lat"].values, ds["lon"].values) is (plots.natural_earth_coastline() is not None)
    plt.close(fig)


# -- on the tiny world: real runs -----------------------------------------------------------------------
PROGRESS_LINE = r"run: members (\d+)/(\d+) \(\d+%\), ([\d.]+(?:e[+-]\d+)?) member-steps/s, ETA (\d+:\d\d:\d\d)"


def test_run_off_a_terminal_logs_progress_umask_022_shares_files_and_info_tells_partial_from_complete(
        tiny_world, forecast_processes, tmp_path):
    import re

    from workflows.config import bundled_config

    tiny = str(bundled_config("tiny"))
    store = tmp_path / "shared" / "ensemble.zarr"
    common = ("run", tiny, "--workdir", tiny_world.paths.workdir, f"paths.store={store}", "umask=022")
    first = forecast_processes.run(*common, "--members", "0:3", "--progress-every", "0")
    assert first.returncode == 0, first.stderr
    info = forecast_processes.run("info", store)
    assert info.returncode == 0 and "PARTIAL" in info.stdout, info.stdout
    counts = re.findall(r": (\d+)/9 members", info.stdout)
    assert counts == ["3", "3"], info.stdout  # members 0:3 at both start dates

    second = forecast_processes.run(*common, "--progress-every", "0")
    assert second.returncode == 0, second.stderr
    # a resumed run counts whole blocks: members 2:4 form one block, rerun together since only 2 was done
    assert "run: 14 members to run (4 of 18 already done)" in second.stderr
    lines = re.findall(PROGRESS_LINE, second.stderr)
    assert len(lines) >= 3, second.stderr
    done = [int(d) for d, total, _, _ in lines]
    assert done == sorted(done) and done[-1] == 18 and {t for _, t, _, _ in lines} == {"18"}
    assert all(float(rate) > 0 for _, _, rate, _ in lines) and lines[-1][3] == "0:00:00"
    info = forecast_processes.run("info", store, "--json")
    summary = json.loads(info.stdout)
    assert summary["complete"] and summary["members_finished"] == {"2000-01-22T00:00:00": 9, "2000-01-24T00:00:00": 9}
    assert summary["size_bytes"] == sum(p.stat().st_size for p in store.rglob("*") if p.is_file())

    everything = [store, *store.rglob("*")]
    assert all(p.stat().st_mode & stat.S_IROTH for p in everything)  # umask 022: readable by others
    assert all(p.stat().st_mode & stat.S_IXOTH for p in everything if p.is_dir())

    private = tmp_path / "private" / "ensemble.zarr"  # the default, umask 027: nothing for others
    third = forecast_processes.run("-q", "run", tiny, "--workdir", tiny_world.paths.workdir, f"paths.store={private}",
                                   "--members", "0:1")
    assert third.returncode == 0 and third.stderr == "", third.stderr
    assert not any(p.stat().st_mode & (stat.S_IROTH | stat.S_IWOTH) for p in [private, *private.rglob("*")])
    assert all(p.stat().st_mode & stat.S_IRGRP for p in [private, *private.rglob("*")])


def test_workflows_run_from_python_returns_the_opened_store(tiny_world, tmp_path, caplog):
    import workflows
    from workflows.progress import Progress

    store = tmp_path / "python.zarr"
    with caplog.at_level(logging.INFO, logger="forecast.progress"):
        ds = workflows.run(tiny_world, members="0:2", paths__store=str(store), ensemble__seed=7,
                           progress=Progress(bar=False, log_every=0))
    assert isinstance(ds, xr.Dataset) and ds.sizes["member"] == 9 and ds["member"].attrs["standard_name"] == "realization"
    assert np.isfinite(ds["z500"].isel(member=slice(0, 2)).values).all()
    assert np.isnan(ds["z500"].isel(member=slice(2, None)).values).all()  # not run: read as NaN
    assert "run: members 4/4 (100%)" in caplog.text
    with pytest.raises(Exception, match="ensemble.batchsize"):
        workflows.run(tiny_world, ensemble__batchsize=3)


def test_scores_nc_carries_cf_metadata_and_the_dashboard_is_reported(stores, tmp_path, caplog):
    import importlib.util

    from workflows.recipes import score_store

    pytest.importorskip("cf_xarray")

    with caplog.at_level(logging.INFO, logger="workflows.cluster"):
        report = score_store(stores[0], str(stores[0]).replace(".zarr", ".truth.zarr"), tmp_path / "scores", workers=1)
    if importlib.util.find_spec("bokeh") is None:
        assert "dask: no dashboard (install bokeh>=3.1 to watch the workers)" in caplog.text
    else:
        assert "dask: dashboard at http" in caplog.text
    scores = xr.open_dataset(report.parent / "scores.nc")
    assert scores["lead_time"].attrs["standard_name"] == "forecast_period"
    assert (scores["lat"].attrs["axis"], scores["lon"].attrs["axis"]) == ("Y", "X")
    assert scores.cf["Y"].name == "lat" and scores.attrs["Conventions"] == "CF-1.10"
    assert scores.attrs["maps_init_time"] == "2001-01-01T00"  # the date in the maps' title
    raw = xr.open_dataset(report.parent / "scores.nc", decode_timedelta=False)
    assert raw["lead_time"].attrs["units"] == "hours"


def test_log_level_and_log_file(stores, tmp_path, capsys):
    from workflows.cli import main

    log_file = tmp_path / "logs" / "forecast.log"
    assert main(["--log-level", "debug", "--log-file", str(log_file), "plot", str(stores[0]), "--out",
                 str(tmp_path / "m.png")]) == 0
    first = log_file.read_text()
    assert " DEBUG " in first and " INFO " in first  # matplotlib's debug lines, and the score chunks line
    assert main(["--log-level", "warning", "--log-file", str(log_file), "plot", str(stores[0]), "--out",
                 str(tmp_path / "m.png")]) == 0
    assert log_file.read_text() == first  # nothing below warning was appended
    assert main(["--log-file", str(tmp_path / "not-a-folder"), "info", str(stores[0])]) == 0
    (tmp_path / "blocked").write_text("")
    assert main(["--log-file", str(tmp_path / "blocked" / "x.log"), "info", str(stores[0])]) == 2
    assert "cannot write the log file" in capsys.readouterr().err
    logging.getLogger().handlers.clear()


def test_export_statistics_only_of_a_run_with_streaming_statistics(tiny_world, forecast_processes, tmp_path):
    from workflows.config import bundled_config

    store = tmp_path / "stats.zarr"
    result = forecast_processes.run("-q", "run", str(bundled_config("tiny")), "--workdir", tiny_world.paths.workdir,
                                    f"paths.store={store}", "ensemble.statistics.channels=[z500]",
                                    "ensemble.statistics.thresholds={z500: [50000]}", "ensemble.statistics.only=[z500]")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "stats.nc"
    exported = forecast_processes.run("export", store, out, "--statistics-only")
    assert exported.returncode == 0, exported.stderr
    back = xr.open_dataset(out).load()
    expected = forecast.open_store(store)
    names = ["z500_ensemble_mean", "z500_ensemble_std", "z500_ensemble_min", "z500_ensemble_max",
             "z500_exceedance_probability"]
    assert sorted(back.data_vars) == sorted(names) and "member" not in back.dims
    xr.testing.assert_equal(back.drop_encoding(), expected[names].load())
    assert np.isfinite(back["z500_ensemble_mean"].values).all()
    assert "z500" not in expected.data_vars  # kept as statistics only: there is no member field to export
    members = forecast_processes.run("export", store, tmp_path / "none.nc", "--channels", "z500")
    assert members.returncode == 0, members.stderr  # z500 names its statistics
    assert set(xr.open_dataset(tmp_path / "none.nc").data_vars) == set(names)


def test_train_logs_checkpoints_done_rate_and_eta(tiny_world, tmp_path, caplog):
    import shutil

    import workflows
    from workflows.training import train_checkpoints

    for name in ("nature", "analysis"):
        shutil.copytree(tiny_world.paths.resolve(name), tmp_path / "planet" / f"{name}.zarr")
    config = workflows.configure(tiny_world, workdir=tmp_path, train__checkpoints=1, train__steps=2)
    with caplog.at_level(logging.INFO, logger="forecast.progress"):
        train_checkpoints(config, progress_every=0)
    assert "train: 1 checkpoints to run (0 of 1 already done)" in caplog.text
    assert re.search(r"train: checkpoints 1/1 \(100%\), [\d.]+ checkpoint-steps/s, ETA 0:00:00", caplog.text), caplog.text


def test_planet_stores_open_with_plain_xarray_without_a_warning(tiny_world):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("nature", "analysis"):
            assert "time" in xr.open_zarr(tiny_world.paths.resolve(name)).dims


def test_nightly_with_umask_022_leaves_its_cycle_readable_by_others(tiny_world, forecast_processes, tmp_path):
    from workflows.config import bundled_config

    root = tmp_path / "nightly"
    result = forecast_processes.run("-q", "nightly", str(bundled_config("tiny")), "--workdir", tiny_world.paths.workdir,
                                    f"nightly.root={root}", "score.workers=1", "umask=022")
    assert result.returncode == 0, result.stderr
    made = [root, *root.rglob("*")]
    assert any(p.name == "scores.nc" for p in made) and any(p.name == "zarr.json" for p in made)
    unreadable = [p for p in made if not p.stat().st_mode & stat.S_IROTH and p.name != "nightly.lock"]
    assert not unreadable, unreadable[:5]


def test_progress_bar_shows_members_rate_and_eta(capsys):
    from workflows.progress import Progress

    with Progress("run", bar=True) as progress:
        progress.start(total=10, done=2, steps=4)
        progress.advance(3)
    err = capsys.readouterr().err
    assert re.search(r"run: +50%.*5/10 \[.*<.*member-steps/s", err), err  # done/total, elapsed<ETA, rate

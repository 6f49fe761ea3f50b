"""One way in for truth, and foreign forecast stores.

A truth in any layout ``forecast run`` reads (the planet's, WeatherBench2, CDS; Zarr or netCDF) scores
the same as the planet's own nature run; a truth that does not fit the forecast (another grid, its own
time axis, an extra dimension, a missing channel) is refused in one line or its channels are skipped with
a warning, never broadcast; stores other tools wrote are scored when their dimension names are given.
"""

import logging

import numpy as np
import pytest
import xarray as xr

from forecast import verify
from forecast.data import DataError
from forecast.data.lexicon import G0
from forecast.verify.mock import mock_ensemble
from forecast.data.regrid import Regridder
from tests.cli_process import assert_one_line_error
from workflows.config import bundled_config

TINY = str(bundled_config("tiny"))
WB2_NAMES = {"z": "geopotential", "u": "u_component_of_wind", "v": "v_component_of_wind"}
WB2_UNITS = {"z": "m**2 s**-2", "u": "m s**-1", "v": "m s**-1"}


def weatherbench2(truth: xr.Dataset, levels=(250, 500, 850), lon_180: bool = True) -> xr.Dataset:
    """``truth`` (system layout: z500, u500, v500, tcwv, ...) written as WeatherBench2 ERA5 would hold it:
    long names, ``level`` (hPa) with other levels beside 500 holding other values, ``latitude`` ascending,
    ``longitude`` in -180..180 (or 0..360), and an extra variable no forecast asks for."""
    lat_index = slice(None, None, -1)
    flipped = truth.isel(lat=lat_index)
    lon = flipped["lon"].values
    if lon_180:
        lon = np.where(lon >= 180, lon - 360, lon)
    order = np.argsort(lon, kind="stable")
    flipped = flipped.isel(lon=order)
    coords = {"time": truth["time"].values, "level": np.array(levels), "latitude": flipped["lat"].values,
              "longitude": lon[order]}
    data = {}
    for short, name in WB2_NAMES.items():
        channel = f"{short}500"
        if channel not in truth:
            continue
        base = flipped[channel].values
        stack = np.stack([base if p == 500 else base * 0.5 + p for p in levels], axis=1)
        data[name] = (("time", "level", "latitude", "longitude"), stack, {"units": WB2_UNITS[short]})
    if "tcwv" in truth:
        data["total_column_water_vapour"] = (("time", "latitude", "longitude"), flipped["tcwv"].values,
                                             {"units": "kg m**-2"})
    data["2m_temperature"] = (("time", "latitude", "longitude"), np.full(flipped["tcwv"].shape if "tcwv" in truth else
                                                                           flipped["z500"].shape, 280.0, np.float32))
    return xr.Dataset(data, coords=coords)


# -- the library: verify.align_truth -----------------------------------------------------------------
@pytest.fixture(scope="module")
def mock():
    return mock_ensemble(members=4, channels=("z500", "u500", "tcwv"), init_times=2, leads=3)


def test_align_truth_takes_each_valid_time_out_of_a_longer_truth(mock):
    forecast, truth = mock
    assert truth.sizes["time"] > forecast.sizes["init_time"] * forecast.sizes["lead_time"]  # more times
    aligned = verify.align_truth(forecast, truth)
    for i, init in enumerate(forecast["init_time"].values):
        for j, lead in enumerate(forecast["lead_time"].values):
            for name in forecast.data_vars:
                expected = truth[name].sel(time=init + lead).values
                np.testing.assert_array_equal(aligned[name].isel(init_time=i, lead_time=j).values, expected)
    assert dict(aligned.sizes) == {"init_time": 2, "lead_time": 3, "lat": 17, "lon": 32}


def cds(era5: xr.Dataset) -> xr.Dataset:
    """A WeatherBench2 dataset renamed as the 2024+ CDS netCDF names it."""
    names = {"geopotential": "z", "u_component_of_wind": "u", "v_component_of_wind": "v",
             "total_column_water_vapour": "tcwv", "2m_temperature": "t2m"}
    return era5.rename({k: v for k, v in names.items() if k in era5}).rename(time="valid_time", level="pressure_level")


def test_align_truth_reads_weatherbench2_and_cds_truths_like_the_nature_run(mock):
    forecast, truth = mock
    reference = verify.align_truth(forecast, truth)
    for era5 in (weatherbench2(truth), weatherbench2(truth, lon_180=False), cds(weatherbench2(truth))):
        aligned = verify.align_truth(forecast, era5)
        xr.testing.assert_equal(aligned[sorted(aligned.data_vars)], reference[sorted(reference.data_vars)])


def test_geopotential_height_truth_is_converted_through_the_lexicon(mock):
    forecast, truth = mock
    heights = weatherbench2(truth[["z500"]]).rename(geopotential="geopotential_height")
    heights["geopotential_height"] = (heights["geopotential_height"] / G0).assign_attrs(units="m")
    aligned = verify.align_truth(forecast[["z500"]], heights)
    np.testing.assert_allclose(aligned["z500"].values, verify.align_truth(forecast[["z500"]], truth)["z500"].values,
                               rtol=1e-6)


def test_a_truth_with_its_own_time_axis_is_refused_by_the_scores_not_broadcast(mock):
    forecast, truth = mock
    with pytest.raises(ValueError, match="own time dimension 'time'.*align_truth"):
        verify.crps(forecast["z500"], truth["z500"])
    renamed = verify.align_truth(forecast, truth)["z500"].rename(lat="latitude", lon="longitude")
    with pytest.raises(ValueError, match="'latitude' and forecast dimension 'lat' name the same axis"):
        verify.crps(forecast["z500"], renamed)
    aligned = verify.align_truth(forecast, truth)
    assert verify.crps(forecast["z500"], aligned["z500"]).dims == ("init_time", "lead_time", "lat", "lon")


def test_a_truth_short_of_valid_times_names_the_first_missing_one(mock):
    forecast, truth = mock
    short = truth.isel(time=slice(None, -2))
    covers = r"\(it covers 2000-12-02T00:00 to 2001-01-02T00:00\)"
    with pytest.raises(DataError, match=r"truth lacks 2 valid time\(s\), first 2001-01-02T06:00 " + covers):
        verify.align_truth(forecast, short)


def test_a_truth_with_an_extra_dimension_is_refused_naming_it(mock):
    forecast, truth = mock
    ensemble_truth = xr.concat([truth, truth + 1], dim="number")
    with pytest.raises(DataError, match="extra dimension 'number' of size 2"):
        verify.align_truth(forecast, ensemble_truth)
    with pytest.raises(DataError, match=r"dimension\(s\) \['number'\] that the forecast lacks"):
        verify.align_truth(forecast["z500"], ensemble_truth["z500"])


def test_a_truth_over_a_larger_area_is_cut_to_a_regional_forecast(mock):
    forecast, truth = mock
    box = forecast.isel(lat=slice(3, 9), lon=list(range(28, 32)) + list(range(0, 5)))  # across the 0 meridian
    box = box.assign_coords(lon=np.where(box["lon"] >= 180, box["lon"] - 360, box["lon"]))  # -180..180
    box = box.isel(lat=slice(None, None, -1))  # latitudes ascending
    aligned = verify.align_truth(box, weatherbench2(truth))
    expected = verify.align_truth(forecast, truth).isel(lat=slice(3, 9), lon=list(range(28, 32)) + list(range(0, 5)))
    np.testing.assert_array_equal(aligned["z500"].values, expected["z500"].values[:, :, ::-1, :])
    np.testing.assert_array_equal(aligned["lon"].values, box["lon"].values)


def test_a_truth_on_another_grid_is_refused_in_one_line_or_regridded_when_asked(mock):
    forecast, _ = mock
    fine, _ = mock_ensemble(members=1, channels=("z500", "u500", "tcwv"), init_times=2, leads=3, nlat=33, nlon=64)
    _, fine_truth = mock_ensemble(members=1, channels=("z500", "u500", "tcwv"), init_times=2, leads=3, nlat=33, nlon=64)
    with pytest.raises(DataError) as refused:
        verify.align_truth(forecast, fine_truth)
    message = str(refused.value)
    assert "\n" not in message
    assert "grid 33x64 (lat 90..-90, lon 0..354.375)" in message and "forecast grid 17x32" in message
    assert "--regrid" in message
    regridded = verify.align_truth(forecast, fine_truth, regrid=True)
    r = Regridder(fine_truth["lat"].values, fine_truth["lon"].values, forecast["lat"].values, forecast["lon"].values)
    valid = forecast["valid_time"].values[1, 2]
    np.testing.assert_allclose(regridded["z500"].isel(init_time=1, lead_time=2).values,
                               r(fine_truth["z500"].sel(time=valid).values), rtol=1e-6)


def test_channels_the_truth_lacks_are_skipped_with_a_warning(mock, caplog):
    forecast, truth = mock
    with caplog.at_level(logging.WARNING):
        aligned = verify.align_truth(forecast, weatherbench2(truth.drop_vars("tcwv")))
    assert sorted(aligned.data_vars) == ["u500", "z500"]
    assert "lacks channel(s) ['tcwv']" in caplog.text
    with pytest.raises(DataError, match="shares no channel with the forecast"):
        verify.align_truth(forecast[["tcwv"]], weatherbench2(truth.drop_vars("tcwv")))


def test_foreign_forecast_dimension_names(mock):
    forecast, truth = mock
    reference = verify.align_truth(forecast, truth)
    earth2studio = forecast.rename(member="ensemble", init_time="time").drop_vars("valid_time")
    aligned = verify.align_truth(earth2studio, truth, dims={"member": "ensemble", "init_time": "time"})
    assert aligned["z500"].dims == ("time", "lead_time", "lat", "lon")
    np.testing.assert_array_equal(aligned["z500"].values, reference["z500"].values)
    crps = verify.crps(earth2studio["z500"], aligned["z500"], member_dim="ensemble")
    np.testing.assert_array_equal(crps.values, verify.crps(forecast["z500"], reference["z500"]).values)
    wb2 = forecast.rename(member="realization", init_time="time", lead_time="prediction_timedelta", lat="latitude",
                          lon="longitude").drop_vars("valid_time")
    dims = verify.parse_dims("member=realization,init_time=time,lead_time=prediction_timedelta")
    aligned = verify.align_truth(wb2, weatherbench2(truth), dims=dims)
    assert aligned["z500"].dims == ("time", "prediction_timedelta", "latitude", "longitude")
    np.testing.assert_array_equal(aligned["z500"].values, reference["z500"].values)
    with pytest.raises(ValueError, match=r"no dimension for member \('ensemble'\), init_time \('time'\)"):
        verify.align_truth(forecast, truth, dims={"member": "ensemble", "init_time": "time"})
    mean = forecast.mean("member")  # a forecast without members (an ensemble mean) aligns as well
    np.testing.assert_array_equal(verify.align_truth(mean, truth)["z500"].values, reference["z500"].values)
    with pytest.raises(ValueError, match="must read ROLE=NAME"):
        verify.parse_dims("members=ensemble")


# -- the command line on the planet's own ensemble store ----------------------------------------------
def score(processes, store, truth, out, *extra):
    return processes.run("-q", "score", store, "--truth", truth, "--out", out, "--workers", "1", *extra)


@pytest.fixture(scope="module")
def planet(tiny_world, forecast_processes, tmp_path_factory):
    """The tiny world's ensemble store, its nature run, and its scores against the nature run."""
    folder = tmp_path_factory.mktemp("truth")
    store = folder / "ensemble.zarr"
    result = forecast_processes.run("-q", "run", TINY, "--workdir", tiny_world.paths.workdir, f"paths.store={store}")
    assert result.returncode == 0, result.stderr
    nature = tiny_world.paths.resolve("nature")
    result = score(forecast_processes, store, nature, folder / "nature-scores")
    assert result.returncode == 0, result.stderr
    return store, nature, xr.open_dataset(folder / "nature-scores" / "scores.nc").load()


def test_scores_from_a_weatherbench2_netcdf_equal_those_from_the_nature_run(planet, forecast_processes, tmp_path):
    store, nature, reference = planet
    truth = tmp_path / "era5.nc"
    weatherbench2(xr.open_zarr(nature, consolidated=False).load()).to_netcdf(truth)
    result = score(forecast_processes, store, truth, tmp_path / "scores")
    assert result.returncode == 0, result.stderr
    scores = xr.open_dataset(tmp_path / "scores" / "scores.nc").load()
    assert sorted(scores["channel"].values) == ["tcwv", "u500", "v500", "z500"]
    xr.testing.assert_identical(scores, reference)


def test_a_truth_without_a_channel_scores_the_others_and_warns(planet, tmp_path, caplog):
    from forecast.verify.scores import open_ensemble, open_truth, score_ensemble

    store, nature, reference = planet
    truth = tmp_path / "era5.nc"
    era5 = weatherbench2(xr.open_zarr(nature, consolidated=False).load())
    era5.drop_vars("total_column_water_vapour").to_netcdf(truth)
    with caplog.at_level(logging.WARNING):
        lazy = score_ensemble(open_ensemble(store), open_truth(truth))
    assert "lacks channel(s) ['tcwv']; they are not scored" in caplog.text
    assert sorted(lazy["channel"].values) == ["u500", "v500", "z500"]
    crps = lazy["crps"].compute(scheduler="synchronous")
    xr.testing.assert_allclose(crps, reference["crps"].sel(channel=crps["channel"].values), rtol=1e-6)


def test_a_truth_on_another_grid_is_refused_before_anything_is_written(planet, forecast_processes, tmp_path):
    from forecast.verify.scores import open_ensemble, score_ensemble

    store, nature, reference = planet
    coarse = tmp_path / "coarse.zarr"
    xr.open_zarr(nature, consolidated=False).isel(lat=slice(None, None, 2), lon=slice(None, None, 2)).to_zarr(coarse)
    result = score(forecast_processes, store, coarse, tmp_path / "scores")
    assert_one_line_error(result, 2, "grid 9x16 (lat 90..-90, lon 0..337.5)", "forecast grid 17x32", "--regrid")
    assert not (tmp_path / "scores").exists()
    lazy = score_ensemble(open_ensemble(store), xr.open_zarr(coarse), regrid=True, climate=False)
    rmse = lazy["ensemble_mean_rmse"].compute(scheduler="synchronous")
    assert np.isfinite(rmse).all() and not rmse.equals(reference["ensemble_mean_rmse"])  # regridded truth differs


def test_a_truth_that_does_not_fit_is_refused_in_one_line(planet, forecast_processes, tmp_path):
    store, nature, _ = planet
    truth = xr.open_zarr(nature, consolidated=False).load()
    ensemble = tmp_path / "ensemble-truth.nc"
    xr.concat([truth, truth], dim="number").to_netcdf(ensemble)
    assert_one_line_error(score(forecast_processes, store, ensemble, tmp_path / "a"), 2, "extra dimension 'number'")
    short = tmp_path / "short.nc"
    truth.isel(time=slice(0, 40)).to_netcdf(short)
    assert_one_line_error(score(forecast_processes, store, short, tmp_path / "b"), 2, "truth lacks", "valid time(s)")
    assert_one_line_error(score(forecast_processes, store, tmp_path / "absent.nc", tmp_path / "c"), 2, "does not exist")


@pytest.mark.parametrize("layout", ["earth2studio", "weatherbench2"])
def test_a_store_another_tool_wrote_is_scored_when_told_its_dimension_names(planet, forecast_processes, tmp_path,
                                                                             layout):
    store, nature, reference = planet
    ours = xr.open_zarr(store, consolidated=False)
    foreign = ours[[str(v) for v in ours.data_vars if "member" in ours[v].dims]]
    foreign = foreign.drop_vars([c for c in foreign.coords if c not in foreign.dims]).load()
    foreign.attrs = {}
    if layout == "earth2studio":
        foreign = foreign.rename(member="ensemble", init_time="time")
        dims = "member=ensemble,init_time=time"
    else:  # latitudes ascending, longitudes -180..180
        foreign = foreign.rename(member="realization", init_time="time", lead_time="prediction_timedelta",
                                 lat="latitude", lon="longitude").isel(latitude=slice(None, None, -1))
        foreign = foreign.assign_coords(longitude=np.where(foreign["longitude"] >= 180, foreign["longitude"] - 360,
                                                           foreign["longitude"])).sortby("longitude")
        names = {"z500": "geopotential", "u500": "u_component_of_wind", "v500": "v_component_of_wind",
                 "tcwv": "total_column_water_vapour"}  # pressure-level fields over a level dimension
        foreign = foreign.rename(names)
        for name in list(names.values())[:3]:
            foreign[name] = foreign[name].expand_dims(level=[500], axis=3)
        dims = "member=realization,init_time=time,lead_time=prediction_timedelta"
    for variable in foreign.variables.values():
        variable.encoding = {}
    path = tmp_path / f"{layout}.zarr"
    foreign.to_zarr(path, zarr_format=2, consolidated=True)
    assert_one_line_error(score(forecast_processes, path, nature, tmp_path / "x"), 3, "no dimension for 'member'",
                          "name them (--dims")
    names = ["crps", "ensemble_mean_rmse", "spread_skill_ratio", "crps_skill_score", "brier_score"]
    if layout == "earth2studio":  # the command line, end to end
        result = score(forecast_processes, path, nature, tmp_path / "scores", "--dims", dims)
        assert result.returncode == 0, result.stderr
        scores = xr.open_dataset(tmp_path / "scores" / "scores.nc").load()
    else:  # the library (a few scores, to keep the test short)
        from forecast.verify.scores import open_ensemble, open_truth, score_ensemble

        lazy = score_ensemble(open_ensemble(path, dims=verify.parse_dims(dims)), open_truth(nature))
        scores = lazy[names].compute(scheduler="synchronous")
    for name in names:
        xr.testing.assert_allclose(scores[name], reference[name], rtol=1e-5)
    assert "control_rmse" not in scores  # no member plan, so no control member


def test_a_store_it_cannot_understand_is_refused_in_one_line(planet, forecast_processes, tmp_path):
    store, nature, _ = planet
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a store")
    assert_one_line_error(score(forecast_processes, tmp_path / "junk", nature, tmp_path / "a"), 3,
                          "is not a readable Zarr store")
    assert_one_line_error(score(forecast_processes, nature, nature, tmp_path / "b"), 3,
                          "no dimension for 'member', 'init_time', 'lead_time'")
    assert_one_line_error(score(forecast_processes, store, nature, tmp_path / "c", "--dims", "members=ensemble"), 2,
                          "must read ROLE=NAME")


def test_scores_do_not_depend_on_the_truth_file_precision_or_a_one_value_level_axis(mock):
    from forecast.verify.scores import score_ensemble

    forecast, truth = mock
    era5 = weatherbench2(truth, levels=(500,)).astype(np.float64)
    era5["total_column_water_vapour"] = era5["total_column_water_vapour"].expand_dims(level=[500], axis=1)
    reference = score_ensemble(forecast, truth).compute(scheduler="synchronous")
    scores = score_ensemble(forecast, era5).compute(scheduler="synchronous")
    assert sorted(scores["channel"].values) == ["tcwv", "u500", "z500"]
    xr.testing.assert_equal(scores, reference)

"""ERA5 readers: WeatherBench2 / ARCO-ERA5 Zarr and CDS netCDF with each layout quirk, units, regridding, errors."""

import numpy as np
import pytest
import xarray as xr

from forecast.channels import PRESSURE_LEVELS
from forecast.data import DataError, open_source
from forecast.data.era5 import open_era5
from forecast.grid import Grid
from forecast.data.lexicon import G0
from forecast.data.regrid import Regridder

NLAT, NLON = 17, 32
LAT = np.linspace(90, -90, NLAT)  # descending, poles included
LON = np.arange(NLON) * 360.0 / NLON  # 0..360
TIMES = np.array(["2020-01-01T00", "2020-01-01T06", "2020-01-01T12"], dtype="datetime64[ns]")
SURFACE = {"u10m": "10m_u_component_of_wind", "v10m": "10m_v_component_of_wind", "u100m": "100m_u_component_of_wind",
           "v100m": "100m_v_component_of_wind", "t2m": "2m_temperature", "d2m": "2m_dewpoint_temperature",
           "sp": "surface_pressure", "msl": "mean_sea_level_pressure", "tcwv": "total_column_water_vapour"}
CDS_SURFACE = {"u10m": "u10", "v10m": "v10", "u100m": "u100", "v100m": "v100", "t2m": "t2m", "d2m": "d2m", "sp": "sp",
               "msl": "msl", "tcwv": "tcwv"}
LEVEL = {"u": "u_component_of_wind", "v": "v_component_of_wind", "z": "geopotential", "t": "temperature",
         "q": "specific_humidity"}
ALL_CHANNELS = list(SURFACE) + [f"{v}{p}" for v in LEVEL for p in PRESSURE_LEVELS]


@pytest.fixture(scope="module")
def truth():
    """Field values per channel on the system grid (north->south, 0..360): (time, lat, lon) float32."""
    rng = np.random.default_rng(7)
    fields = {name: rng.normal(100, 10, (len(TIMES), NLAT, NLON)).astype(np.float32) for name in SURFACE}
    levels = {v: rng.normal(50, 5, (len(TIMES), len(PRESSURE_LEVELS), NLAT, NLON)).astype(np.float32) for v in LEVEL}
    return fields, levels


def wb2_dataset(truth, lat_ascending=False, lon_180=False, dims=("latitude", "longitude"), lon_first=False):
    fields, levels = truth
    lat_index = np.arange(NLAT)[::-1] if lat_ascending else np.arange(NLAT)
    lon = np.where(LON >= 180, LON - 360, LON) if lon_180 else LON
    lon_index = np.argsort(lon, kind="stable")
    lat_dim, lon_dim = dims

    def arrange(a):
        a = a[..., lat_index, :][..., lon_index]
        return np.swapaxes(a, -1, -2) if lon_first else a

    space = (lon_dim, lat_dim) if lon_first else (lat_dim, lon_dim)
    data = {SURFACE[k]: (("time",) + space, arrange(v)) for k, v in fields.items()}
    data.update({LEVEL[k]: (("time", "level") + space, arrange(v)) for k, v in levels.items()})
    return xr.Dataset(data, coords={"time": TIMES, "level": np.array(PRESSURE_LEVELS), lat_dim: LAT[lat_index],
                                    lon_dim: lon[lon_index]})


def cds_dataset(truth):
    """The 2024+ CDS netCDF: short names, valid_time, pressure_level, -180..180 longitudes, ascending latitudes."""
    ds = wb2_dataset(truth, lat_ascending=True, lon_180=True)
    ds = ds.rename({SURFACE[k]: CDS_SURFACE[k] for k in SURFACE} | {LEVEL[k]: k for k in LEVEL})
    ds = ds.rename({"time": "valid_time", "level": "pressure_level"})
    ds["pressure_level"] = ds["pressure_level"].astype(float).assign_attrs(units="hPa")
    return ds.assign_coords(number=0, expver=("valid_time", ["0001"] * len(TIMES)))


def test_wb2_zarr_and_netcdf_with_other_orientation_give_identical_initial_states(truth, tmp_path):
    wb2 = tmp_path / "era5.zarr"
    wb2_dataset(truth).to_zarr(wb2, consolidated=False)
    nc = tmp_path / "era5.nc"
    wb2_dataset(truth, lat_ascending=True, lon_180=True).to_netcdf(nc)
    cds = tmp_path / "cds.nc"
    cds_dataset(truth).to_netcdf(cds)
    a, b, c = open_source(wb2), open_source(nc), open_source(cds)
    assert a.grid == b.grid == c.grid == Grid(NLAT, NLON)
    assert set(ALL_CHANNELS) <= set(a.channels)
    x = a.initial_state("2020-01-01T06", ALL_CHANNELS)
    assert np.array_equal(x, b.initial_state("2020-01-01T06", ALL_CHANNELS))
    assert np.array_equal(x, c.initial_state("2020-01-01T06", ALL_CHANNELS))
    fields, levels = truth
    assert np.array_equal(x[0, ALL_CHANNELS.index("t2m")], fields["t2m"][1])
    assert np.array_equal(x[0, ALL_CHANNELS.index("q850")], levels["q"][1, PRESSURE_LEVELS.index(850)])


def test_lat_lon_names_and_longitude_first_dimension_order(truth):
    ds = wb2_dataset(truth, lat_ascending=True, dims=("lat", "lon"), lon_first=True)
    x = open_era5(ds).initial_state("2020-01-01T00", ["z500", "tcwv"])
    assert np.array_equal(x[0, 0], truth[1]["z"][0, PRESSURE_LEVELS.index(500)])
    assert np.array_equal(x[0, 1], truth[0]["tcwv"][0])


def test_arco_hourly_37_levels(truth):
    hourly = np.arange(TIMES[0], TIMES[-1] + np.timedelta64(1, "h"), np.timedelta64(1, "h"))
    levels37 = np.array([1, 2, 3, 5, 7, 10, 20, 30, 50, 70, 100, 125, 150, 175, 200, 225, 250, 300, 350, 400, 450,
                         500, 550, 600, 650, 700, 750, 775, 800, 825, 850, 875, 900, 925, 950, 975, 1000])
    data = np.zeros((len(hourly), len(levels37), NLAT, NLON), dtype=np.float32)
    data[6, list(levels37).index(500)] = truth[1]["t"][1, PRESSURE_LEVELS.index(500)]
    ds = xr.Dataset({"temperature": (("time", "level", "latitude", "longitude"), data)},
                    coords={"time": hourly, "level": levels37, "latitude": LAT, "longitude": LON})
    source = open_era5(ds, layout="arco-era5")
    assert "t975" in source.channels and "t500" in source.channels
    assert np.array_equal(source.initial_state("2020-01-01T06", ["t500"])[0, 0], data[6, list(levels37).index(500)])


def test_units_geopotential_height_and_hectopascal_are_converted():
    height = np.full((1, 1, NLAT, NLON), 5500.0, dtype=np.float32)
    ds = xr.Dataset({"gh": (("time", "isobaricInhPa", "latitude", "longitude"), height, {"units": "gpm"}),
                     "sp": (("time", "latitude", "longitude"), np.full((1, NLAT, NLON), 1000.0, np.float32), {"units": "hPa"}),
                     "t2m": (("time", "latitude", "longitude"), np.full((1, NLAT, NLON), 15.0, np.float32), {"units": "degC"})},
                    coords={"time": TIMES[:1], "isobaricInhPa": [500.0], "latitude": LAT, "longitude": LON})
    x = open_era5(ds).initial_state("2020-01-01T00", ["z500", "sp", "t2m"])
    assert np.allclose(x[0, 0], 5500.0 * G0) and np.allclose(x[0, 1], 100000.0) and np.allclose(x[0, 2], 288.15)
    bad = ds.assign(sp=ds["sp"].assign_attrs(units="furlongs"))
    with pytest.raises(DataError, match="furlongs"):
        open_era5(bad).check_channels(["sp"])


def test_errors_name_what_the_file_lacks(truth):
    ds = wb2_dataset(truth).sel(level=[500, 850])
    source = open_era5(ds, channels=["z500", "z50", "q850", "t2m"])
    with pytest.raises(DataError, match=r"z50 needs geopotential at 50 hPa; the file's levels are \[500, 850\]"):
        source.initial_state("2020-01-01T00", ["z500", "z50"])
    with pytest.raises(DataError, match="missing channel.*vorticity"):
        open_era5(ds).check_channels(["vorticity"])
    no_q = ds.drop_vars("specific_humidity")
    with pytest.raises(DataError, match="'specific_humidity' .* or 'q' .* at 850 hPa"):
        open_era5(no_q, channels=["q850"]).check_channels(["q850"])
    with pytest.raises(DataError, match="no latitude dimension"):
        open_era5(ds.rename({"latitude": "y"}))
    members = xr.concat([ds, ds], dim="number")
    with pytest.raises(DataError, match="extra dimension 'number' of size 2"):
        open_era5(members, channels=["t2m"]).check_channels(["t2m"])


def test_cds_expver_dimension_is_merged():
    era5 = np.full((2, NLAT, NLON), np.nan, dtype=np.float32)
    era5t = np.full((2, NLAT, NLON), np.nan, dtype=np.float32)
    era5[0], era5t[1] = 280.0, 281.0
    ds = xr.Dataset({"t2m": (("time", "expver", "latitude", "longitude"), np.stack([era5, era5t], axis=1))},
                    coords={"time": TIMES[:2], "expver": [1, 5], "latitude": LAT, "longitude": LON})
    fields = open_era5(ds).fields(TIMES[:2], ["t2m"])
    assert np.all(fields[0] == 280.0) and np.all(fields[1] == 281.0)


def test_regridding_to_the_model_grid(truth, tmp_path):
    path = tmp_path / "fine.zarr"
    wb2_dataset(truth).to_zarr(path, consolidated=False)
    coarse = Grid(9, 16)
    source = open_source(path, grid=coarse, regrid=True)
    assert source.grid == coarse
    x = source.initial_state("2020-01-01T00", ["t2m"])[0, 0].astype(np.float64)
    fine = truth[0]["t2m"][0].astype(np.float64)
    # conservative coarsening keeps the area-weighted global mean
    assert np.isclose((x * coarse.area_weights()).sum(), (fine * Grid(NLAT, NLON).area_weights()).sum(), rtol=1e-6)
    # bilinear refining by 2 reproduces the source at shared points and averages in between
    finer = Grid(2 * NLAT - 1, 2 * NLON)
    y = open_source(path, grid=finer, regrid=True).initial_state("2020-01-01T00", ["t2m"])[0, 0]
    assert np.allclose(y[::2, ::2], fine, atol=1e-4)
    assert np.allclose(y[1::2, ::2], (fine[:-1] + fine[1:]) / 2, atol=1e-4)
    assert np.allclose(y[::2, -1], (fine[:, -1] + fine[:, 0]) / 2, atol=1e-4)  # periodic in longitude
    with pytest.raises(DataError, match="data.regrid"):  # never silently: regridding is asked for
        open_source(path, grid=coarse)


def test_regridder_handles_a_source_without_poles():
    src_lat = np.linspace(89.75, -89.75, 360)  # a 0.5 deg grid without the poles
    src_lon = np.arange(720) * 0.5
    field = np.cos(np.radians(src_lat))[:, None] * np.ones(720)
    out = Regridder(src_lat, src_lon, Grid(181, 360).lat, Grid(181, 360).lon, method="bilinear")(field[None])[0]
    assert np.allclose(out[0], field[0, 0]) and np.allclose(out[90], 1.0, atol=1e-4)

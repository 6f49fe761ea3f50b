"""Importing makani model packages (HENS layout) and running them, against an independent functional reference."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from forecast.rollout import rollout
from models.solar import cos_zenith
from models.checkpoint import CheckpointError, load_checkpoint
from models.makani import import_package
from tests.models.makani_mock import HENS_CHANNELS, write_mock_package

TIME = np.datetime64("2021-07-01T06:00", "ns")


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return write_mock_package(tmp_path_factory.mktemp("pkg") / "sfno_linear_74chq_sc2_layers8_edim620_wstgl2-mock")


@pytest.fixture(scope="module")
def imported(package, tmp_path_factory):
    out = tmp_path_factory.mktemp("ours") / "ck"
    import_package(package, out)
    return out


def reference_step(package: Path, x: torch.Tensor, time) -> torch.Tensor:
    """makani v0.1.0's SFNO evaluated directly from the package files: torch.nn.functional + torch-harmonics."""
    import torch_harmonics as th

    config = json.loads((package / "config.json").read_text())
    state = torch.load(package / "training_checkpoints" / "best_ckpt_mp0.tar", weights_only=True)["model_state"]
    w = {k.removeprefix("module.").removeprefix("model."): v for k, v in state.items()}
    nlat, nlon, sf = config["img_shape_x"], config["img_shape_y"], config["scale_factor"]
    h, wd = nlat // sf, nlon // sf
    modes = min(h, wd // 2 + 1)
    lat = 90 - 180 * np.arange(nlat) / (nlat - 1)
    lon = 360 * np.arange(nlon) / nlon
    b = x.shape[0]
    # extra inputs, built as makani's ModelWrapper and Preprocessor2D build them
    extras = []
    if config["add_zenith"]:
        extras.append(torch.from_numpy(cos_zenith(time, lat, lon).astype(np.float32)).expand(b, 1, nlat, nlon))
    if config["add_grid"]:
        if "lat" in config:
            ty, tx = np.meshgrid(np.radians(config["lat"]), np.radians(config["lon"]), indexing="ij")
        else:
            ty, tx = np.meshgrid(np.linspace(0, 1, nlat + 1)[:-1], np.linspace(0, 1, nlon + 1)[:-1], indexing="ij")
        for k in range(1, config["grid_num_frequencies"] + 1):
            extras += [torch.tensor(np.sin(k * ty), dtype=torch.float32).expand(b, 1, nlat, nlon),
                       torch.tensor(np.sin(k * tx), dtype=torch.float32).expand(b, 1, nlat, nlon)]
    if config["add_orography"]:
        z = xr.open_dataset(package / "orography.nc")["Z"].values[0].astype(np.float64)
        z = (z - z.min()) / (z.max() - z.min())
        extras.append(torch.tensor((z - z.mean()) / (z.std(ddof=1) + 1e-6), dtype=torch.float32).expand(b, 1, nlat, nlon))
    if config["add_landmask"]:
        lsm = np.trunc(xr.open_dataset(package / "land_mask.nc")["LSM"].values[0])
        for value in range(int(lsm.max()) + 1):
            extras.append(torch.tensor(lsm == value, dtype=torch.float32).expand(b, 1, nlat, nlon))
    inp = torch.cat([x] + extras, dim=1)

    def sht(n_lat, n_lon, grid):
        return th.RealSHT(n_lat, n_lon, lmax=modes, mmax=modes, grid=grid), th.InverseRealSHT(n_lat, n_lon, lmax=modes, mmax=modes, grid=grid)

    outer, inner = sht(nlat, nlon, "equiangular"), sht(h, wd, "legendre-gauss")
    y = F.conv2d(F.gelu(F.conv2d(inp, w["encoder.fwd.0.weight"], w["encoder.fwd.0.bias"])), w["encoder.fwd.2.weight"])
    layers = config["num_layers"]
    for i in range(layers):
        forward = outer[0] if i == 0 else inner[0]
        inverse = outer[1] if i == layers - 1 else inner[1]
        coeffs = forward(y)
        skip = inverse(coeffs) if (forward.nlat, forward.grid) != (inverse.nlat, inverse.grid) else y
        filtered = inverse(torch.einsum("bilm,iol->bolm", coeffs, w[f"blocks.{i}.filter.filter.weight"]))
        z0 = F.gelu(F.instance_norm(filtered, weight=w[f"blocks.{i}.norm0.weight"], bias=w[f"blocks.{i}.norm0.bias"], eps=1e-6))
        z1 = F.conv2d(F.gelu(F.conv2d(z0, w[f"blocks.{i}.mlp.fwd.0.weight"], w[f"blocks.{i}.mlp.fwd.0.bias"])),
                      w[f"blocks.{i}.mlp.fwd.3.weight"], w[f"blocks.{i}.mlp.fwd.3.bias"])
        z1 = F.instance_norm(z1, weight=w[f"blocks.{i}.norm1.weight"], bias=w[f"blocks.{i}.norm1.bias"], eps=1e-6)
        y = z1 + F.conv2d(skip, w[f"blocks.{i}.outer_skip.weight"])
    y = F.conv2d(F.gelu(F.conv2d(y, w["decoder.fwd.0.weight"], w["decoder.fwd.0.bias"])), w["decoder.fwd.2.weight"])
    return y + F.conv2d(inp, w["residual_transform.weight"])


def test_hens_package_imports_and_matches_a_direct_evaluation_of_its_weights(package, imported):
    model = load_checkpoint(imported)
    card = model.card
    assert card.channels[8] == "d2m" and len(card.channels) == 74  # channel order from config.json, 2d -> d2m
    means = np.load(package / "global_means.npy").reshape(-1)
    assert np.allclose(card.mean, means) and card.dt_hours == 6 and card.model_grid.shape == (33, 64)
    assert card.architecture["extra_inputs"]["static"] == ["orography", "land_sea_mask_0", "land_sea_mask_1"]
    x = torch.randn(2, 74, 33, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model.step(x, time=TIME)
        reference = reference_step(package, x, TIME)
    assert ours.shape == (2, 74, 33, 64) and torch.isfinite(ours).all()
    assert torch.allclose(ours, reference, atol=2e-4, rtol=1e-4), (ours - reference).abs().max()
    # a different valid time changes the cos-zenith input, hence the output
    assert not torch.allclose(ours, model.step(x, time=TIME + np.timedelta64(6, "h")))


def test_scale_factor_one_with_lat_lon_grid_features_and_no_static_inputs(tmp_path):
    lat, lon = (90 - 180 * np.arange(33) / 32).tolist(), (360 * np.arange(64) / 64).tolist()
    package = write_mock_package(tmp_path / "sc1", scale_factor=1, embed_dim=8, grid_frequencies=1, zenith=False,
                                 orography=False, land_mask=False, prefix="module.", lat=lat, lon=lon)
    import_package(package, tmp_path / "ck")
    model = load_checkpoint(tmp_path / "ck")
    assert model.card.architecture["extra_inputs"] == {"grid": {"kind": "sinusoidal", "frequencies": 1,
                                                                 "coordinates": "radians"}}
    assert not model.needs_time
    x = torch.randn(1, 74, 33, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(model.step(x), reference_step(package, x, None), atol=2e-4, rtol=1e-4)


def test_imported_checkpoint_round_trips_and_rolls_out_with_valid_times(imported):
    a, b = load_checkpoint(imported), load_checkpoint(imported)
    x = torch.randn(1, 74, 33, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        states = [s.clone() for _, s in rollout(a, x, 2, start_time=TIME)]
        first = b.step(x, time=TIME)
        second = b.step(first, time=TIME + np.timedelta64(6, "h"))
    assert torch.equal(states[1], first) and torch.equal(states[2], second)
    with pytest.raises(ValueError, match="valid time"):
        a.step(x)


def test_later_makani_filter_layout_imports_to_the_same_weights(tmp_path, imported):
    later = write_mock_package(tmp_path / "later", filter_layout="grouped", prefix="module.")
    import_package(later, tmp_path / "ck")
    a, b = load_checkpoint(imported).state_dict(), load_checkpoint(tmp_path / "ck").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unmappable_weight_is_refused(tmp_path):
    bad = write_mock_package(tmp_path / "bad", extra_state={"module.model.pos_embed": torch.zeros(1, 16, 33, 64)})
    with pytest.raises(CheckpointError, match=r"cannot map 1 weight.*pos_embed"):
        import_package(bad, tmp_path / "ck")
    assert not (tmp_path / "ck" / "card.json").exists()


class Payload:
    """Unpickling this would create a file: a safe loader must refuse it without constructing it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_object_that_is_not_a_tensor_is_refused_unconstructed(tmp_path):
    marker = tmp_path / "constructed"
    bad = write_mock_package(tmp_path / "bad", extra_checkpoint={"params": Payload(str(marker))})
    with pytest.raises(CheckpointError, match="not a tensor or plain container"):
        import_package(bad, tmp_path / "ck")
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    ({"num_layers": 3}, "missing"),
    ({"pos_embed": "direct"}, "pos_embed"),
    ({"filter_type": "non-linear"}, "filter_type"),
    ({"channel_names": HENS_CHANNELS[:-1] + ["vorticity"]}, "vorticity"),
])
def test_configurations_it_cannot_map_are_refused(tmp_path, change, message):
    bad = write_mock_package(tmp_path / "bad", num_layers=2, embed_dim=8)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError, match=message):
        import_package(bad, tmp_path / "ck")


def test_missing_invariant_file_is_named(tmp_path):
    bad = write_mock_package(tmp_path / "bad", embed_dim=8)
    (bad / "land_mask.nc").unlink()
    with pytest.raises(CheckpointError, match="land_mask.nc"):
        import_package(bad, tmp_path / "ck")


def test_command_line_imports_and_reports_refusals_in_one_line(package, tmp_path, capsys):
    from workflows.cli import main

    assert main(["-q", "import-checkpoint", str(package), str(tmp_path / "ck")]) == 0
    assert (tmp_path / "ck" / "card.json").is_file() and "74 channels" in capsys.readouterr().out
    assert main(["-q", "import-checkpoint", str(tmp_path / "nowhere"), str(tmp_path / "ck2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("forecast: error:") and "nowhere" in err[0]


def test_ensemble_from_era5_with_an_imported_hens_package(imported, tmp_path):
    """WB2-layout analyses -> imported HENS-config model (cos zenith) -> bred vectors -> store."""
    from ensembles.engine import EnsembleEngine, PerturbationSettings
    from ensembles.plan import MemberPlan
    from forecast.data.era5 import open_era5

    card = load_checkpoint(imported).card
    times = np.arange(TIME - np.timedelta64(18, "h"), TIME + np.timedelta64(1, "h"), np.timedelta64(6, "h"))
    rng = np.random.default_rng(0)
    levels = [50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000]
    names = {"u10m": "10m_u_component_of_wind", "v10m": "10m_v_component_of_wind", "u100m": "100m_u_component_of_wind",
             "v100m": "100m_v_component_of_wind", "t2m": "2m_temperature", "sp": "surface_pressure",
             "msl": "mean_sea_level_pressure", "tcwv": "total_column_water_vapour", "d2m": "2m_dewpoint_temperature"}
    space = ("time", "latitude", "longitude")

    def field(channel, shape):
        k = card.channels.index(channel)
        return (card.mean[k] + card.std[k] * rng.normal(size=shape)).astype(np.float32)

    data = {names[c]: (space, field(c, (len(times), 33, 64))) for c in names}
    for short, long in {"u": "u_component_of_wind", "v": "v_component_of_wind", "z": "geopotential", "t": "temperature",
                        "q": "specific_humidity"}.items():
        stack = np.stack([field(f"{short}{p}", (len(times), 33, 64)) for p in levels], axis=1)
        data[long] = (("time", "level", "latitude", "longitude"), stack)
    era5 = xr.Dataset(data, coords={"time": times, "level": levels, "latitude": np.linspace(-90, 90, 33),
                                    "longitude": np.arange(64) * 5.625 - 180})
    engine = EnsembleEngine(
        checkpoints=[str(imported)], plan=MemberPlan(1, 2, control=True), analyses=open_era5(era5, name="era5"),
        init_times=[TIME], lead_steps=2, batch_size=2, base_seed=1,
        perturbation=PerturbationSettings(amplitude={"z500": 0.35 * card.std[card.channels.index("z500")]}))
    store = engine.create_store(tmp_path / "ens.zarr")
    counts = engine.run(store)
    assert counts["member_steps"] == 6
    ds = xr.open_zarr(tmp_path / "ens.zarr", consolidated=False)
    assert set(card.channels) <= set(ds.data_vars) and np.isfinite(ds["z500"].values).all()
    z = ds["z500"].isel(init_time=0, lead_time=1).values
    assert np.abs(z[1] - z[0]).max() > 0 and not np.allclose(z[1], z[2])


def test_land_mask_without_exact_land_values_still_fills_the_weights_one_hot_channels(tmp_path):
    package = write_mock_package(tmp_path / "p", embed_dim=8)
    with xr.open_dataset(package / "land_mask.nc") as ds:
        fractional = ds.load()
    fractional["LSM"][:] = 0.4  # truncates to sea everywhere: makani's one_hot would find one class only
    (package / "land_mask.nc").unlink()
    fractional.to_netcdf(package / "land_mask.nc")
    import_package(package, tmp_path / "ck")
    static = load_checkpoint(tmp_path / "ck").network.extra.static
    assert torch.equal(static[0, 1], torch.ones(33, 64)) and torch.equal(static[0, 2], torch.zeros(33, 64))

"""The ensemble engine and store on the tiny world: reproducibility, resume, layout."""

import json
from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from forecast.store import StoreError
from workflows.recipes import build_engine


def run(config, path, members=None):
    engine = build_engine(config)
    store = engine.create_store(path)
    start, stop = members or (0, engine.plan.size)
    return engine, store, engine.run(store, start, stop)


@pytest.fixture(scope="module")
def full_run(tiny_world, tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "full.zarr"
    engine, store, counts = run(tiny_world, path)
    return engine, path


def test_store_layout_dims_units_and_attributes(full_run):
    engine, path = full_run
    ds = xr.open_zarr(path, consolidated=False)
    assert tuple(ds["z500"].dims) == ("member", "init_time", "lead_time", "lat", "lon")
    assert ds.sizes["member"] == 9 and ds.sizes["init_time"] == 2 and ds.sizes["lead_time"] == 3
    assert ds["z500"].dtype == np.float32 and ds["z500"].attrs["units"] == "m2 s-2"
    assert ds["lead_time"].values[1] == np.timedelta64(6, "h")
    assert (ds["valid_time"].values == ds["init_time"].values[:, None] + ds["lead_time"].values[None, :]).all()
    assert list(ds["sign"].values) == [0, 1, -1, 1, -1, 1, -1, 1, -1]
    assert list(ds["model_family"].values) == ["sfno"] * 9
    for key in ("checkpoints", "member_plan", "base_seed", "perturbation", "code_version", "batch_size"):
        assert key in ds.attrs
    assert json.loads(ds.attrs["perturbation"])["method"] == "bred_vector"
    assert ds["perturbation_seed"].shape == (2, 9)
    assert np.isfinite(ds["z500"].values).all()


def test_member_alone_is_bit_identical_to_the_full_run(full_run, tiny_world, tmp_path):
    _, full = full_run
    run(tiny_world, tmp_path / "alone.zarr", members=(5, 6))
    a = xr.open_zarr(full, consolidated=False)
    b = xr.open_zarr(tmp_path / "alone.zarr", consolidated=False)
    for name in a.data_vars:
        assert np.array_equal(a[name].isel(member=5).values, b[name].isel(member=5).values)
        assert np.isnan(b[name].isel(member=4).values).all()  # nothing else written


def test_pairs_average_to_the_control_and_differ_from_each_other(full_run):
    _, path = full_run
    ds = xr.open_zarr(path, consolidated=False).isel(lead_time=0)
    z = ds["z500"].values  # tcwv may be clipped at zero; z500 is not
    assert np.allclose((z[1] + z[2]) / 2, z[0], rtol=0, atol=1e-2)
    assert np.abs(z[1] - z[0]).max() > 1.0
    assert not np.allclose(z[1], z[3])


def test_interrupted_run_resumes_to_the_same_store(full_run, tiny_world, tmp_path):
    engine, full = full_run
    path = tmp_path / "resumed.zarr"
    store = engine.create_store(path)
    first = engine.plan.blocks(engine.batch_size)[0]
    engine.run(store, *first)  # only the control ran, as if the run had been killed
    assert not store.is_done(0, 0, engine.plan.size)
    counts = build_engine(tiny_world).run(type(store).open(path))
    assert counts["blocks_skipped"] == 2  # the first block, for both start dates
    a, b = xr.open_zarr(full, consolidated=False), xr.open_zarr(path, consolidated=False)
    for name in a.data_vars:
        assert np.array_equal(a[name].values, b[name].values)
    assert store.verify() == []


def test_existing_store_with_another_schema_is_refused(full_run, tiny_world):
    _, path = full_run
    other = replace(tiny_world, ensemble=replace(tiny_world.ensemble, seed=99))
    with pytest.raises(StoreError, match="another schema"):
        build_engine(other).create_store(path)

"""Issue 4 on the tiny world: ranks, batch sizes, streaming statistics, compact and compressed stores."""

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr

from ensembles.perturb import hemispheric_rms
from ensembles.ranks import split_windows
from workflows.launcher import rank_from_environment
from ensembles.seeds import member_generator
from forecast.store import EnsembleStore
from models.checkpoint import load_checkpoint
from workflows.recipes import build_engine


def with_ensemble(config, **changes):
    return replace(config, ensemble=replace(config.ensemble, **changes))


def values(path):
    ds = xr.open_zarr(path, consolidated=False)
    return {name: ds[name].values for name in ds.data_vars}


def test_rank_environment_and_window_split():
    assert rank_from_environment({"SLURM_PROCID": "1", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"}).rank == 1
    assert rank_from_environment({"RANK": "0", "WORLD_SIZE": "2", "SLURM_PROCID": "3", "SLURM_NTASKS": "4"}).world == 2
    assert rank_from_environment({}).world == 1
    with pytest.raises(ValueError, match="outside"):
        rank_from_environment({"RANK": "2", "WORLD_SIZE": "2"})
    parts = split_windows([(i, i + 1) for i in range(5)], 3)
    assert [len(p) for p in parts] == [1, 2, 2] and sum(parts, []) == [(i, i + 1) for i in range(5)]


def test_two_ranks_write_the_same_store_as_one(tiny_world, tmp_path):
    engine = build_engine(tiny_world)
    one = engine.create_store(tmp_path / "one.zarr")
    engine.run(one)
    two = engine.create_store(tmp_path / "two.zarr")
    for rank in (1, 0):  # either order: ranks never touch each other's shards
        build_engine(tiny_world).run(EnsembleStore.open(tmp_path / "two.zarr"), rank=rank, world=2)
    a, b = values(tmp_path / "one.zarr"), values(tmp_path / "two.zarr")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert two.verify() == []


def test_torchrun_with_two_processes_matches_one_process(tiny_world, tmp_path):
    config_args = ["workflows/configs/tiny.yaml", "--workdir", tiny_world.paths.workdir]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    single = [sys.executable, "-m", "workflows.cli", "-q", "run", *config_args, f"paths.store={tmp_path / 'a.zarr'}"]
    subprocess.run(single, check=True, env=env, timeout=300)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                "-m", "workflows.cli", "-q", "run", *config_args, f"paths.store={tmp_path / 'b.zarr'}"]
    result = subprocess.run(torchrun, env=env, timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = values(tmp_path / "a.zarr"), values(tmp_path / "b.zarr")
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_batch_size_changes_members_only_by_float32_round_off(tiny_world, tmp_path):
    """The bound the tests hold: |batch 2 - batch 4| <= 1e-5 x the field's standard deviation + 1e-6 |x|."""
    stores = {}
    for batch in (2, 4):
        config = with_ensemble(tiny_world, batch_size=batch)
        engine = build_engine(config)
        store = engine.create_store(tmp_path / f"b{batch}.zarr")
        engine.run(store)
        stores[batch] = values(tmp_path / f"b{batch}.zarr")
    for name, a in stores[2].items():
        b = stores[4][name]
        assert np.all(np.abs(a - b) <= 1e-5 * a.std() + 1e-6 * np.abs(a)), name


def test_streaming_statistics_equal_statistics_of_the_stored_members(tiny_world, tmp_path):
    statistics = replace(tiny_world.ensemble.statistics, channels=("z500", "tcwv"), thresholds={"z500": [50000.0, 55000.0]},
                         quantiles=(0.0, 0.1, 0.5, 1.0), tail_members=5)
    config = with_ensemble(tiny_world, statistics=statistics)
    engine = build_engine(config)
    path = tmp_path / "stats.zarr"
    for rank in (0, 1):  # two ranks: parts are merged exactly
        engine.run(engine.create_store(path), rank=rank, world=2)
    ds = xr.open_zarr(path, consolidated=False)
    for name in ("z500", "tcwv"):
        members = ds[name].values.astype(np.float64)
        scale = np.abs(members).max()
        assert np.allclose(ds[f"{name}_ensemble_mean"].values, members.mean(0), rtol=1e-5, atol=1e-6 * scale)
        assert np.allclose(ds[f"{name}_ensemble_std"].values, members.std(0, ddof=1), rtol=1e-5, atol=1e-5 * members.std())
        assert np.array_equal(ds[f"{name}_ensemble_max"].values, ds[name].values.max(0))
        quantiles = np.quantile(ds[name].values, [0.0, 0.1, 0.5, 1.0], axis=0)
        assert np.allclose(ds[f"{name}_quantile"].values, quantiles, rtol=1e-6, atol=1e-6 * scale)
    above = (ds["z500"].values[None] > np.array([50000.0, 55000.0])[:, None, None, None, None, None]).mean(1)
    assert np.allclose(ds["z500_exceedance_probability"].values, above)


def test_statistics_only_channels_keep_no_members(tiny_world, tmp_path):
    statistics = replace(tiny_world.ensemble.statistics, channels=("tcwv",), only=("tcwv",))
    engine = build_engine(with_ensemble(tiny_world, statistics=statistics))
    store = engine.create_store(tmp_path / "only.zarr")
    engine.run(store)
    ds = xr.open_zarr(tmp_path / "only.zarr", consolidated=False)
    assert "tcwv" not in ds.data_vars and "tcwv_ensemble_mean" in ds.data_vars and "z500" in ds.data_vars
    assert np.isfinite(ds["tcwv_ensemble_std"].values).all()


def test_bitround_compression_is_bounded_and_recorded(tiny_world, tmp_path):
    compression = replace(tiny_world.ensemble.compression, keepbits={"z500": 10})
    engine = build_engine(with_ensemble(tiny_world, compression=compression))
    engine.run(engine.create_store(tmp_path / "lossy.zarr"))
    reference = build_engine(tiny_world)
    reference.run(reference.create_store(tmp_path / "exact.zarr"))
    lossy, exact = xr.open_zarr(tmp_path / "lossy.zarr", consolidated=False), values(tmp_path / "exact.zarr")
    assert lossy["z500"].attrs["bitround_keepbits"] == 10
    relative = np.abs(lossy["z500"].values - exact["z500"]) / np.abs(exact["z500"])
    assert relative.max() <= 2.0**-11 and relative.max() > 0
    assert np.array_equal(lossy["u500"].values, exact["u500"])


def test_shards_follow_the_batch_windows(tiny_world, tmp_path):
    engine = build_engine(tiny_world)
    engine.run(engine.create_store(tmp_path / "s.zarr"))
    files = [p for p in (tmp_path / "s.zarr" / "z500" / "c").rglob("*") if p.is_file()]
    windows = len(engine.plan.windows(engine.batch_size))
    assert len(files) == windows * len(engine.init_times)  # one shard per window and start date (all leads)


def test_bred_vectors_of_different_pairs_are_uncorrelated(tiny_world):
    engine = build_engine(tiny_world)
    model = load_checkpoint(engine.checkpoints[0])
    with torch.inference_mode():
        x0 = engine.initial_state(model, 0)
        bred = engine.perturbation_for(model, 0)
        dx = bred(x0, [member_generator(3, engine.init_times[0], p, "perturbation") for p in range(16)])
    north, south = hemispheric_rms(dx, engine.grid)
    target = bred.amplitude.expand_as(north)
    assert torch.allclose(north, target, rtol=1e-4) and torch.allclose(south, target, rtol=1e-4)
    flat = (dx / dx.std(dim=(0, 2, 3), keepdim=True)).reshape(16, -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    flat = flat / flat.norm(dim=1, keepdim=True)
    corr = flat @ flat.T
    off = corr[~torch.eye(16, dtype=torch.bool)]
    assert abs(float(off.mean())) < 0.1

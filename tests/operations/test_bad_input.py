"""The bad-input battery: each case ends in one clear line on stderr, a non-zero exit code, and no output
that a later run would trust (no store, or a store with no member marked done, or -- for damaged
stores -- a check that names the piece and can mark it for recomputation).

Every command is a separate process (``tests/cli_process.py``) run with ``-q``, so stderr holds nothing
but the error.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from forecast.store import EnsembleStore
from tests.operations.system import tmpfs
from workflows.config import bundled_config

TINY = str(bundled_config("tiny"))


# -- helpers ------------------------------------------------------------------------------------------
def run(processes, world, store, *extra):
    return processes.run("-q", "run", TINY, "--workdir", world.paths.workdir, f"paths.store={store}", *extra)


def assert_one_line_error(result, code, *words):
    lines = result.error_lines
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("forecast: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.stderr


def assert_nothing_trusted(store: Path, bad_members=None):
    """Either no store, or one in which no member of ``bad_members`` (default: any) is marked done and
    every member that is marked done holds the values its checksums promise."""
    if store.exists():
        opened = EnsembleStore.open(store)
        done = opened.done[:]
        assert not done[:, slice(None) if bad_members is None else bad_members].any()
        assert not [p for p in opened.problems() if p.damaged]


@pytest.fixture(scope="module")
def analyses(tiny_world):
    return xr.open_zarr(tiny_world.paths.resolve("analysis"), consolidated=False).load()


def bad_analyses(ds, path: Path) -> str:
    ds.to_zarr(path, mode="w", consolidated=False, zarr_format=3)
    return f"paths.analysis={path}"


@pytest.fixture
def checkpoints(tiny_world, tmp_path):
    """A private copy of the trained checkpoints (with their skill files) to damage."""
    target = tmp_path / "checkpoints"
    shutil.copytree(tiny_world.paths.resolve("checkpoints"), target)
    return target


@pytest.fixture(scope="module")
def complete_store(tiny_world, forecast_processes, tmp_path_factory):
    path = tmp_path_factory.mktemp("complete") / "ensemble.zarr"
    result = run(forecast_processes, tiny_world, path)
    assert result.returncode == 0, result.stderr
    return path


# -- input data ---------------------------------------------------------------------------------------
def test_nan_or_inf_in_initial_conditions(tiny_world, forecast_processes, analyses, tmp_path):
    ds = analyses.copy(deep=True)
    at = {"time": np.datetime64("2000-01-24T00")}  # the second start date: nothing of the first is written either
    ds["z500"].loc[at] = ds["z500"].loc[at].where(ds["lat"] != ds["lat"][3], np.nan)
    ds["tcwv"].loc[at] = ds["tcwv"].loc[at].where(ds["lon"] != ds["lon"][5], np.inf)
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, bad_analyses(ds, tmp_path / "a.zarr"))
    assert_one_line_error(result, 2, "NaN or Inf", "2000-01-24T00:00", "z500", "tcwv")
    assert not store.exists()


def test_missing_channel(tiny_world, forecast_processes, analyses, tmp_path):
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, bad_analyses(analyses.drop_vars("u500"), tmp_path / "a.zarr"))
    assert_one_line_error(result, 2, "missing channel", "u500")
    assert not store.exists()


def test_wrong_grid(tiny_world, forecast_processes, analyses, tmp_path):
    coarse = analyses.isel(lat=slice(0, None, 2), lon=slice(0, None, 2))
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, bad_analyses(coarse, tmp_path / "a.zarr"))
    assert_one_line_error(result, 2, "grid 9x16", "does not match the model grid 17x32")
    assert not store.exists()


def test_wrong_dtype(tiny_world, forecast_processes, analyses, tmp_path):
    ds = analyses.copy()
    ds["tcwv"] = ds["tcwv"].round().astype(np.int32)
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, bad_analyses(ds, tmp_path / "a.zarr"))
    assert_one_line_error(result, 2, "tcwv", "int32", "floating-point")
    assert not store.exists()


def test_init_time_outside_the_data(tiny_world, forecast_processes, tmp_path):
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, "ensemble.init_times.start=2001-06-01T00",
                 "ensemble.init_times.stop=2001-06-01T00")
    assert_one_line_error(result, 2, "2001-06-01T00:00 is not in the data")
    assert not store.exists()


# -- checkpoints --------------------------------------------------------------------------------------
def test_truncated_checkpoint(tiny_world, forecast_processes, checkpoints, tmp_path):
    weights = checkpoints / "sfno-1" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, f"paths.checkpoints={checkpoints}")
    assert_one_line_error(result, 2, "sfno-1", "truncated or altered")
    assert_nothing_trusted(store, bad_members=slice(5, 9))  # sfno-0's members (0:5) are fine and may be done


class Exploit:
    """Unpickling this would create a file: the proof that a loader ran code from a checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_checkpoint_with_a_pickled_object(tiny_world, forecast_processes, checkpoints, tmp_path):
    import hashlib

    marker = tmp_path / "unpickled"
    weights = checkpoints / "sfno-0" / "weights.safetensors"
    torch.save({"weights": torch.zeros(3), "payload": Exploit(marker)}, weights)
    card_path = checkpoints / "sfno-0" / "card.json"
    card = json.loads(card_path.read_text())
    card["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()  # only the format can refuse it now
    card_path.write_text(json.dumps(card))
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, f"paths.checkpoints={checkpoints}")
    assert_one_line_error(result, 2, "sfno-0", "not a readable safetensors file")
    assert not marker.exists()
    assert_nothing_trusted(store)


def test_card_that_disagrees_with_the_weights(tiny_world, forecast_processes, checkpoints, tmp_path):
    card_path = checkpoints / "sfno-0" / "card.json"
    card = json.loads(card_path.read_text())
    card["architecture"]["embed_dim"] = 2 * card["architecture"]["embed_dim"]
    card_path.write_text(json.dumps(card))
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, f"paths.checkpoints={checkpoints}")
    assert_one_line_error(result, 2, "sfno-0", "card and weights disagree")
    assert_nothing_trusted(store)


# -- configuration and command line -------------------------------------------------------------------
def test_unknown_config_key(tiny_world, forecast_processes, tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text(Path(TINY).read_text().replace("members_per_checkpoint:", "member_per_checkpoint:"))
    store = tmp_path / "s.zarr"
    result = forecast_processes.run("-q", "run", config, "--workdir", tiny_world.paths.workdir, f"paths.store={store}")
    assert_one_line_error(result, 2, "unknown config key 'ensemble.member_per_checkpoint'",
                          "did you mean 'members_per_checkpoint'?")
    assert not store.exists()


@pytest.mark.parametrize("members", ["5:3", "-2:4", "4:4"])
def test_negative_or_empty_member_range(tiny_world, forecast_processes, tmp_path, members):
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, f"--members={members}")
    assert_one_line_error(result, 2, f"member range {members}", "empty, negative")
    assert not store.exists()


def test_lead_that_is_not_a_multiple_of_the_model_step(tiny_world, forecast_processes, tmp_path):
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, "ensemble.lead_hours=9")
    assert_one_line_error(result, 2, "ensemble.lead_hours=9", "not a multiple of the model step (6 h)")
    assert not store.exists()


# -- output -------------------------------------------------------------------------------------------
def test_existing_store_with_another_schema(tiny_world, forecast_processes, complete_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(complete_store, store)
    before = {p: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    result = run(forecast_processes, tiny_world, store, "ensemble.seed=8")
    assert_one_line_error(result, 3, "another schema", "attrs.base_seed", "refusing to append")
    assert {p: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before  # untouched


def test_read_only_output_folder(tiny_world, forecast_processes, tmp_path):
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as folder:
        result = run(forecast_processes, tiny_world, folder / "s.zarr")
        assert_one_line_error(result, 5, f"output folder {folder}", "not writable", "Read-only file system")
        assert not (folder / "s.zarr").exists()


def test_deleted_chunk_is_named_by_check(forecast_processes, complete_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(complete_store, store)
    (store / "z500" / "c" / "1" / "1" / "0" / "0" / "0").unlink()
    result = forecast_processes.run("-q", "check", store)
    assert_one_line_error(result, 3, "members 2:4", "z500", "z500/c/1/1/0/0/0 is missing (deleted chunk)")


def test_corrupted_chunk_is_named_by_check_and_repaired_by_a_rerun(tiny_world, forecast_processes, complete_store,
                                                                   tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(complete_store, store)
    shard = store / "u500" / "c" / "2" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3: len(data) // 3 + 16] = bytes(16)  # zero 16 bytes inside the compressed fields
    shard.write_bytes(bytes(data))
    result = forecast_processes.run("-q", "check", store)
    assert_one_line_error(result, 3, "members 4:6", "u500", "u500/c/2/0/0/0/0", "corrupt chunk")
    # a rerun would trust the manifest; --repair marks the damaged members unfinished, the rerun redoes them
    repaired = forecast_processes.run("-q", "check", "--repair", store)
    assert repaired.returncode == 3 and "marked 2 damaged member(s) unfinished" in repaired.stderr
    assert run(forecast_processes, tiny_world, store).returncode == 0
    assert forecast_processes.run("-q", "check", store).returncode == 0
    a, b = xr.open_zarr(complete_store, consolidated=False), xr.open_zarr(store, consolidated=False)
    assert all(np.array_equal(a[name].values, b[name].values) for name in a.data_vars)

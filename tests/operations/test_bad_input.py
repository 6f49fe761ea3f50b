"""The bad-input battery: each case ends in one clear line on stderr naming the key or file, the exit code of
its kind (2 bad input, 3 store, 5 system; 1 only for a bug), and nothing left behind: no store (every check
runs before the first write), so the corrected run then simply runs. Damaged stores end in a check that names
the piece and can mark it for recomputation.

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
from tests.cli_process import assert_one_line_error
from workflows.config import bundled_config

TINY = str(bundled_config("tiny"))


# -- helpers ------------------------------------------------------------------------------------------
def run(processes, world, store, *extra):
    return processes.run("-q", "run", TINY, "--workdir", world.paths.workdir, f"paths.store={store}", *extra)


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
    assert not store.exists()  # every checkpoint is checked before the store is created


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
    assert not store.exists()


def test_card_that_disagrees_with_the_weights(tiny_world, forecast_processes, checkpoints, tmp_path):
    card_path = checkpoints / "sfno-0" / "card.json"
    card = json.loads(card_path.read_text())
    card["architecture"]["embed_dim"] = 2 * card["architecture"]["embed_dim"]
    card_path.write_text(json.dumps(card))
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, f"paths.checkpoints={checkpoints}")
    assert_one_line_error(result, 2, "sfno-0", "card and weights disagree")
    assert not store.exists()


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


@pytest.mark.parametrize("typo", ["ensemble.lead_hours=999999996", "ensemble.members_per_checkpoint=1000000000"])
def test_a_store_that_cannot_fit_is_refused_before_anything_is_built(tiny_world, forecast_processes, tmp_path, typo):
    """A typo of a few digits made a store of petabytes: before the pre-flight size check the run took the
    machine's memory (18 GB in a minute) building its plan, with no line at all."""
    store = tmp_path / "new" / "s.zarr"
    result = run(forecast_processes, tiny_world, store, typo)
    assert_one_line_error(result, 4, f"{store} would need about", " TB ", f"{tmp_path} has ", "cannot fit",
                          "forecast run --dry-run")
    assert not (tmp_path / "new").exists()
    assert run(forecast_processes, tiny_world, store).returncode == 0  # the corrected run simply runs


def test_the_space_check_counts_only_what_a_resumed_store_has_left(tiny_world, complete_store, tmp_path,
                                                                     monkeypatch):
    """A store 90% done on a nearly full disk must resume: only its unfinished members need space."""
    import shutil as shell

    from forecast.errors import DiskFullError
    from workflows import preflight
    from workflows.recipes import build_engine

    engine = build_engine(tiny_world)
    usage = shell.disk_usage(tmp_path)
    monkeypatch.setattr(preflight.shutil, "disk_usage", lambda folder: usage._replace(free=1))  # one byte free
    preflight.check_space(tiny_world, engine, complete_store)  # every member finished: nothing more to write
    partial = tmp_path / "partial.zarr"
    shell.copytree(complete_store, partial)
    EnsembleStore.open(partial).reset(1, 4, 6)
    with pytest.raises(DiskFullError, match=r"of it unfinished.* has 1 B free: it cannot fit"):
        preflight.check_space(tiny_world, engine, partial)
    with pytest.raises(DiskFullError, match="has 1 B free: it cannot fit"):
        preflight.check_space(tiny_world, engine, tmp_path / "new.zarr")


@pytest.mark.system
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


# -- settings: refused when the config is read, naming the key --------------------------------------
BAD_SETTINGS = {
    "ensemble.perturbation.cycles=-1": "ensemble.perturbation.cycles must be at least 1, got -1",
    "ensemble.perturbation.length_scale_km=-5": "ensemble.perturbation.length_scale_km must be positive",
    "ensemble.device=tpu": "ensemble.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'",
    "ensemble.batch_size=true": "ensemble.batch_size must be a positive integer or 'auto', got True",
    "paths.store=": "paths.store is empty",
    "planet.days=-1": "planet.days must be positive, got -1",
    "ensemble.init_times.stop='2000-02-30T00'": "ensemble.init_times.stop='2000-02-30T00' is not a date",
    "ensemble.init_times.start=2000-13-01": "override ensemble.init_times.start",
    "planet.settings.truncation=ten": "planet.settings.truncation must be an integer, got 'ten'",
    "train.architecture.embed_dim=wide": "train.architecture.embed_dim must be an integer, got 'wide'",
    "planet.settings.mountains=[[40, 100]]": "planet.settings.mountains[0] must be [latitude, longitude",
    "experiments=[wide, narrow]": "experiments must be a mapping of names to ensemble settings, got a list",
    "experiments={wide: [1, 2]}": "experiments.wide must be a mapping of ensemble keys to change, got a list",
}


def test_bad_settings_name_their_key_and_leave_nothing_then_the_corrected_run_runs(tiny_world, forecast_processes,
                                                                                    tmp_path):
    store = tmp_path / "s.zarr"
    for setting, message in BAD_SETTINGS.items():
        result = forecast_processes.run("-q", "run", TINY, "--workdir", tiny_world.paths.workdir, f"paths.store={store}",
                                        setting, cwd=tmp_path)
        assert_one_line_error(result, 2, message)
        assert sorted(p.name for p in tmp_path.iterdir()) == [], setting  # no store, no folder named 'None'
    assert run(forecast_processes, tiny_world, store).returncode == 0
    assert (store / "zarr.json").is_file()


@pytest.mark.parametrize("text, kind", [("- paths\n- ensemble\n", "list"), ("just words\n", "string")])
def test_config_file_that_is_not_a_mapping(tiny_world, forecast_processes, tmp_path, text, kind):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = forecast_processes.run("-q", "run", config, "--workdir", tiny_world.paths.workdir)
    assert_one_line_error(result, 2, f"config file {config} must hold a mapping of sections", f"got a {kind}")


def test_braces_in_a_path_are_part_of_the_path(tiny_world, forecast_processes, tmp_path):
    store = tmp_path / "run {x}" / "s{0}.zarr"  # only {workdir} is replaced (not str.format)
    assert run(forecast_processes, tiny_world, store, "ensemble.init_times.stop=2000-01-22T00",
               "ensemble.members_per_checkpoint=2").returncode == 0
    assert (tmp_path / "run {x}" / "s{0}.zarr" / "zarr.json").is_file()


def test_path_too_long_for_the_file_system_leaves_no_folders(tiny_world, forecast_processes, tmp_path):
    store = tmp_path.joinpath(*["d" * 200] * 20, "s.zarr")  # 4,000 characters: each name fits, the whole does not
    result = run(forecast_processes, tiny_world, store)
    assert_one_line_error(result, 2, "output path", "too long")
    assert list(tmp_path.iterdir()) == []


# -- input data beyond the settings --------------------------------------------------------------------
def test_values_outside_the_physical_range(tiny_world, forecast_processes, analyses, tmp_path):
    ds = analyses.copy(deep=True)
    at = {"time": np.datetime64("2000-01-22T00")}
    ds["tcwv"].loc[at] = ds["tcwv"].loc[at].where(ds["lon"] != ds["lon"][2], -3.0)  # water vapour below zero
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, bad_analyses(ds, tmp_path / "a.zarr"))
    assert_one_line_error(result, 2, "initial state at 2000-01-22T00:00", "tcwv has 17 value(s) outside its physical range")
    assert not store.exists()


def test_corrupt_values_in_the_breeding_analyses(tiny_world, forecast_processes, analyses, tmp_path):
    ds = analyses.copy(deep=True)
    at = {"time": np.datetime64("2000-01-21T18")}  # the last breeding cycle before the first start date
    ds["z500"].loc[at] = ds["z500"].loc[at].where(ds["lat"] != ds["lat"][8], 3e35)  # what 16 zeroed bytes gave
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, bad_analyses(ds, tmp_path / "a.zarr"))
    assert_one_line_error(result, 2, "analyses before 2000-01-22T00:00 used for breeding", "z500", "physical range")
    assert not store.exists()


def test_truncated_analysis_chunk(tiny_world, forecast_processes, analyses, tmp_path):
    path = tmp_path / "a.zarr"
    override = bad_analyses(analyses, path)
    index = int(np.searchsorted(analyses["time"].values, np.datetime64("2000-01-22T00")))
    chunk = path / "u500" / "c" / str(index // analyses["u500"].encoding["chunks"][0]) / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, override)
    assert_one_line_error(result, 2, f"chunk file {chunk} cannot be decoded")
    assert not store.exists()


def test_extra_size_one_dimension_is_named_not_called_missing(tiny_world, forecast_processes, analyses, tmp_path):
    ds = analyses.copy()
    ds["z500"] = ds["z500"].expand_dims(step=[0], axis=1)
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, bad_analyses(ds, tmp_path / "a.zarr"))
    assert_one_line_error(result, 2, "channel z500 has dimensions", "extra dimension 'step' of size 1")
    assert "missing" not in result.stderr
    assert not store.exists()


def test_corrupt_skill_file_is_named(tiny_world, forecast_processes, checkpoints, tmp_path):
    (checkpoints / "sfno-1" / "skill.json").write_text('{"rmse": {"z500": 1')
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, f"paths.checkpoints={checkpoints}")
    assert_one_line_error(result, 2, str(checkpoints / "sfno-1" / "skill.json"), "not a skill file")
    assert not store.exists()


# -- scoring ------------------------------------------------------------------------------------------
def score(processes, world, store, out, *extra):
    return processes.run("-q", "score", store, "--truth", world.paths.resolve("nature"), "--out", out, "--workers", "1",
                         *extra)


def test_scoring_a_dataset_that_is_not_an_ensemble(tiny_world, forecast_processes, tmp_path):
    nature = tiny_world.paths.resolve("nature")
    result = score(forecast_processes, tiny_world, nature, tmp_path / "scores")
    assert_one_line_error(result, 3, f"{nature}: the forecast has no dimension for 'member'", "--dims")
    assert not (tmp_path / "scores").exists()


def test_scoring_a_partial_store_is_refused_unless_allowed(tiny_world, forecast_processes, tmp_path):
    store = tmp_path / "s.zarr"
    assert run(forecast_processes, tiny_world, store, "--members", "0:4").returncode == 0  # 4 of 9 members
    result = score(forecast_processes, tiny_world, store, tmp_path / "refused")
    assert_one_line_error(result, 3, f"{store} is unfinished", "2000-01-22T00: 5 of 9", "2000-01-24T00: 5 of 9",
                          "--allow-partial")
    assert not (tmp_path / "refused").exists()

    allowed = score(forecast_processes, tiny_world, store, tmp_path / "partial", "--allow-partial")
    assert allowed.returncode == 0, allowed.stderr
    scores = xr.open_dataset(tmp_path / "partial" / "scores.nc")
    assert scores.attrs["members"] == 4 and "4 of 9 members scored" in scores.attrs["partial"]
    report = (tmp_path / "partial" / "report.md").read_text()
    assert "Unfinished store" in report and "4 of 9 members scored" in report and "Members: 4," in report


def test_a_checkpoint_with_nan_weights_or_normalisation_is_refused(tiny_world, forecast_processes, checkpoints,
                                                                  tmp_path):
    from safetensors.torch import load_file, save_file

    from forecast.files import file_sha256

    folder = checkpoints / "sfno-1"
    state = load_file(folder / "weights.safetensors")
    name = sorted(state)[0]
    state[name][0] = float("nan")
    save_file(state, folder / "weights.safetensors")
    card = json.loads((folder / "card.json").read_text())
    card["weights_sha256"] = file_sha256(folder / "weights.safetensors")  # only the values can refuse it now
    (folder / "card.json").write_text(json.dumps(card))
    store = tmp_path / "s.zarr"
    result = run(forecast_processes, tiny_world, store, f"paths.checkpoints={checkpoints}")
    assert_one_line_error(result, 2, "sfno-1", "NaN or infinite values", name)
    first = json.loads((checkpoints / "sfno-0" / "card.json").read_text())
    first["mean"][1] = float("nan")  # json writes NaN, as a hand edit could
    (checkpoints / "sfno-0" / "card.json").write_text(json.dumps(first))
    result = run(forecast_processes, tiny_world, store, f"paths.checkpoints={checkpoints}")
    assert_one_line_error(result, 2, "sfno-0", "card.json", "card mean must be finite numbers")
    assert not store.exists()


@pytest.mark.parametrize("name", ["", ".", "folder", "fifo", "file/inside.nc"])
def test_export_to_a_path_that_is_not_a_file_is_refused_before_reading(forecast_processes, complete_store, tmp_path,
                                                                        name):
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")  # a device or pipe: an atomic rename would replace it
    (tmp_path / "file").write_text("not a folder")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = forecast_processes.run("-q", "export", complete_store, str(tmp_path / name) if name else "", cwd=tmp_path)
    assert_one_line_error(result, 2, "export: output")
    assert sorted(p.name for p in tmp_path.iterdir()) == before and (tmp_path / "fifo").is_fifo()


@pytest.mark.parametrize("args, words", [
    (["--plume", "nan,nan"], ["--plume nan,nan", "latitude must lie in -90..90"]),
    (["--plume", "91,0"], ["--plume 91,0"]),
    (["--init-time", "yesterday"], ["--init-time yesterday is not a start date"]),
    (["--out", "map.xyz"], ["--out map.xyz must end in one of .png, .pdf, .svg"]),
])
def test_plot_options_that_cannot_be_used(forecast_processes, complete_store, tmp_path, args, words):
    result = forecast_processes.run("-q", "plot", complete_store, *args, cwd=tmp_path)
    assert_one_line_error(result, 2, *words)
    assert list(tmp_path.iterdir()) == []


def test_export_of_no_channel_is_refused(forecast_processes, complete_store, tmp_path):
    result = forecast_processes.run("-q", "export", complete_store, tmp_path / "x.nc", "--channels", " , ")
    assert_one_line_error(result, 2, "--channels ' , ' names no channel")
    assert list(tmp_path.iterdir()) == []


def test_plot_without_a_suffix_writes_and_names_a_png(forecast_processes, complete_store, tmp_path):
    result = forecast_processes.run("-q", "plot", complete_store, "--out", tmp_path / "map", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "map.png")] and (tmp_path / "map.png").is_file()


@pytest.mark.parametrize("damage, code, words", [
    ("root", 3, ["zarr.json cannot be read", "metadata is damaged"]),
    ("array", 3, ["z500/zarr.json cannot be read"]),
])
def test_damaged_metadata_is_a_store_error_naming_the_file(forecast_processes, complete_store, tmp_path, damage, code,
                                                           words):
    store = tmp_path / "s.zarr"
    shutil.copytree(complete_store, store)
    (store / "zarr.json" if damage == "root" else store / "z500" / "zarr.json").write_text("{ truncated")
    assert_one_line_error(forecast_processes.run("-q", "check", store), code, *words)
    if damage == "root":
        assert_one_line_error(forecast_processes.run("-q", "info", store), code, *words)


def test_scoring_a_store_whose_manifest_is_gone_is_refused(tiny_world, forecast_processes, complete_store, tmp_path):
    store = tmp_path / "s.zarr"
    shutil.copytree(complete_store, store)
    shutil.rmtree(store / "manifest")
    result = score(forecast_processes, tiny_world, store, tmp_path / "scores")
    assert_one_line_error(result, 3, f"{store} is not a complete ensemble store")
    assert not (tmp_path / "scores").exists()


@pytest.mark.parametrize("region, words", [
    ("between:1:2:1:2", ["region 'between' holds no point of the forecast's 17x32 grid"]),
    ("x:nan:nan:0:10", ["region 'x': the bounds must be finite numbers"]),
    (":10:20:0:10", ["a region needs a name"]),
    ("poles:-100:100:0:10", ["region 'poles': latitudes must lie in -90..90"]),
])
def test_a_region_that_cannot_be_averaged_over_is_refused(tiny_world, forecast_processes, complete_store, tmp_path,
                                                          region, words):
    result = score(forecast_processes, tiny_world, complete_store, tmp_path / "scores", "--region", region)
    assert_one_line_error(result, 2, *words)
    assert not (tmp_path / "scores").exists()


@pytest.mark.parametrize("change, words", [
    ("strings", ["time coordinate holds", "not dates and times"]),
    ("repeated", ["holds time 2000-01-22T00:00 2 times"]),
])
def test_a_truth_whose_times_cannot_be_used(tiny_world, forecast_processes, complete_store, tmp_path, change, words):
    truth = xr.open_zarr(tiny_world.paths.resolve("nature"), consolidated=False).load()
    if change == "strings":
        truth = truth.assign_coords(time=np.datetime_as_string(truth["time"].values, "h").astype(object))
    else:
        at = int(np.flatnonzero(truth["time"].values == np.datetime64("2000-01-22T00"))[0])
        truth = xr.concat([truth.isel(time=slice(0, at + 1)), truth.isel(time=slice(at, None))], dim="time")
    path = tmp_path / "truth.nc"
    truth.to_netcdf(path)
    result = forecast_processes.run("-q", "score", complete_store, "--truth", path, "--out", tmp_path / "scores",
                                    "--workers", "1")
    assert_one_line_error(result, 2, *words)
    assert not (tmp_path / "scores").exists()


def test_a_truth_written_over_a_one_value_level_axis_scores_like_the_plain_truth(tiny_world, forecast_processes,
                                                                                 complete_store, tmp_path):
    truth = xr.open_zarr(tiny_world.paths.resolve("nature"), consolidated=False).load()
    path = tmp_path / "truth.nc"
    truth.assign({name: truth[name].expand_dims(level=[500.0], axis=1) for name in truth.data_vars}).to_netcdf(path)
    plain = score(forecast_processes, tiny_world, complete_store, tmp_path / "plain")
    levelled = forecast_processes.run("-q", "score", complete_store, "--truth", path, "--out", tmp_path / "levelled",
                                      "--workers", "1")
    assert plain.returncode == 0 and levelled.returncode == 0, levelled.stderr
    a, b = (xr.open_dataset(tmp_path / out / "scores.nc") for out in ("plain", "levelled"))
    assert np.array_equal(a["crps"].values, b["crps"].values) and np.isfinite(b["crps"].values).all()


def test_score_on_slurm_that_refuses_the_worker_job_stops_with_one_line(tiny_world, forecast_processes,
                                                                        complete_store, tmp_path):
    """dask-jobqueue would wait for ever for workers whose sbatch failed: the job is tested first."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    result = forecast_processes.run("-q", "score", complete_store, "--truth", tiny_world.paths.resolve("nature"),
                                    "--out", tmp_path / "scores", "--slurm", "1",
                                    env={"PATH": f"{bin_dir}:{os.environ['PATH']}"}, timeout=120)
    assert_one_line_error(result, 5, "score --slurm: Slurm refuses the job", "invalid partition specified")
    assert not (tmp_path / "scores").exists()


# -- the error policy ---------------------------------------------------------------------------------
def test_a_bug_is_an_internal_error_with_its_traceback_kept(monkeypatch, capsys, tmp_path):
    import tempfile

    from workflows import cli

    def buggy(*args, **kwargs):  # a builtin ValueError from deep inside is a bug, not bad input
        raise ValueError("setting an array element with a sequence")

    monkeypatch.setattr("workflows.recipes.run_ensemble", buggy)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["-q", "run", TINY]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("forecast: internal error (a bug; traceback in "), lines
    assert lines[0].endswith("): ValueError: setting an array element with a sequence")
    kept = Path(lines[0].split("traceback in ")[1].split("): ")[0])
    assert kept.parent.parent == tmp_path and "Traceback" in kept.read_text() and "in buggy" in kept.read_text()
    assert cli.main(["-q", "--debug", "run", TINY]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "in buggy" in err


def test_an_all_nan_truth_channel_gives_no_exceedance_maps_not_zero():
    import warnings

    from forecast.verify.mock import mock_ensemble
    from forecast.verify.scores import score_ensemble

    forecast, truth = mock_ensemble(members=6, leads=2)
    truth["t2m"] = truth["t2m"] * np.nan  # a channel the truth does not have
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices
        scores = score_ensemble(forecast, truth).compute()
    maps = scores["exceedance_probability_map"]
    assert maps.sel(channel="t2m").isnull().all()
    assert maps.sel(channel="z500").notnull().all() and float(maps.sel(channel="z500").max()) > 0

"""Importing makani model packages, against files makani v0.1.0 wrote itself.

The parity reference is ``shared/fixtures/makani-v0.1.0/sfno_hens_flexible`` (a package, a "flexible"
checkpoint with a pickled ``ParamsBase``, and makani's own output ``y`` for one input ``x``). Other layouts
and settings are built from its contents here: stand-in classes registered under makani's and ruamel's
module paths (in ``sys.modules``, for the test only) pickle exactly as the real classes do.
"""

import argparse
import collections
import contextlib
import json
import os
import pickle
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from forecast.rollout import rollout
from models.solar import cos_zenith, cos_zenith_float32
from models.checkpoint import CheckpointError, load_checkpoint
from models.makani import IMPORT_MAP, import_package
from tests.models.makani_mock import write_mock_package


def _find_fixture() -> Path | None:
    if os.environ.get("FORECAST_MAKANI_FIXTURE"):
        return Path(os.environ["FORECAST_MAKANI_FIXTURE"])
    here = Path(__file__).resolve().parents[2]
    for base in (here, *here.parents[:2]):
        candidate = base / "shared" / "fixtures" / "makani-v0.1.0" / "sfno_hens_flexible"
        if candidate.is_dir():
            return candidate
    return None


FIXTURE = _find_fixture()
pytestmark = pytest.mark.skipif(FIXTURE is None, reason="the makani-written fixture (shared/fixtures/makani-v0.1.0/"
                                "sfno_hens_flexible, or FORECAST_MAKANI_FIXTURE) is not on this machine")
CHANNELS = ["u10m", "v10m", "t2m", "sp", "msl", "tcwv", "d2m", "z500", "t850", "q700"]


@pytest.fixture(scope="module")
def reference():
    r = np.load(FIXTURE / "reference.npz")
    return torch.from_numpy(r["x"]), np.datetime64(str(r["time"]), "ns"), torch.from_numpy(r["y"]), r["cosz"]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|"""
    return float((a - b).abs().max() / b.abs().max())


def one_step(checkpoint, reference) -> torch.Tensor:
    x, time, _, _ = reference
    with torch.no_grad():
        return load_checkpoint(checkpoint).step(x, time=time)


# -- stand-ins that pickle as makani's and ruamel's classes do -----------------------------------------
def _module(name: str, **classes) -> types.ModuleType:
    module = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
        setattr(module, cls_name, cls)
    return module


@contextlib.contextmanager
def stand_ins(parameter_class=None):
    """makani.utils.YParams.{ParamsBase, YParams} and ruamel's ScalarFloat/ScalarInt/CommentedSeq as plain
    classes (no methods: they pickle as the originals, ``__dict__`` state through NEWOBJ + BUILD)."""
    params_base = parameter_class or type("ParamsBase", (), {})
    commented = type("CommentedBase", (), {})
    yparams = type("YParams", (params_base,), {})
    modules = {
        "makani": types.ModuleType("makani"), "makani.utils": types.ModuleType("makani.utils"),
        "makani.utils.YParams": _module("makani.utils.YParams", ParamsBase=params_base, YParams=yparams),
        "ruamel": types.ModuleType("ruamel"), "ruamel.yaml": types.ModuleType("ruamel.yaml"),
        "ruamel.yaml.scalarfloat": _module("ruamel.yaml.scalarfloat", ScalarFloat=type("ScalarFloat", (float,), {})),
        "ruamel.yaml.scalarint": _module("ruamel.yaml.scalarint", ScalarInt=type("ScalarInt", (int,), {})),
        "ruamel.yaml.comments": _module(  # ruamel's layout: slots for comments beside an instance dict
            "ruamel.yaml.comments", LineCol=type("LineCol", (), {}),
            CommentedSeq=type("CommentedSeq", (list, commented), {"__slots__": ("_yaml_comment", "_lst")}),
            CommentedMap=type("CommentedMap", (collections.OrderedDict, commented),
                              {"__slots__": ("_yaml_comment", "_ok", "_ref")}),
            Comment=type("Comment", (), {"__slots__": ("comment", "_items", "_post", "_pre")})),
    }
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield types.SimpleNamespace(**{n.split(".")[-1]: m for n, m in modules.items()})
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def fixture_checkpoint() -> dict:
    """The fixture's checkpoint as makani wrote it, read with torch's full unpickler into the stand-ins (the
    caller must be inside ``stand_ins()``)."""
    return torch.load(FIXTURE / "package" / "training_checkpoints" / "best_ckpt_mp0.tar", weights_only=False)


def set_param(params, key, value):
    """What makani's ``ParamsBase.__setitem__`` does: the ``params`` dict and the attribute."""
    params.params[key] = value
    setattr(params, key, value)


def make_package(tmp_path, name="pkg", layout="flexible", params=None, config=None, state=None, checkpoint=None):
    """A copy of the fixture package with its checkpoint rewritten.

    ``layout="legacy"``: as makani's trainer saves "legacy" checkpoints under DDP (``module.model.`` keys,
    optimizer and scheduler state, torch's zip format). ``params(p)``, ``config(c)`` and ``state(s)`` edit the
    pickled params, config.json and the weights; ``checkpoint(ck)`` edits the saved dict last.
    """
    root = tmp_path / name
    # the fixture is read-only (as a shared model package often is): the copy gets the modes of new files,
    # so that a user who is not root can edit it (root ignores modes)
    shutil.copytree(FIXTURE / "package", root, copy_function=shutil.copyfile)
    for folder in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)
    if config is not None:
        path = root / "config.json"
        edited = json.loads(path.read_text())
        config(edited)
        path.write_text(json.dumps(edited, indent=2))
    with stand_ins():
        ck = fixture_checkpoint()
        if params is not None:
            params(ck["params"])
        if state is not None:
            state(ck["model_state"])
        if layout == "legacy":
            weights = {"module." + k: v for k, v in ck["model_state"].items()}
            ck = {"iters": 4000, "epoch": 12, "model_state": weights, "params": ck["params"],
                  "optimizer_state_dict": {
                      "state": {i: {"step": torch.tensor(4000.0), "exp_avg": torch.zeros_like(v),
                                    "exp_avg_sq": torch.ones_like(v)} for i, v in enumerate(weights.values())},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.0,
                                        "amsgrad": False, "params": list(range(len(weights)))}]},
                  "scheduler_state_dict": {"step_size": 100, "gamma": 0.5, "base_lrs": [1e-3], "last_epoch": 12,
                                           "_step_count": 13, "_last_lr": [1e-3]}}
        if checkpoint is not None:
            checkpoint(ck)
        target = root / "training_checkpoints" / "best_ckpt_mp0.tar"
        target.unlink()
        torch.save(ck, target, _use_new_zipfile_serialization=(layout == "legacy"))
    return root


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("ours") / "ck"
    import_package(FIXTURE / "package", out)
    return out


# -- parity with makani's own output --------------------------------------------------------------------
def test_flexible_package_written_by_makani_imports_and_one_step_equals_makanis_output(imported, reference):
    card = load_checkpoint(imported).card
    assert list(card.channels) == CHANNELS  # channel order from config.json, 2d -> d2m
    indices = json.loads((FIXTURE / "package" / "config.json").read_text())["in_channels"]
    assert np.allclose(card.mean, np.load(FIXTURE / "package" / "global_means.npy").reshape(-1)[indices])
    assert card.dt_hours == 6 and card.model_grid.shape == (33, 64)
    assert card.architecture["extra_inputs"]["cos_zenith"] == "makani-float32"
    assert card.training["cos_zenith_arithmetic"] == "makani-float32"
    assert card.training["checkpoint"]["params_class"] == "makani.utils.YParams.ParamsBase"
    assert relative_error(one_step(imported, reference), reference[2]) < 1e-5


def test_makani_float32_cos_zenith_is_makanis_own_values_bit_for_bit(reference):
    _, time, _, cosz = reference
    lat, lon = 90 - 180 * np.arange(33) / 32, 360 * np.arange(64) / 64
    assert np.array_equal(cos_zenith_float32(time, lat, lon), cosz[0])
    # ours (float64) is a different number: the measured gap that motivates the default
    gap = np.abs(cos_zenith(time, lat, lon) - cosz[0]).max()
    assert 1e-4 < gap < 5e-3


def test_float64_cos_zenith_is_within_1e_3_of_makani_and_float32_is_within_1e_5(tmp_path, reference):
    import_package(FIXTURE / "package", tmp_path / "f64", cos_zenith="float64")
    assert load_checkpoint(tmp_path / "f64").card.architecture["extra_inputs"]["cos_zenith"] is True
    error64 = relative_error(one_step(tmp_path / "f64", reference), reference[2])
    assert 1e-5 < error64 < 1e-3  # measurably worse than makani's arithmetic, still within 1e-3


def test_legacy_ddp_checkpoint_with_optimizer_state_imports_to_the_same_model(tmp_path, imported, reference):
    package = make_package(tmp_path, layout="legacy")
    with zipfile_names(package) as names:
        assert any("data.pkl" in n for n in names)  # torch's zip format, as makani's legacy mode saves it
    import_package(package, tmp_path / "ck")
    card = load_checkpoint(tmp_path / "ck").card
    assert card.training["checkpoint"]["layout"].startswith("legacy")
    assert "optimizer_state_dict" in card.training["checkpoint"]["contents"]
    a, b = load_checkpoint(imported).state_dict(), load_checkpoint(tmp_path / "ck").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert relative_error(one_step(tmp_path / "ck", reference), reference[2]) < 1e-5


@contextlib.contextmanager
def zipfile_names(package):
    import zipfile

    with zipfile.ZipFile(package / "training_checkpoints" / "best_ckpt_mp0.tar") as z:
        yield z.namelist()


def test_yparams_with_ruamel_round_trip_values_imports(tmp_path, imported):
    def params(p):  # YParams read from YAML: ruamel's round-trip list and int, and the YAML file's name
        comments = sys.modules["ruamel.yaml.comments"]
        seq = comments.CommentedSeq(p.channel_names)
        line_col = comments.LineCol()
        line_col.line, line_col.col = 71, 20
        seq._yaml_line_col = line_col
        set_param(p, "channel_names", seq)
        set_param(p, "embed_dim", sys.modules["ruamel.yaml.scalarint"].ScalarInt(16))
        p._yaml_filename, p._config_name = "config/sfnonet.yaml", "sfno_hens_fixture"
        p.__class__ = sys.modules["makani.utils.YParams"].YParams

    import_package(make_package(tmp_path, params=params), tmp_path / "ck")
    card = load_checkpoint(tmp_path / "ck").card
    assert card.training["checkpoint"]["params_class"] == "makani.utils.YParams.YParams"
    a, b = load_checkpoint(imported).state_dict(), load_checkpoint(tmp_path / "ck").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ruamel_containers_with_comment_slots_become_plain_values(tmp_path):
    from models.checkpoint import load_restricted
    from models.makani_settings import PICKLE_ALLOWLIST

    with stand_ins() as m:
        comment = m.comments.Comment()
        comment.comment, comment._items = None, {0: [None, None]}
        mapping = m.comments.CommentedMap(kind="sinusoidal", frequencies=m.scalarint.ScalarInt(16))
        mapping._ok, mapping._ref, mapping._yaml_comment = {"kind", "frequencies"}, [], comment
        sequence = m.comments.CommentedSeq([m.scalarfloat.ScalarFloat(0.5), 2])
        sequence._yaml_comment = comment
        torch.save({"grid": mapping, "levels": sequence}, tmp_path / "ck.tar", _use_new_zipfile_serialization=False)
    loaded = load_restricted(tmp_path / "ck.tar", PICKLE_ALLOWLIST)
    assert loaded == {"grid": {"kind": "sinusoidal", "frequencies": 16}, "levels": [0.5, 2]}
    assert type(loaded["grid"]) is dict and type(loaded["levels"]) is list
    assert type(loaded["grid"]["frequencies"]) is int and type(loaded["levels"][0]) is float
    with pytest.raises(CheckpointError, match=r"refused.*ruamel\.yaml\.comments\.CommentedMap"):
        load_restricted(tmp_path / "ck.tar")  # without the allowlist: refused, class named


def test_imported_model_rolls_out_with_valid_times(imported, reference):
    x, time, _, _ = reference
    a, b = load_checkpoint(imported), load_checkpoint(imported)
    with torch.no_grad():
        states = [s.clone() for _, s in rollout(a, x, 2, start_time=time)]
        first = b.step(x, time=time)
        second = b.step(first, time=time + np.timedelta64(6, "h"))
    assert torch.equal(states[1], first) and torch.equal(states[2], second)
    assert not torch.equal(first, b.step(x, time=time + np.timedelta64(6, "h")))  # the time is an input
    with pytest.raises(ValueError, match="valid time"):
        a.step(x)


def test_later_makani_filter_layout_imports_to_the_same_weights(tmp_path, imported):
    def grouped(state):
        for key in [k for k in state if k.endswith("filter.filter.weight")]:
            state[key] = state[key][None]

    import_package(make_package(tmp_path, state=grouped), tmp_path / "ck")
    a, b = load_checkpoint(imported).state_dict(), load_checkpoint(tmp_path / "ck").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- settings: refused when they change the arithmetic, accepted when they only change parallelism ----
@pytest.mark.parametrize("key, value", [
    ("history_normalization_mode", "exponential"),
    ("history_normalization_mode", "mean"),
    ("history_normalization_mode", "timediff"),
    ("history_normalization_mode", None),  # makani v0.1.0 normalises unless the value is "none" (or timediff)
    ("filter_type", "non-linear"),
    ("pos_embed", "direct"),
    ("target", "residual"),
    ("normalization", "minmax"),
    ("factorization", "cp"),
    ("separable", True),
    ("encoder_ratio", 2),
])
def test_settings_that_change_the_arithmetic_are_refused_naming_setting_and_value(tmp_path, key, value):
    package = make_package(tmp_path, params=lambda p: set_param(p, key, value), config=lambda c: c.update({key: value}))
    with pytest.raises(CheckpointError, match=f"{key}={value!r}"):
        import_package(package, tmp_path / "ck")
    assert not (tmp_path / "ck").exists()


def test_history_normalization_only_in_the_pickled_params_is_refused(tmp_path):
    def drop(c):
        del c["history_normalization_mode"]

    package = make_package(tmp_path, params=lambda p: set_param(p, "history_normalization_mode", "exponential"),
                           config=drop)
    with pytest.raises(CheckpointError, match="history_normalization_mode='exponential' changes the network"):
        import_package(package, tmp_path / "ck")


@pytest.mark.parametrize("key, value", [("mlp_mode", "distributed"), ("amp_mode", "bf16"),
                                        ("model_parallel_sizes", [1, 1, 1, 1]), ("checkpointing", 2)])
def test_settings_that_change_only_parallelism_or_training_are_accepted(tmp_path, imported, key, value):
    package = make_package(tmp_path, params=lambda p: set_param(p, key, value), config=lambda c: c.update({key: value}))
    import_package(package, tmp_path / "ck")
    a, b = load_checkpoint(imported).state_dict(), load_checkpoint(tmp_path / "ck").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("key, value", [
    ("channel_names", ["u10m", "v10m", "t2m", "sp", "msl", "tcwv", "2d", "z500", "t850", "q850"]),
    ("img_shape_x", 65), ("add_zenith", False), ("grid_num_frequencies", 8), ("history_normalization_mode", "exponential"),
    ("in_channels", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
])
def test_config_json_and_pickled_params_that_disagree_are_refused_naming_both_values(tmp_path, key, value):
    with stand_ins():
        original = getattr(fixture_checkpoint()["params"], key)
    package = make_package(tmp_path, params=lambda p: set_param(p, key, value))
    with pytest.raises(CheckpointError) as caught:
        import_package(package, tmp_path / "ck")
    message = str(caught.value)
    assert f"config.json says {key}={original!r}" in message and f"pickled params say {key}={value!r}" in message


def test_unmappable_weight_is_refused(tmp_path):
    package = make_package(tmp_path, state=lambda s: s.update({"model.pos_embed": torch.zeros(1, 16, 33, 64)}))
    with pytest.raises(CheckpointError, match=r"cannot map 1 weight.*pos_embed"):
        import_package(package, tmp_path / "ck")
    assert not (tmp_path / "ck" / "card.json").exists()


def test_model_parallel_legacy_checkpoint_split_over_files_is_refused(tmp_path):
    package = make_package(tmp_path, layout="legacy")
    shutil.copy(package / "training_checkpoints" / "best_ckpt_mp0.tar", package / "training_checkpoints" / "best_ckpt_mp1.tar")
    with pytest.raises(CheckpointError, match="best_ckpt_mp1.tar.*convert_legacy_to_flexible"):
        import_package(package, tmp_path / "ck")


# -- no foreign code runs ---------------------------------------------------------------------------
class SystemPayload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalPayload(SystemPayload):
    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


class DisguisedParams(SystemPayload):
    """Named as makani's ParamsBase (the allowlisted name) but pickles a call to os.system."""


@pytest.mark.parametrize("payload, named", [(SystemPayload, "posix.system"), (EvalPayload, "builtins.eval"),
                                            (DisguisedParams, "posix.system")])
def test_pickle_whose_payload_would_create_a_file_is_refused_and_creates_nothing(tmp_path, payload, named):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(payload(str(probe))))  # the payload is real: plain unpickling creates the file
    assert probe.exists()
    marker = tmp_path / "created"

    def plant(ck):
        ck["params"] = payload(str(marker))

    if payload is DisguisedParams:
        payload.__module__, payload.__qualname__ = "makani.utils.YParams", "ParamsBase"
    try:
        package = make_package(tmp_path, checkpoint=plant)
    finally:
        payload.__module__, payload.__qualname__ = __name__, payload.__name__
    with pytest.raises(CheckpointError, match=f"refused.*{named}"):
        import_package(package, tmp_path / "ck")
    assert not marker.exists() and not (tmp_path / "ck").exists()


@pytest.mark.parametrize("layout", ["flexible", "legacy"])
def test_class_outside_the_allowlist_is_refused_with_its_name(tmp_path, layout):
    package = make_package(tmp_path, layout=layout, params=lambda p: setattr(p, "cli_args", argparse.Namespace(rank=0)))
    with pytest.raises(CheckpointError, match=r"refused.*argparse\.Namespace"):
        import_package(package, tmp_path / "ck")


def test_makani_is_never_imported_nor_its_class_code_run(tmp_path, imported):
    """A trap registered under makani's module path: resolving the class by import would run its code."""
    marker = tmp_path / "ran"

    class Trap:
        def __new__(cls, *args):
            marker.touch()
            return object.__new__(cls)

        def __setstate__(self, state):
            marker.touch()

    with stand_ins(Trap):
        import_package(FIXTURE / "package", tmp_path / "ck")
    assert not marker.exists()


# -- a directory of packages ------------------------------------------------------------------------
def test_directory_of_packages_imports_in_one_command_in_documented_order(tmp_path, capsys):
    from workflows.cli import main

    hens = tmp_path / "hens"
    hens.mkdir()
    for k, name in enumerate(["seed10", "seed2", "seed1"]):  # sorted with numbers compared as numbers: 1, 2, 10
        def scale(state, k=k):
            state["model.decoder.fwd.2.weight"] = state["model.decoder.fwd.2.weight"].detach() * (1 + k)
        make_package(hens, name=name, layout="legacy" if k == 1 else "flexible", state=scale)
    assert main(["-q", "import-checkpoint", str(hens), str(tmp_path / "checkpoints")]) == 0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [IMPORT_MAP, "sfno-0", "sfno-1", "sfno-2"]
    mapping = json.loads((tmp_path / "checkpoints" / IMPORT_MAP).read_text())["checkpoints"]
    assert [mapping[f"sfno-{k}"]["package"] for k in range(3)] == ["seed1", "seed2", "seed10"]
    for k, name in enumerate(["seed1", "seed2", "seed10"]):
        card = load_checkpoint(tmp_path / "checkpoints" / f"sfno-{k}").card
        assert card.name == name and mapping[f"sfno-{k}"]["weights_sha256"] == card.weights_sha256
    assert "sfno-2" in capsys.readouterr().out


def test_directory_with_one_refused_package_writes_nothing(tmp_path, capsys):
    from workflows.cli import main

    hens = tmp_path / "hens"
    hens.mkdir()
    make_package(hens, name="a")
    make_package(hens, name="b", params=lambda p: set_param(p, "history_normalization_mode", "exponential"),
                 config=lambda c: c.update(history_normalization_mode="exponential"))
    assert main(["-q", "import-checkpoint", str(hens), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "history_normalization_mode='exponential'" in err[0] and "/b" in err[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_command_line_imports_and_reports_refusals_in_one_line(tmp_path, capsys):
    from workflows.cli import main

    assert main(["-q", "import-checkpoint", str(FIXTURE / "package"), str(tmp_path / "ck")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "ck" / "card.json").is_file() and "10 channels" in out and "makani-float32" in out
    assert main(["-q", "import-checkpoint", str(tmp_path / "nowhere"), str(tmp_path / "ck2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("forecast: error:") and "nowhere" in err[0]


# -- static inputs ----------------------------------------------------------------------------------
def test_missing_invariant_file_is_named(tmp_path):
    package = make_package(tmp_path)
    (package / "land_mask.nc").unlink()
    with pytest.raises(CheckpointError, match="land_mask.nc"):
        import_package(package, tmp_path / "ck")


def test_land_mask_without_exact_land_values_still_fills_the_weights_one_hot_channels(tmp_path):
    package = make_package(tmp_path)
    with xr.open_dataset(package / "land_mask.nc") as ds:
        fractional = ds.load()
    fractional["LSM"][:] = 0.4  # truncates to sea everywhere: makani's one_hot would find one class only
    (package / "land_mask.nc").unlink()
    fractional.to_netcdf(package / "land_mask.nc")
    import_package(package, tmp_path / "ck")
    static = load_checkpoint(tmp_path / "ck").network.extra.static
    assert torch.equal(static[0, 1], torch.ones(33, 64)) and torch.equal(static[0, 2], torch.zeros(33, 64))


TIME = np.datetime64("2021-07-01T06:00", "ns")


# -- a configuration the fixture does not cover, against a direct evaluation of the weights -------------
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


def test_ensemble_from_era5_with_an_imported_makani_package(imported, tmp_path):
    """WB2-layout analyses -> the imported makani-written package (cos zenith) -> bred vectors -> store."""
    from ensembles.engine import EnsembleEngine, PerturbationSettings
    from ensembles.plan import MemberPlan
    from forecast.data.era5 import open_era5

    card = load_checkpoint(imported).card
    times = np.arange(TIME - np.timedelta64(18, "h"), TIME + np.timedelta64(1, "h"), np.timedelta64(6, "h"))
    rng = np.random.default_rng(0)
    names = {"u10m": "10m_u_component_of_wind", "v10m": "10m_v_component_of_wind", "t2m": "2m_temperature",
             "sp": "surface_pressure", "msl": "mean_sea_level_pressure", "tcwv": "total_column_water_vapour",
             "d2m": "2m_dewpoint_temperature"}
    space = ("time", "latitude", "longitude")

    def field(channel, shape):
        k = card.channels.index(channel)
        return (card.mean[k] + card.std[k] * rng.normal(size=shape)).astype(np.float32)

    data = {names[c]: (space, field(c, (len(times), 33, 64))) for c in names}
    levels = [500, 700, 850]  # z500, q700, t850; the other levels hold noise the model does not read
    for short, long in {"z": "geopotential", "t": "temperature", "q": "specific_humidity"}.items():
        level = {"z": 500, "t": 850, "q": 700}[short]
        stack = np.stack([field(f"{short}{level}", (len(times), 33, 64)) for _ in levels], axis=1)
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




def test_cos_zenith_arithmetic_round_trips_through_the_card_spec():
    from models.extra_inputs import ExtraInputSpec

    spec = ExtraInputSpec.from_dict({"cos_zenith": "makani-float32"})
    assert spec.cos_zenith and spec.cos_zenith_arithmetic == "makani-float32"
    assert spec.to_dict() == {"cos_zenith": "makani-float32"}
    assert ExtraInputSpec.from_dict({"cos_zenith": True}).to_dict() == {"cos_zenith": True}
    with pytest.raises(ValueError, match="cos_zenith must be"):
        ExtraInputSpec.from_dict({"cos_zenith": "float16"})

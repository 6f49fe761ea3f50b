import json
from dataclasses import replace

import pytest
import torch

from forecast.grid import Grid
from models.card import ModelCard
from models.checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint
from models.sfno import SFNO, SFNOConfig
from models.train import seeded_init


def card(**architecture):
    arch = dict(in_channels=2, out_channels=2, nlat=17, nlon=32, embed_dim=8, num_layers=2, scale_factor=2)
    arch.update(architecture)
    return ModelCard(family="sfno", channels=("z500", "u500"), grid=Grid(17, 32).to_dict(), dt_hours=6,
                     mean=(1.0, 2.0), std=(3.0, 4.0), architecture=SFNOConfig(**arch).to_dict(), name="t")


def test_sfno_shapes_and_hens_config_builds():
    net = SFNO(SFNOConfig(in_channels=3, out_channels=2, nlat=17, nlon=32, embed_dim=8, num_layers=3, scale_factor=2))
    assert net(torch.randn(2, 3, 17, 32)).shape == (2, 2, 17, 32)
    hens = SFNOConfig(in_channels=77, out_channels=74, nlat=721, nlon=1440, scale_factor=2, embed_dim=620, num_layers=8)
    assert hens.internal_shape == (360, 720) and hens.modes == 360


def test_residual_prediction_starts_from_persistence():
    net = SFNO(SFNOConfig(in_channels=2, out_channels=2, nlat=17, nlon=32, embed_dim=8, num_layers=2,
                          residual_prediction=True, big_skip=False))
    x = torch.randn(1, 2, 17, 32)
    assert torch.equal(net(x), x)


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a = seeded_init(lambda: build_model(card()), 11)
    assert torch.equal(torch.rand(1), before)
    b = seeded_init(lambda: build_model(card()), 11)
    c = seeded_init(lambda: build_model(card()), 12)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_checkpoint_round_trip(tmp_path):
    model = seeded_init(lambda: build_model(card()), 1)
    written = save_checkpoint(model, tmp_path / "ck")
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded.card == written and len(written.weights_sha256) == 64
    x = torch.randn(1, 2, 17, 32)
    assert torch.equal(loaded.step(x), model.eval().step(x))
    assert torch.allclose(loaded.denormalise(loaded.normalise(x)), x, atol=1e-6)


def test_truncated_or_altered_weights_are_refused(tmp_path):
    save_checkpoint(build_model(card()), tmp_path / "ck")
    weights = tmp_path / "ck" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(tmp_path / "ck")


def test_card_that_disagrees_with_weights_is_refused(tmp_path):
    save_checkpoint(build_model(card()), tmp_path / "ck")
    path = tmp_path / "ck" / "card.json"
    data = json.loads(path.read_text())
    data["architecture"]["embed_dim"] = 16
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="disagree"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("key, value, problem", [
    ("embed_dim", "16", "embed_dim must be an integer, got '16'"),
    ("big_skip", "yes", "big_skip must be true or false, got 'yes'"),
    ("num_layers", 0, "num_layers must be positive, got 0"),
    ("colour", "red", "colour is not one of the SFNO hyper-parameters"),
])
def test_card_with_an_unusable_architecture_is_refused_naming_the_card(tmp_path, key, value, problem):
    save_checkpoint(build_model(card()), tmp_path / "ck")
    path = tmp_path / "ck" / "card.json"
    data = json.loads(path.read_text())
    data["architecture"][key] = value
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "ck")
    assert str(error.value).startswith(f"checkpoint {tmp_path / 'ck'}: the architecture in card.json cannot be built: {problem}")


def test_card_validation_names_problems():
    with pytest.raises(ValueError, match="std must be positive"):
        replace(card(), std=(1.0, 0.0))
    with pytest.raises(ValueError, match="unknown keys"):
        ModelCard.from_json(json.dumps({**json.loads(card().to_json()), "colour": "red"}))


@pytest.mark.parametrize("options", [
    {},
    {"encoder_layers": 2, "mlp_output_bias": True, "max_modes": 6, "skip_resampling": "shape_or_grid"},
    {"big_skip": False, "normalization": "none", "residual_prediction": True},
    {"extra_inputs": {"cos_zenith": True, "grid": {"kind": "sinusoidal", "frequencies": 3}, "static": ["orography"]}},
])
def test_state_shapes_match_the_module(options):
    from models.sfno import state_shapes

    config = SFNOConfig(in_channels=3, out_channels=3, nlat=17, nlon=32, embed_dim=8, num_layers=3, scale_factor=2, **options)
    actual = {k: tuple(v.shape) for k, v in SFNO(config).state_dict().items()}
    assert state_shapes(config) == actual


def test_extra_inputs_follow_the_state_and_need_a_valid_time():
    import numpy as np

    config = SFNOConfig(in_channels=2, out_channels=2, nlat=17, nlon=32, embed_dim=8, num_layers=2, scale_factor=2,
                        extra_inputs={"cos_zenith": True, "grid": {"kind": "linear"}})
    net = SFNO(config)
    assert config.network_in_channels == 5 and net.needs_time
    x = torch.randn(2, 2, 17, 32)
    full = net.extra(x, np.array(["2020-01-01T00", "2020-07-01T12"], dtype="datetime64[ns]"))
    assert torch.equal(full[:, :2], x) and full.shape == (2, 5, 17, 32)
    assert not torch.equal(full[0, 2], full[1, 2])  # one cos-zenith field per row's own time
    assert torch.allclose(full[0, 3, :, 0], torch.linspace(0, 1, 18)[:-1])  # makani's unit grid coordinate
    with pytest.raises(ValueError, match="valid time"):
        net(x)

"""The FuXi-ENS-style VAE: reproducible flow-dependent noise, CRPS+KL training under DDP, mixed ensembles."""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr

from models.checkpoint import load_checkpoint
from models.train import VAELoss, weighted_fair_crps
from models.vae import VAE, VAEConfig, gaussian_kl
from workflows.config import load_config

VAE_SET = {"model": "vae", "checkpoints": 1, "seed": 5, "period": {"start": "2000-01-01T00", "stop": "2000-01-20T18"},
           "architecture": {"embed_dim": 8, "encoder_blocks": 1, "decoder_blocks": 1, "latent_channels": 2,
                            "scale_factor": 1},
           "steps": 12, "batch_size": 4, "learning_rate": 0.005, "vae_loss": {"samples": 2, "beta": 0.01, "sample_from": "prior"}}


def net(seed=0, **kw):
    torch.manual_seed(seed)
    model = VAE(VAEConfig(in_channels=3, out_channels=3, nlat=17, nlon=32, embed_dim=8, latent_channels=4,
                          encoder_blocks=1, decoder_blocks=1, **kw))
    with torch.no_grad():  # make the prior and the decoder non-trivial
        model.prior.weight.normal_(0, 0.5)
        model.project[-1].weight.normal_(0, 0.3)
    return model.eval()


def test_same_seed_same_member_different_seeds_different_members():
    model = net()
    x = torch.randn(1, 3, 17, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = model.step(x.expand(2, -1, -1, -1), [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)])
        b = model.step(x, [torch.Generator().manual_seed(7)])
    assert torch.equal(a[0], b[0])  # a member's noise depends only on its own generator
    assert (a[0] - a[1]).abs().max() > 1e-3
    assert torch.equal(model.step(x, None), model.step(x, None))


def test_latent_noise_depends_on_the_state():
    model = net()
    states = torch.randn(2, 3, 17, 32, generator=torch.Generator().manual_seed(2)) * torch.tensor([1.0, 3.0]).reshape(2, 1, 1, 1)
    with torch.no_grad():
        _, logvar = model.prior_distribution(model.encode(states))
        spreads = []
        for x in states:
            members = model.step(x.expand(32, -1, -1, -1), [torch.Generator().manual_seed(s) for s in range(32)])
            spreads.append(members.std(dim=0))
    sigma = torch.exp(0.5 * logvar)
    assert (sigma[0] - sigma[1]).abs().mean() > 0.05 * sigma.mean()  # the prior's width follows the state
    assert sigma[0].std() > 0.01 * sigma[0].mean()  # and varies in space
    # same noise streams, different states: the ensembles' spread maps differ, not just shift
    a, b = spreads[0].flatten(), spreads[1].flatten()
    correlation = torch.corrcoef(torch.stack([a, b]))[0, 1]
    assert correlation < 0.99 and (a.mean() - b.mean()).abs() > 0.01 * a.mean()


def test_latent_correlation_makes_each_members_noise_persist():
    model = net(latent_correlation=0.9)
    x = torch.randn(4, 3, 17, 32, generator=torch.Generator().manual_seed(3))
    shape = (4, 4, 17, 32)
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    first = model._standard_noise(shape, gens, x)
    second = model._standard_noise(shape, gens, x)
    assert 0.8 < float(torch.corrcoef(torch.stack([first.flatten(), second.flatten()]))[0, 1]) < 0.97
    assert abs(float(second.std()) - 1) < 0.1  # the marginal stays standard normal
    fresh = [torch.Generator().manual_seed(s) for s in range(4)]
    assert torch.equal(model._standard_noise(shape, fresh, x), first)  # a new member stream starts afresh


def test_calibration_picks_the_lowest_crps_and_stops_past_it(monkeypatch):
    from ensembles import calibration

    tried = []

    def crps(model, *args):
        rho = model.network.config.latent_correlation
        tried.append(rho)
        return (rho - 0.52) ** 2

    monkeypatch.setattr(calibration, "ensemble_crps", crps)
    model = type("Model", (), {"network": net()})()
    best, scores = calibration.calibrate_latent_correlation(model, None, None, [], 4, candidates=(0.9, 0.0, 0.5, 0.6, 0.7))
    assert best == 0.5 and tried == [0.0, 0.5, 0.6]  # in increasing order, stopping at the first worse one
    assert model.network.config.latent_correlation == 0.0  # the model is left as it was


def test_fair_crps_loss_and_kl_match_closed_forms():
    members = torch.tensor([[[[[0.0]]], [[[1.0]]]]])  # batch 1, two samples, 1 channel, 1x1 grid
    assert float(weighted_fair_crps(members, torch.tensor([[[[0.0]]]]), torch.ones(1, 1))) == 0.0
    q = (torch.tensor(1.0), torch.tensor(0.0))
    p = (torch.tensor(0.0), torch.tensor(0.0))
    assert float(gaussian_kl(*q, *p)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 2"):
        VAELoss(samples=1)


def vae_config(workdir, overrides=()):
    from workflows.config import bundled_config

    return load_config(bundled_config("tiny"), [f"paths.workdir={workdir}", f"extra_models={{vae: {json.dumps(VAE_SET)}}}",
                                                 *overrides])


def test_vae_trains_under_two_ddp_processes_like_one(tiny_world, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.getcwd()}
    curves = {}
    for name, launcher in (("one", [sys.executable, "-m", "workflows.cli"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                    "--master_port", "29544", "-m", "workflows.cli"])):
        checkpoints = tmp_path / name
        args = ["-q", "train", "workflows/configs/tiny.yaml", f"paths.workdir={tiny_world.paths.workdir}",
                f"paths.checkpoints={checkpoints}", "train.checkpoints=0", f"extra_models={{vae: {json.dumps(VAE_SET)}}}"]
        result = subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        curves[name] = load_checkpoint(checkpoints / "vae-0").card.training["loss_curve"]
    assert len(curves["one"]) == VAE_SET["steps"]
    assert np.allclose(curves["one"], curves["two"], rtol=1e-4, atol=1e-7)


def test_mixed_plan_records_the_model_family_per_member(tiny_world, tmp_path):
    from workflows.recipes import build_engine, train_checkpoints

    config = vae_config(tiny_world.paths.workdir, [f"paths.checkpoints={tiny_world.paths.resolve('checkpoints')}",
                                                   "experiments={mixed: {models: [sfno, vae], members_per_checkpoint: 2}}"])
    train_checkpoints(config)
    from workflows.recipes import compute_skill

    compute_skill(config)
    engine = build_engine(config, experiment="mixed")
    path = tmp_path / "mixed.zarr"
    engine.run(engine.create_store(path))
    ds = xr.open_zarr(path, consolidated=False)
    assert list(ds["model_family"].values) == ["sfno"] * 5 + ["vae"] * 2
    assert np.isfinite(ds["z500"].values).all()
    vae = ds["z500"].isel(member=slice(5, 7)).values
    assert not np.array_equal(vae[0], vae[1])

"""Synthetic makani model packages in the published layout, for tests and benchmarks (no download needed).

Not a parity reference: parity is tested against the package makani itself wrote
(``shared/fixtures/makani-v0.1.0``, ``tests/test_makani_import.py``). These mock packages cover
configurations that fixture does not (scale factor 1, latitude/longitude grid features, 74 channels).

:func:`write_mock_package` writes ``config.json``, the statistics, optional ``orography.nc`` and
``land_mask.nc`` (NCAR ERA5 invariant layout: ``Z`` and ``LSM`` over ``time, latitude, longitude``) and
``training_checkpoints/best_ckpt_mp0.tar`` holding random weights under makani v0.1.0's key names and
shapes (``module.model.`` prefix, complex ``dhconv`` filters), as the HENS packages hold them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

#: the HENS "74chq" channel order (makani config ``channel_names``); ``2d`` is dewpoint (our ``d2m``)
HENS_CHANNELS = ["u10m", "v10m", "u100m", "v100m", "t2m", "sp", "msl", "tcwv", "2d"] + [
    f"{v}{p}" for v in "uvztq" for p in (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000)]


def makani_state(config: dict, n_in: int, generator: torch.Generator, filter_layout: str = "v0.1.0") -> dict:
    """Random weights named and shaped as makani's SFNO (``SingleStepWrapper.model``) stores them."""
    embed, layers = int(config["embed_dim"]), int(config["num_layers"])
    n_out = len(config["out_channels"])
    hidden = int(embed * config.get("mlp_ratio", 2.0))
    h, w = config["img_shape_x"] // config["scale_factor"], config["img_shape_y"] // config["scale_factor"]
    modes = min(int(h * config.get("hard_thresholding_fraction", 1.0)), int((w // 2 + 1) * config.get("hard_thresholding_fraction", 1.0)))

    def conv(out_ch, in_ch):
        return torch.randn(out_ch, in_ch, 1, 1, generator=generator) / np.sqrt(in_ch)

    def small(n):
        return 0.1 * torch.randn(n, generator=generator)

    state = {"encoder.fwd.0.weight": conv(embed, n_in), "encoder.fwd.0.bias": small(embed),
             "encoder.fwd.2.weight": conv(embed, embed)}
    for i in range(layers):
        weight = torch.randn(embed, embed, modes, dtype=torch.complex64, generator=generator) / np.sqrt(embed)
        if filter_layout == "grouped":  # later makani: a leading group dimension
            weight = weight[None]
        elif filter_layout == "real":
            weight = torch.view_as_real(weight).clone()
        state[f"blocks.{i}.filter.filter.weight"] = weight
        for norm in ("norm0", "norm1"):
            state[f"blocks.{i}.{norm}.weight"] = 1 + small(embed)
            state[f"blocks.{i}.{norm}.bias"] = small(embed)
        state[f"blocks.{i}.mlp.fwd.0.weight"] = conv(hidden, embed)
        state[f"blocks.{i}.mlp.fwd.0.bias"] = small(hidden)
        state[f"blocks.{i}.mlp.fwd.3.weight"] = conv(embed, hidden)
        state[f"blocks.{i}.mlp.fwd.3.bias"] = small(embed)
        state[f"blocks.{i}.outer_skip.weight"] = conv(embed, embed)
    state["decoder.fwd.0.weight"] = conv(embed, embed)
    state["decoder.fwd.0.bias"] = small(embed)
    state["decoder.fwd.2.weight"] = conv(n_out, embed)
    state["residual_transform.weight"] = conv(n_out, n_in)
    return state


def write_mock_package(root, nlat: int = 33, nlon: int = 64, channels=None, embed_dim: int = 16, num_layers: int = 2,
                       scale_factor: int = 2, grid_frequencies: int = 2, zenith: bool = True, orography: bool = True,
                       land_mask: bool = True, seed: int = 0, filter_layout: str = "v0.1.0",
                       prefix: str = "module.model.", extra_state: dict | None = None, extra_checkpoint: dict | None = None,
                       **config_overrides) -> Path:
    """Write a makani package (HENS configuration, small grid) with random weights to ``root``; returns it."""
    import xarray as xr

    root = Path(root)
    (root / "training_checkpoints").mkdir(parents=True, exist_ok=True)
    channels = list(channels or HENS_CHANNELS)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    lat = np.linspace(90.0, -90.0, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    config = {
        "nettype": "SFNO", "model_grid_type": "equiangular", "sht_grid_type": "legendre-gauss",
        "filter_type": "linear", "operator_type": "dhconv", "scale_factor": scale_factor, "embed_dim": embed_dim,
        "num_layers": num_layers, "complex_activation": "real", "normalization_layer": "instance_norm",
        "hard_thresholding_fraction": 1.0, "use_mlp": True, "mlp_mode": "serial", "mlp_ratio": 2,
        "separable": False, "activation_function": "gelu", "pos_embed": "none", "big_skip": True,
        "encoder_layers": 1, "factorization": None, "img_shape_x": nlat, "img_shape_y": nlon,
        "dt": 1, "dhours": 6, "n_history": 0, "target": "default", "normalization": "zscore",
        "channel_names": channels, "in_channels": list(range(len(channels))), "out_channels": list(range(len(channels))),
        "add_grid": grid_frequencies > 0, "gridtype": "sinusoidal", "grid_num_frequencies": max(grid_frequencies, 1),
        "add_zenith": zenith, "add_orography": orography, "add_landmask": land_mask,
        "global_means_path": "global_means.npy", "global_stds_path": "global_stds.npy",
        "orography_path": "orography.nc", "landmask_path": "land_mask.nc", "N_grid_channels": 2 * grid_frequencies,
    }
    config.update(config_overrides)
    (root / "config.json").write_text(json.dumps(config, indent=2))
    n = len(channels)
    np.save(root / "global_means.npy", rng.normal(0, 100, (1, n, 1, 1)).astype(np.float32))
    np.save(root / "global_stds.npy", rng.uniform(0.5, 50, (1, n, 1, 1)).astype(np.float32))
    coords = {"time": [np.datetime64("1979-01-01T00", "ns")], "latitude": lat, "longitude": lon}
    dims = ("time", "latitude", "longitude")
    if orography:
        z = np.clip(rng.normal(0, 4000, (1, nlat, nlon)), 0, None).astype(np.float32)
        xr.Dataset({"Z": (dims, z, {"units": "m**2 s**-2"})}, coords=coords).to_netcdf(root / "orography.nc")
    if land_mask:
        lsm = (rng.uniform(0, 1, (1, nlat, nlon)) > 0.6).astype(np.float32)
        lsm[0, 0, 0], lsm[0, 1, 1] = 1.0, 0.3  # a fractional coastal value, truncated to sea as makani does
        xr.Dataset({"LSM": (dims, lsm)}, coords=coords).to_netcdf(root / "land_mask.nc")
    n_in = n + int(zenith) + 2 * grid_frequencies + int(orography) + 2 * int(land_mask)
    state = makani_state(config, n_in, generator, filter_layout)
    state = {prefix + k: v for k, v in state.items()}
    state.update(extra_state or {})
    checkpoint = {"model_state": state, "epoch": 70, "iters": 1000}
    checkpoint.update(extra_checkpoint or {})
    torch.save(checkpoint, root / "training_checkpoints" / "best_ckpt_mp0.tar")
    return root

"""Time one member-step of the HENS-size SFNO (random weights, or an imported makani package).

The model is ``models.sfno.hens_config()``: 721x1440 equiangular outside, Legendre-Gauss 360x720 inside,
74 channels plus the HENS extra inputs (cos zenith, 16 sinusoidal grid frequencies, orography, one-hot
land-sea mask: 110 inputs), embed 620, 8 blocks, MLP ratio 2, instance norm, big skip.

Run from the repository root with the project installed (``make install``) or ``PYTHONPATH=.``::

    python bench/hens_step.py --dry                       # build on the meta device: parameters, no compute
    python bench/hens_step.py --small --device cpu        # same network on a 1-degree grid (181x360)
    python bench/hens_step.py --device cuda --tf32 --batch 2 --steps 5
    python bench/hens_step.py --device cuda --package /data/hens/sfno_linear_74chq_sc2_layers8_edim620_wstgl2-epoch70_seed102

Prints one JSON line: device, grid, batch, seconds per member-step (median of ``--steps`` timed steps after
``--warmup``), member-steps per second, peak memory.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from forecast.grid import Grid
from models.card import ModelCard
from models.sfno import hens_config


def build(args):
    """The model to time (a ``DeterministicModel``) and a description of it."""
    from models.checkpoint import build_model, load_checkpoint

    if args.package:
        from models.makani import import_package

        out = Path(tempfile.mkdtemp(prefix="hens-import-")) / "ck"
        began = time.perf_counter()
        import_package(args.package, out)
        model = load_checkpoint(out, args.device)
        return model, {"source": f"imported {args.package}", "import_seconds": round(time.perf_counter() - began, 2)}
    nlat, nlon = (181, 360) if args.small else (721, 1440)
    if args.grid:
        nlat, nlon = (int(v) for v in args.grid.lower().split("x"))
    config = hens_config(nlat=nlat, nlon=nlon)
    channels = [f"c{k}" for k in range(config.in_channels)]
    card = ModelCard(family="sfno", channels=channels, grid=Grid(nlat, nlon).to_dict(), dt_hours=6,
                     mean=[0.0] * len(channels), std=[1.0] * len(channels), architecture=config.to_dict(), name="hens-random")
    if args.dry:
        with torch.device("meta"):
            model = build_model(card)
    else:
        torch.manual_seed(0)
        model = build_model(card).to(args.device).eval()
    return model, {"source": "random weights"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dry", action="store_true", help="build on the meta device and report parameters only")
    parser.add_argument("--small", action="store_true", help="the HENS network on a 1-degree grid (181x360)")
    parser.add_argument("--grid", help="NLATxNLON, overrides --small (e.g. 361x720)")
    parser.add_argument("--package", help="a makani model package to import and time instead of random weights")
    parser.add_argument("--batch", type=int, default=1, help="members per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 matrix products on CUDA")
    parser.add_argument("--bf16", action="store_true", help="autocast bf16 (spectral transforms stay fp32)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32

    began = time.perf_counter()
    model, info = build(args)
    network = model.network
    config = network.config
    result = {"device": args.device, "grid": f"{config.nlat}x{config.nlon}", "internal": "x".join(map(str, config.internal_shape)),
              "channels": config.in_channels, "network_inputs": config.network_in_channels, "embed_dim": config.embed_dim,
              "layers": config.num_layers, "parameters": sum(p.numel() for p in network.parameters()), **info,
              "build_seconds": round(time.perf_counter() - began, 2)}
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(args.device)
    if args.dry:
        print(json.dumps(result))
        return 0

    x = torch.randn(args.batch, config.in_channels, config.nlat, config.nlon, device=args.device)
    valid_time = np.datetime64("2023-08-01T00:00")
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(args.device)

    def step():
        with torch.inference_mode(), torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16,
                                                    enabled=args.bf16):
            y = model.step(x, time=valid_time)
        if cuda:
            torch.cuda.synchronize(args.device)
        return y

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        y = step()
        times.append(time.perf_counter() - t0)
    per_member = statistics.median(times) / args.batch
    result.update(batch=args.batch, tf32=args.tf32, bf16=args.bf16, steps=args.steps,
                  seconds_per_member_step=round(per_member, 4), member_steps_per_second=round(1 / per_member, 3),
                  finite=bool(torch.isfinite(y).all()))
    if cuda:
        result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(args.device) / 2**30, 2)
    else:
        import psutil

        result["rss_gib"] = round(psutil.Process().memory_info().rss / 2**30, 2)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Ensemble generation throughput: our engine against the raw model math, side by side in one run.

    python bench/rollout.py                      # 121x240, 16 members, 40 leads, batch 8, on the CPU
    python bench/rollout.py --nlat 33 --nlon 64 --leads 8 --members 8
    python bench/rollout.py --e2s                # also earth2studio's run.ensemble, if it is installed

earth2studio is not a dependency of this project; to compare, install it into an environment beside
this one (``pip install earth2studio``) and run the bench there with this repository on ``PYTHONPATH``.

Both sides run the same SFNO (random weights) on the same batches. "Raw" is the bare loop of
``model.step`` under ``torch.inference_mode``; "engine" is ``EnsembleEngine.run`` into a fresh Zarr store:
bred vectors (3 cycles), normalisation, clipping, checksums, writer threads and the manifest included.
Prints member-steps/s of both, their ratio, files per store and bytes per member-step.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_world(root: Path, nlat: int, nlon: int, channels: int, embed: int, layers: int, history: int):
    from forecast.data import Source
    from forecast.grid import Grid
    from forecast.data.planet import to_dataset
    from forecast.random_fields import SphericalNoise
    from models.card import ModelCard
    from models.checkpoint import build_model, save_checkpoint
    from models.sfno import SFNOConfig
    from models.train import seeded_init

    grid = Grid(nlat, nlon)
    names = tuple(f"z{level}" for level in (50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 850, 925, 1000))[:channels]
    names = names + tuple(f"x{k}" for k in range(channels - len(names)))
    noise = SphericalNoise(grid, 1000.0)
    fields = noise.sample((history + 1, channels), torch.Generator().manual_seed(0)).numpy()
    times = np.datetime64("2020-01-01T00", "ns") + np.arange(history + 1) * np.timedelta64(6, "h")
    source = Source(to_dataset(fields, times, grid, names), name="bench")
    architecture = SFNOConfig(in_channels=channels, out_channels=channels, nlat=nlat, nlon=nlon, scale_factor=2,
                              embed_dim=embed, num_layers=layers, residual_prediction=True, big_skip=False).to_dict()
    card = ModelCard(family="sfno", channels=names, grid=grid.to_dict(), dt_hours=6, mean=[0.0] * channels,
                     std=[1.0] * channels, architecture=architecture, name="bench")
    model = seeded_init(lambda: build_model(card), 0)
    with torch.no_grad():  # a stable random model: small increments
        model.network.decoder[-1].weight.normal_(0, 1e-3, generator=torch.Generator().manual_seed(1))
    save_checkpoint(model, root / "ckpt")
    return source, times[-1], root / "ckpt"


def raw_rate(checkpoint, batch: int, steps: int, blocks: int, shape) -> float:
    from models.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint)
    x = torch.randn(batch, len(model.card.channels), *shape)
    with torch.inference_mode():
        model.step(x)
        began = time.perf_counter()
        for _ in range(blocks):
            state = x
            for _ in range(steps):
                state = model.step(state)
        elapsed = time.perf_counter() - began
    return blocks * batch * steps / elapsed


def engine_rate(source, init_time, checkpoint, members: int, batch: int, steps: int, root: Path, writers: int):
    from ensembles.engine import EnsembleEngine, PerturbationSettings
    from ensembles.plan import MemberPlan

    plan = MemberPlan(1, members, control=False)
    amplitude = {c: 0.1 for c in source.channels}
    engine = EnsembleEngine(checkpoints=[str(checkpoint)], plan=plan, analyses=source, init_times=[init_time],
                            lead_steps=steps, batch_size=batch, base_seed=0,
                            perturbation=PerturbationSettings(channels=source.channels[:1], amplitude=amplitude),
                            writer_threads=writers)
    path = root / "store.zarr"
    store = engine.create_store(path)
    began = time.perf_counter()
    counts = engine.run(store)
    elapsed = time.perf_counter() - began
    files = sum(1 for p in path.rglob("*") if p.is_file())
    data_bytes = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "/c/" in str(p))
    return counts["member_steps"] / elapsed, files, data_bytes / counts["member_steps"]


def e2s_rate(source, init_time, checkpoint, members: int, batch: int, steps: int, root: Path):  # pragma: no cover
    """earth2studio's ``run.ensemble`` on the same network: our model wrapped as an earth2studio prognostic
    (its ``Persistence`` model with the identity replaced by ``model.step`` on normalised states), the
    analyses as a data source, its hemispheric-centred bred vectors (3 cycles, spherical seed noise) and
    its Zarr backend. Returns member-steps/s, or ``None`` when earth2studio is not installed."""
    try:
        from earth2studio import run as e2s_run
        from earth2studio.io import ZarrBackend
        from earth2studio.models.px.persistence import Persistence
        from earth2studio.perturbation import HemisphericCentredBredVector, SphericalGaussian
    except ImportError:
        return None
    import xarray as xr

    from models.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint)
    grid = source.grid
    names = list(model.card.channels)

    class Wrapped(Persistence):
        def _forward(self, x, coords):
            out = self.output_coords(coords)
            state = x[:, -1].reshape(-1, *x.shape[-3:])
            with torch.inference_mode():
                step = model.denormalise(model.step(model.normalise(state)))
            return step.reshape(x.shape[0], 1, *x.shape[-3:]), out

    class Analyses:
        def __call__(self, time, variable):
            times = np.asarray(time, dtype="datetime64[ns]")
            fields = np.stack([source.initial_state(t, list(variable))[0] for t in times])
            return xr.DataArray(fields, dims=("time", "variable", "lat", "lon"),
                                coords={"time": times, "variable": list(variable), "lat": grid.lat, "lon": grid.lon})

    domain = {"lat": np.asarray(grid.lat), "lon": np.asarray(grid.lon)}
    prognostic = Wrapped(names, domain)
    data = Analyses()
    perturbation = HemisphericCentredBredVector(prognostic, data, SphericalGaussian(noise_amplitude=0.1),
                                                noise_amplitude=0.1, integration_steps=3)
    io = ZarrBackend(str(root / "e2s.zarr"))
    began = time.perf_counter()
    e2s_run.ensemble([init_time], steps, members, prognostic, data, io, perturbation, batch_size=batch,
                     device=torch.device("cpu"), verbose=False)
    return members * steps / (time.perf_counter() - began)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nlat", type=int, default=121)
    parser.add_argument("--nlon", type=int, default=240)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--leads", type=int, default=40)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--e2s", action="store_true", help="also time earth2studio's run.ensemble if installed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(tempfile.mkdtemp(prefix="bench-rollout-"))
    try:
        source, init_time, checkpoint = make_world(root, args.nlat, args.nlon, args.channels, args.embed, args.layers, 3)
        blocks = args.members // args.batch
        raw_first = raw_rate(checkpoint, args.batch, args.leads, blocks, (args.nlat, args.nlon))
        ours, files, per_step = engine_rate(source, init_time, checkpoint, args.members, args.batch, args.leads, root,
                                            args.writers)
        raw_second = raw_rate(checkpoint, args.batch, args.leads, blocks, (args.nlat, args.nlon))
        raw = max(raw_first, raw_second)
        print(f"grid {args.nlat}x{args.nlon}, {args.channels} channels, SFNO embed {args.embed} x {args.layers} layers, "
              f"{args.members} members x {args.leads} leads, batch {args.batch}, {args.threads} torch thread(s)")
        print(f"raw model math   : {raw:8.2f} member-steps/s (runs before/after: {raw_first:.2f}, {raw_second:.2f})")
        print(f"engine (to Zarr) : {ours:8.2f} member-steps/s")
        print(f"ratio raw/engine : {raw / ours:8.3f}")
        print(f"files per store  : {files}  ({args.members} members, {args.leads + 1} leads, {args.channels} variables)")
        print(f"bytes per member-step: {per_step:,.0f} (float32 state: {args.channels * args.nlat * args.nlon * 4:,})")
        if args.e2s:
            e2s = e2s_rate(source, init_time, checkpoint, args.members, args.batch, args.leads, root)
            print("earth2studio     : " + ("not installed" if e2s is None else
                                          f"{e2s:8.2f} member-steps/s (ours / earth2studio: {ours / e2s:.2f})"))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

"""One prepared GPU check: the engine end to end on one GPU, in one call, printed as one table.

    python bench/gpu_check.py                         # one H100/H200: HENS size, under 5 minutes
    python bench/gpu_check.py --device cpu --tiny     # the same code path at tiny sizes (CI, the CPU)

Rows (docs/gpu.md says what each means and what passes):
  1. the tiny world end to end, every model step on the device: train SFNO x2 and a VAE, skill, run, score
  2. member regeneration: members 5:6 alone vs the full run, bit-identical (deterministic mode)
  3. two ranks on one device vs one rank: identical stores; and two-rank DDP training vs one rank
  4. the HENS-size SFNO (random weights) through the engine (bred vectors, statistics of every channel,
     most channels statistics only, BitRound + zstd writer threads for the rest, batch_size auto) vs the
     bare model loop: member-steps/s, ratio, batch, peak memory, output wait over a steady-state window
  5. bf16 autocast vs float32 at HENS size: relative RMS difference of the state after 1 and 10 steps
  6. the cost of deterministic mode: the bare loop with TF32 and autotuning vs without

Each row is printed as soon as it finishes (a run cut short keeps what it measured); the table follows.
The HENS rows run in the order 4a (model, batch, bare loop), 6, 5, 4 (the engine, whose statistics take
longest to write; its window figures are printed as soon as the window is over).
The exit status is 0 when no row failed. Run from the repository root (``PYTHONPATH=.``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "workflows" / "configs" / "tiny.yaml"
VAE_SET = {"model": "vae", "checkpoints": 1, "seed": 5, "period": {"start": "2000-01-01T00", "stop": "2000-01-20T18"},
           "architecture": {"embed_dim": 8, "encoder_blocks": 1, "decoder_blocks": 1, "latent_channels": 2,
                            "scale_factor": 1},
           "batch_size": 4, "learning_rate": 0.005, "vae_loss": {"samples": 2, "beta": 0.01, "sample_from": "prior"}}


@dataclass
class Row:
    number: str
    check: str
    status: str  # PASS, FAIL or INFO (a measurement with no pass mark)
    figures: str
    seconds: float


def status(ok: bool | None) -> str:
    return "INFO" if ok is None else ("PASS" if ok else "FAIL")


# -- rows 1-3: the tiny world -------------------------------------------------------------------------
def tiny_overrides(work: Path, device: str, steps: int) -> list[str]:
    vae = {**VAE_SET, "steps": steps, "device": device}
    return [f"paths.workdir={work}", f"train.steps={steps}", f"train.device={device}", f"ensemble.device={device}",
            "train.processes=1", "ensemble.models=[sfno, vae]", "extra_models=" + json.dumps({"vae": vae}),
            "score.workers=2"]


def end_to_end(ctx) -> tuple[bool, str]:
    import xarray as xr

    from forecast.store import EnsembleStore
    from workflows.config import bundled_config, load_config
    from workflows.recipes import build_engine, compute_skill, make_planet, run_ensemble, score_store, train_checkpoints
    from workflows.training import training_device

    config = load_config(bundled_config("tiny"), ctx["overrides"])
    seconds = {}
    for stage, action in (("planet", lambda: make_planet(config)), ("train", lambda: train_checkpoints(config)),
                          ("skill", lambda: compute_skill(config)), ("run", lambda: run_ensemble(config))):
        began = time.perf_counter()
        result = action()
        seconds[stage] = time.perf_counter() - began
    path = result
    ctx.update(config=config, store=path, members=EnsembleStore.open(path).schema.n_members)  # rows 2, 3: not the scores
    began = time.perf_counter()
    score_store(path, config.paths.resolve("nature"), config.paths.resolve("scores"), workers=config.score.workers)
    seconds["score"] = time.perf_counter() - began
    store = EnsembleStore.open(path)
    complete = bool(store.done[:].all()) and store.verify() == []
    scores = xr.open_dataset(config.paths.resolve("scores") / "scores.nc")
    finite = all(np.isfinite(scores[v].values).any() for v in scores.data_vars if scores[v].dtype.kind == "f")
    engine_device = build_engine(config).device
    figures = (f"train on {training_device(config.train, 0)}, run on {engine_device}; {store.schema.n_members} members "
               f"(SFNO x2 + VAE); store complete {complete}, scores finite {finite}; "
               + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    return complete and finite, figures


def _same_values(a: Path, b: Path, members=slice(None)) -> tuple[bool, str]:
    import xarray as xr

    x, y = xr.open_zarr(a, consolidated=False), xr.open_zarr(b, consolidated=False)
    different = [v for v in x.data_vars if not np.array_equal(x[v].values[members], y[v].values[members], equal_nan=True)]
    return not different, f"{len(x.data_vars)} variables" + (f", differ: {different[:4]}" if different else " bit-identical")


def regeneration(ctx) -> tuple[bool, str]:
    from forecast.store import EnsembleStore
    from workflows.recipes import run_ensemble

    config = ctx["config"]
    alone = Path(config.paths.workdir) / "member-5.zarr"
    run_ensemble(replace(config, paths=replace(config.paths, store=str(alone))), members="5:6")
    same, text = _same_values(ctx["store"], alone, slice(5, 6))
    sums = np.array_equal(EnsembleStore.open(alone).checksums[:, 5], EnsembleStore.open(ctx["store"]).checksums[:, 5])
    return same and sums, f"member 5 run alone vs in the full run of {ctx['members']}: {text}; checksums equal {sums}"


def _cli(args, env_extra, log_path: Path):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # keep carried packages
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **env_extra}
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def two_ranks(ctx) -> tuple[bool, str]:
    from models.checkpoint import load_checkpoint

    config, overrides = ctx["config"], ctx["overrides"]
    work = Path(config.paths.workdir)
    two = work / "two-ranks.zarr"
    logs = work / "two-ranks.log"
    ranks = [_cli(["-m", "workflows.cli", "-q", "run", str(TINY), *overrides, f"paths.store={two}"],
                  {"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r)}, logs) for r in (0, 1)]
    codes = [p.wait(timeout=240) for p in ranks]
    if any(codes):
        return False, f"run exit codes {codes}: {logs.read_text()[-400:]}"
    same, text = _same_values(ctx["store"], two)
    # DDP training, two ranks sharing the device (gloo: NCCL refuses two ranks on one GPU) vs the one-rank curve
    ddp = work / "ddp-checkpoints"
    train = _cli(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29400 + os.getpid() % 500),
                  "-m", "workflows.cli", "-q", "train", str(TINY), *overrides, f"paths.checkpoints={ddp}",
                  "train.checkpoints=1", "extra_models={}", "ensemble.models=[sfno]", "train.backend=gloo"], {}, logs)
    if train.wait(timeout=240):
        return False, f"stores of 2 ranks vs 1: {text}; two-rank training failed: {logs.read_text()[-400:]}"
    one = np.array(load_checkpoint(config.paths.resolve("checkpoints") / "sfno-0").card.training["loss_curve"])
    two_curve = np.array(load_checkpoint(ddp / "sfno-0").card.training["loss_curve"])
    close = one.shape == two_curve.shape
    gap = float(np.max(np.abs(one - two_curve) / np.abs(one))) if close else float("inf")
    close = close and gap < 1e-4
    return same and close, f"stores of 2 ranks vs 1: {text}; DDP loss curve vs 1 rank: max relative gap {gap:.1e}"


# -- rows 4-6: the HENS-size SFNO ----------------------------------------------------------------------
def hens_world(ctx, args):
    """A HENS-shaped SFNO with random weights (residual form, increments ~5% of the state), saved as a
    checkpoint, and random analyses for it (history for the bred vectors included)."""
    from forecast.data import Source
    from forecast.grid import Grid
    from forecast.planet import to_dataset
    from models.card import ModelCard
    from models.checkpoint import build_model, save_checkpoint
    from models.sfno import hens_config
    from models.train import seeded_init

    device = args.device
    if args.tiny:
        nlat, nlon, channels = 33, 64, 8
        config = replace(hens_config(channels, nlat=nlat, nlon=nlon), embed_dim=16, num_layers=2)
    else:
        nlat, nlon, channels = 721, 1440, 74
        config = hens_config(channels, nlat=nlat, nlon=nlon)
    config = replace(config, residual_prediction=True)
    names = ("z500",) + tuple(f"c{k:02d}" for k in range(1, channels))
    grid = Grid(nlat, nlon)
    card = ModelCard(family="sfno", channels=names, grid=grid.to_dict(), dt_hours=6, mean=[0.0] * channels,
                     std=[1.0] * channels, architecture=config.to_dict(), name="hens-random")
    # built on the CPU like every checkpoint: torch-harmonics caches its Legendre tables by grid alone, and
    # tables made on the GPU would be reused by (and break) the CPU builds of load_checkpoint
    model = seeded_init(lambda: build_model(card), 0)
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(1)
    times = np.datetime64("2023-08-01T00", "ns") + np.arange(4) * np.timedelta64(6, "h")
    fields = torch.randn((len(times), channels, nlat, nlon), generator=generator)
    network = model.network
    with torch.no_grad():
        weight = network.decoder[-1].weight
        weight.copy_(torch.randn(weight.shape, generator=generator) / math.sqrt(config.embed_dim))
        x = fields[-1:].to(device)
        with torch.inference_mode():
            increment = model.step(x, time=times[-1]) - x
        scale = 0.05 * float(x.pow(2).mean().sqrt()) / max(float(increment.pow(2).mean().sqrt()), 1e-12)
        network.decoder[-1].weight.mul_(scale)
        if config.big_skip:
            network.residual_transform.weight.mul_(scale)
    path = Path(ctx["work"]) / "hens-random"
    save_checkpoint(model, path)
    source = Source(to_dataset(fields.numpy(), times, grid, names), name="random analyses")
    ctx.update(hens_model=model.to("cpu"), hens_checkpoint=path, hens_source=source, hens_init=times[-1],
               hens_names=names, hens_grid=(nlat, nlon))
    return model


def _bare_rate(model, batch: int, steps: int, shape, device: str, start_time, bf16: bool = False) -> float:
    x = torch.randn((batch, len(model.card.channels), *shape), generator=torch.Generator().manual_seed(2)).to(device)
    cuda = device.startswith("cuda")
    with torch.inference_mode(), torch.autocast(torch.device(device).type, torch.bfloat16, enabled=bf16):
        model.step(x, time=start_time)  # warm-up (kernel choice, caches)
        if cuda:
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        state = x
        for k in range(steps):
            state = model.step(state, time=start_time + k * np.timedelta64(6, "h")).float()
        if cuda:
            torch.cuda.synchronize(device)
    return batch * steps / (time.perf_counter() - began)


def hens_baseline(ctx, args) -> None:
    """The HENS-size model, the batch ``auto`` chooses for it, and the bare loop's rate at that batch."""
    from ensembles.engine import auto_batch_size

    hens_world(ctx, args)
    device, shape = args.device, ctx["hens_grid"]
    batch = auto_batch_size(ctx["hens_checkpoint"], device, shape)
    queue = 2 * args.writers + 2  # the sink's queue (ensembles.engine._Sink): steady state once it is full
    leads = queue + math.ceil(20 / batch) + 1
    model = ctx["hens_model"].to(device)
    steps = math.ceil(20 / batch) + 1  # as many member-steps as the engine's window
    bare = _bare_rate(model, batch, steps, shape, device, ctx["hens_init"])
    ctx.update(hens_batch=batch, hens_queue=queue, hens_leads=leads, hens_steps=steps, hens_bare=bare)


def _window(engine, batch: int, queue: int, leads: int) -> dict:
    """Rate and output wait over the steady-state window: from the lead that fills the queue to the last."""
    (t0, w0), (t1, w1) = engine.output_timeline[queue], engine.output_timeline[leads]
    steps = batch * (leads - queue)
    return {"steps": steps, "seconds": t1 - t0, "rate": steps / (t1 - t0), "wait": (w1 - w0) / (t1 - t0)}


def hens_engine(ctx, args) -> tuple[bool, str]:
    import threading

    from ensembles.engine import EnsembleEngine, PerturbationSettings
    from ensembles.plan import MemberPlan
    from ensembles.stats import StatisticsSpec

    device, names = args.device, ctx["hens_names"]
    cuda = device.startswith("cuda")
    batch, queue, leads, bare = ctx["hens_batch"], ctx["hens_queue"], ctx["hens_leads"], ctx["hens_bare"]
    ctx["hens_model"] = ctx["hens_model"].to("cpu")  # the engine loads its own copy
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    kept = names[:10] if not args.tiny else names[:2]  # the HENS recipe: 10 channels stored, the rest statistics
    engine = EnsembleEngine(
        checkpoints=[str(ctx["hens_checkpoint"])], plan=MemberPlan(1, batch, control=False), analyses=ctx["hens_source"],
        init_times=[ctx["hens_init"]], lead_steps=leads, batch_size=batch, base_seed=0,
        perturbation=PerturbationSettings(channels=("z500",), amplitude={"z500": 0.1}, cycles=3), device=device,
        statistics=StatisticsSpec(channels=names[len(kept):], thresholds={names[-1]: (1.0,)}),
        statistics_only=names[len(kept):], keepbits={c: 10 for c in kept}, zstd_level=3, writer_threads=args.writers)
    store_path = Path(ctx["work"]) / "hens.zarr"
    store = engine.create_store(store_path)
    done = threading.Event()

    def monitor():  # say the window's figures as soon as it is over (writing the statistics takes a while)
        while True:
            finished = done.wait(0.2)
            if len(getattr(engine, "output_timeline", [])) > leads:
                w = _window(engine, batch, queue, leads)
                print(f"[4] window: engine {w['rate']:.3g} vs bare {bare:.3g} member-steps/s, output wait "
                      f"{100 * w['wait']:.1f}% of {w['steps']} member-steps", flush=True)
                return
            if finished:
                return

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    try:
        counts = engine.run(store)
    finally:
        done.set()
        watcher.join()
    began = time.perf_counter()
    os.sync()  # the window's bytes reach the disk, not only the page cache
    sync_seconds = time.perf_counter() - began
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
    w = _window(engine, batch, queue, leads)
    data_bytes = sum(p.stat().st_size for p in store_path.rglob("*") if p.is_file() and "/c/" in str(p))
    bandwidth = data_bytes / counts["member_steps"] * w["rate"] / 2**20
    ratio = w["rate"] / bare
    figures = (f"batch auto {batch}; bare {bare:.3g}, engine {w['rate']:.3g} member-steps/s in the window (ratio "
               f"{ratio:.3f}; whole run incl. load, breeding, statistics {counts['member_steps'] / counts['seconds']:.3g}); "
               f"peak GPU {peak:.1f} GiB; output wait {100 * w['wait']:.1f}% of {w['steps']} member-steps, "
               f"{bandwidth:.0f} MiB/s needed ({len(kept)} of {len(names)} channels stored, {args.writers} writers), "
               f"sync {sync_seconds:.1f} s")
    return (ratio >= 0.95 and w["wait"] < 0.05) if cuda else None, figures


def bf16_difference(ctx, args) -> tuple[bool | None, str]:
    device, names = args.device, ctx["hens_names"]
    model = ctx["hens_model"].to(device)
    x = ctx["hens_source"].initial_state(ctx["hens_init"], names)
    x = torch.from_numpy(np.asarray(x)).to(device)
    states = {}
    for bf16 in (False, True):
        state, kept = x, {}
        with torch.inference_mode(), torch.autocast(torch.device(device).type, torch.bfloat16, enabled=bf16):
            for k in range(1, 11):
                state = model.step(state, time=ctx["hens_init"] + (k - 1) * np.timedelta64(6, "h")).float()
                if k in (1, 10):
                    kept[k] = state.double().cpu()
        states[bf16] = kept
    parts = []
    finite = True
    for k in (1, 10):
        fp32, bf = states[False][k][0], states[True][k][0]
        finite &= bool(torch.isfinite(bf).all())
        per_channel = ((bf - fp32).pow(2).mean(dim=(-2, -1)) / fp32.pow(2).mean(dim=(-2, -1))).sqrt()
        overall = float(((bf - fp32).pow(2).mean() / fp32.pow(2).mean()).sqrt())
        worst = torch.argsort(per_channel, descending=True)[:3]
        parts.append(f"step {k}: {overall:.2e} (largest {', '.join(f'{names[i]} {float(per_channel[i]):.1e}' for i in worst)})")
    return (None if finite else False), "relative RMS bf16 - fp32: " + "; ".join(parts)


def determinism_cost(ctx, args) -> tuple[bool | None, str]:
    from models.precision import set_numerical_mode

    device = args.device
    model = ctx["hens_model"].to(device)
    batch, steps = ctx["hens_batch"], ctx["hens_steps"]
    set_numerical_mode(False, device)
    try:
        fast = _bare_rate(model, batch, steps, ctx["hens_grid"], device, ctx["hens_init"])
    finally:
        set_numerical_mode(True, device)
    deterministic = ctx["hens_bare"]
    return None, (f"bare loop, batch {batch}: deterministic {deterministic:.3g}, fast (TF32, autotuning) {fast:.3g} "
                  f"member-steps/s: deterministic mode costs {100 * (1 - deterministic / fast):.0f}%"
                  + ("" if device.startswith("cuda") else " (on a CPU both modes are the same: this is noise)"))


# -- the table ------------------------------------------------------------------------------------------
def run_row(rows: list, number: str, check: str, action, *needs) -> None:
    began = time.perf_counter()
    try:
        ok, figures = action()
    except Exception as error:  # noqa: BLE001 - a failed row is reported and the others still run
        ok, figures = False, f"error: {type(error).__name__}: {' '.join(str(error).split())[:300]}"
        logging.getLogger("gpu_check").error("row %s failed:\n%s", number, traceback.format_exc())
    row = Row(number, check, status(ok), figures, time.perf_counter() - began)
    rows.append(row)
    print(f"[{row.number}] {row.status} {row.check} ({row.seconds:.0f} s): {row.figures}", flush=True)


def table(rows: list[Row], header: str) -> str:
    lines = [header, "", "| # | check | result | s | figures |", "|---|---|---|---|---|"]
    lines += [f"| {r.number} | {r.check} | {r.status} | {r.seconds:.0f} | {r.figures} |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny HENS-shaped model (33x64, 8 channels): CI, the CPU")
    parser.add_argument("--train-steps", type=int, default=6, help="training steps per checkpoint in rows 1 and 3")
    parser.add_argument("--writers", type=int, default=2, help="writer threads in row 4 (the engine's default)")
    parser.add_argument("--workdir", help="where stores go (default: a new folder under the current one: local disk)")
    parser.add_argument("--skip", default="", help="rows to skip, e.g. 4,5,6")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    if args.device == "cuda":
        args.device = "cuda:0"
    from models.precision import set_numerical_mode

    set_numerical_mode(True, args.device)  # before CUDA starts: the engine's default mode
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gpu-check-", dir=os.getcwd()))
    work.mkdir(parents=True, exist_ok=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    ctx = {"work": work, "overrides": tiny_overrides(work / "tiny", args.device, args.train_steps)}
    rows: list[Row] = []
    began = time.perf_counter()
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    try:
        steps = [("1", "tiny world end to end on the device", lambda: end_to_end(ctx), None),
                 ("2", "members 5:6 alone = full run (bits)", lambda: regeneration(ctx), "store"),
                 ("3", "two ranks on one device = one rank", lambda: two_ranks(ctx), "store"),
                 ("4a", "HENS-size model, batch auto, bare loop", lambda: (hens_baseline(ctx, args), (None, (
                     f"{ctx['hens_batch']} members per batch, bare loop {ctx['hens_bare']:.3g} member-steps/s over "
                     f"{ctx['hens_steps']} steps")))[1], None),
                 ("6", "cost of deterministic mode", lambda: determinism_cost(ctx, args), "hens_bare"),
                 ("5", "bf16 autocast vs float32, HENS size", lambda: bf16_difference(ctx, args), "hens_model"),
                 ("4", "HENS-size engine vs bare loop", lambda: hens_engine(ctx, args), "hens_bare")]
        for number, check, action, needs in steps:
            if number in skip or (number == "4a" and {"4", "5", "6"} <= skip):
                continue
            if needs is not None and needs not in ctx:
                rows.append(Row(number, check, "SKIP", f"an earlier row did not provide {needs}", 0.0))
                continue
            run_row(rows, number, check, action)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    header = (f"gpu_check on {name} ({args.device}{', tiny' if args.tiny else ''}), torch {torch.__version__}, "
              f"{time.perf_counter() - began:.0f} s in all")
    print(table(sorted(rows, key=lambda r: r.number), header), flush=True)
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())

"""CRPS throughput and working memory: ours vs properscoring, xskillscore and scores, side by side.

Every library scores the same float32 arrays (forecast ``(point, member)`` or ``(member, point)``,
truth ``(point,)``) in one process. Throughput is GB of forecast data per second of wall time (best of
``--repeat`` warm calls, interleaved across libraries); working memory is the tracemalloc peak of one call above what was allocated
before it (NumPy, Dask and Numba buffers are all traced), reported as a multiple of the input. Peers
run as users call them: on NumPy-backed DataArrays (one core) and on Dask chunks of about 32 MB with
the threaded scheduler (all cores); ours uses all cores through its block threads.

    python bench/verify.py                 # M = 50, 1000, 7424 on 256 MB inputs
    python bench/verify.py --quick         # the same on 32 MB inputs (about a minute)
    python bench/verify.py --members 50 --mb 64 --layout member-first
    python bench/verify.py --phases        # where our time goes: each step of one block, one core
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dask  # noqa: E402
import xarray as xr  # noqa: E402

from forecast import verify  # noqa: E402
from forecast.verify import _kernels  # noqa: E402


def make_arrays(m: int, nbytes: int, layout: str, seed: int = 0):
    n = max(1, nbytes // (4 * m))
    rng = np.random.default_rng(seed)
    shape = (n, m) if layout == "member-last" else (m, n)
    f = rng.standard_normal(shape, dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    dims = ("point", "member") if layout == "member-last" else ("member", "point")
    return f, y, xr.DataArray(f, dims=dims), xr.DataArray(y, dims="point")


def cases(f, y, fx, yx, m: int):
    """name -> (kind, callable returning a NumPy array) for every library that is installed."""
    axis = -1 if fx.dims[-1] == "member" else 0
    chunk = max(1, (32 << 20) // (4 * m))
    fd, yd = fx.chunk({"point": chunk}), yx.chunk({"point": chunk})
    out = {
        "ours standard": ("standard", lambda: verify.crps(fx, yx, fair=False).values),
        "ours fair": ("fair", lambda: verify.crps(fx, yx).values),
    }
    try:
        import properscoring

        out["properscoring"] = ("standard", lambda: properscoring.crps_ensemble(y, f, axis=axis))
    except ImportError:
        pass
    try:
        import xskillscore as xs

        out["xskillscore"] = ("standard", lambda: xs.crps_ensemble(yx, fx, dim=[]).values)
        out["xskillscore dask"] = ("standard", lambda: xs.crps_ensemble(yd, fd, dim=[]).compute().values)
    except ImportError:
        pass
    try:
        from scores.probability import crps_for_ensemble

        for method, kind in (("ecdf", "standard"), ("fair", "fair")):
            out[f"scores {method}"] = (kind, lambda method=method: crps_for_ensemble(
                fx, yx, "member", method=method, preserve_dims="all").values)
            out[f"scores {method} dask"] = (kind, lambda method=method: crps_for_ensemble(
                fd, yd, "member", method=method, preserve_dims="all").compute().values)
    except ImportError:
        pass
    return out


def peak_memory(fn) -> int:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    del result
    return peak


def run(members, nbytes: int, layout: str, repeat: int) -> bool:
    ok = True
    print(f"# CRPS throughput, float32, layout {layout}, {nbytes / 2**20:.0f} MB per input, {_kernels.available_cores()} core(s), "
          f"best of {repeat}; memory = tracemalloc peak / input size")
    print(f"{'M':>6} {'library':<20} {'kind':<9} {'GB/s':>7} {'memory':>8} {'max rel diff':>13}")
    for m in members:
        f, y, fx, yx = make_arrays(m, nbytes, layout)
        table = cases(f, y, fx, yx, m)
        for name, (kind, fn) in table.items():
            fn()  # warm: imports, compilation, first touch
        best = {name: np.inf for name in table}
        for _ in range(repeat):  # interleaved, so a burst of load on this shared machine hits everyone alike
            for name, (kind, fn) in table.items():
                gc.collect()
                began = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - began)
        reference = {}
        rows = []
        for name, (kind, fn) in table.items():
            memory = peak_memory(fn) / f.nbytes
            values = np.asarray(fn(), dtype=np.float64)
            reference.setdefault(kind, values)
            diff = np.max(np.abs(values - reference[kind]) / np.maximum(np.abs(reference[kind]), 1e-12))
            rows.append((name, kind, f.nbytes / best[name] / 1e9, memory, diff))
            print(f"{m:>6} {name:<20} {kind:<9} {rows[-1][2]:>7.3f} {memory:>7.2f}x {diff:>13.1e}", flush=True)
        for kind in ("standard", "fair"):
            ours = [r for r in rows if r[0] == f"ours {kind}"][0]
            peers = [r for r in rows if r[1] == kind and not r[0].startswith("ours")]
            if not peers:
                continue
            best = max(peers, key=lambda r: r[2])
            verdict = ours[2] >= 2 * best[2] and ours[3] <= 2.0
            ok &= verdict
            print(f"{m:>6} => ours {kind}: {ours[2] / best[2]:.2f}x the fastest peer ({best[0]}, {best[2]:.3f} GB/s), "
                  f"memory {ours[3]:.2f}x input: {'PASS' if verdict else 'FAIL'} (needs >= 2x and <= 2x)", flush=True)
        del f, y, fx, yx, table
        gc.collect()
    return ok


def phases(members, repeat: int = 30) -> None:
    """Nanoseconds per member value of each step the block engine runs on one member-last block of
    ``BLOCK_BYTES`` (one thread, warm cache, best of ``repeat``): the ceiling of one core. The last
    column sorts the same block as float32 instead of as int32 order keys (not part of the total)."""
    print(f"# steps of one {_kernels.BLOCK_BYTES >> 10} KB member-last block, float32, one thread, ns per member value")
    print(f"{'M':>6} {'copy':>7} {'encode':>7} {'sort':>7} {'decode':>7} {'crps':>7} {'total':>7}  GB/s per core"
          f"  {'float32 sort':>12}")
    for m in members:
        source, y, _, _ = make_arrays(m, _kernels.BLOCK_BYTES, "member-last")
        block = np.empty_like(source)
        keys = block.view(np.int32)
        fair, standard = np.empty(len(y)), np.empty(len(y))
        steps = {"copy": lambda: np.copyto(block, source), "encode": lambda: _kernels._encode(keys.reshape(-1)),
                 "sort": lambda: keys.sort(axis=-1), "decode": lambda: _kernels._decode(keys.reshape(-1)),
                 "crps": lambda: _kernels.crps_rows(block, y, fair, standard),
                 "refill": lambda: np.copyto(block, source), "float32 sort": lambda: block.sort(axis=-1)}
        best = dict.fromkeys(steps, np.inf)
        for _ in range(repeat + 1):  # the first round compiles and warms
            for name, step in steps.items():
                began = time.perf_counter()
                step()
                best[name] = min(best[name], time.perf_counter() - began)
        ns = {name: seconds / source.size * 1e9 for name, seconds in best.items()}
        engine = [ns[name] for name in ("copy", "encode", "sort", "decode", "crps")]
        print(f"{m:>6} " + " ".join(f"{v:>7.2f}" for v in engine) + f" {sum(engine):>7.2f}  {4 / sum(engine):>13.2f}"
              f"  {ns['float32 sort']:>12.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[50, 1000, 7424])
    parser.add_argument("--mb", type=float, default=256, help="forecast input size per case in MB (default 256)")
    parser.add_argument("--quick", action="store_true", help="32 MB inputs, two timed rounds")
    parser.add_argument("--layout", choices=["member-last", "member-first", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds, interleaved across libraries (best counts)")
    parser.add_argument("--phases", action="store_true", help="only time each step of our block engine on one core")
    args = parser.parse_args(argv)
    if args.phases:
        phases(args.members)
        return 0
    nbytes = int((32 if args.quick else args.mb) * 2**20)
    repeat = 2 if args.quick else args.repeat
    warnings.filterwarnings("ignore")
    dask.config.set(scheduler="threads", num_workers=_kernels.available_cores())
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    layouts = ["member-last", "member-first"] if args.layout == "both" else [args.layout]
    ok = all([run(args.members, nbytes, layout, repeat) for layout in layouts])
    print("overall:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Scoring HENS-size stores with `forecast score`: peak memory of the whole process tree and time vs M.

For each ensemble size M this writes a synthetic store through the store API (EnsembleStore.create /
write / finish; a small grid, a few leads, its truth beside it), then runs `forecast score` on it in a
fresh process (on threads up to ``workflows.recipes.IN_PROCESS_BYTES`` of data, else a local Dask cluster), sampling the resident memory of that process and all its
children (scheduler, workers) every 0.1 s. It prints M, the store's size, wall time, the peak
memory of the tree, and a straight-line fit of time against M. In the same run it reads every channel of
the store with zarr directly (decoded float32, in a fresh process) and prints both throughputs in GB/s of
float32 data and their ratio (``forecast score`` end to end / zarr's direct read).

    python bench/score_store.py                      # M = 928, 1856, 3712, 7424 (writes ~1 GB under --workdir)
    python bench/score_store.py --members 116 464    # quick
    python bench/score_store.py --members 128 --grid 361 720 --leads 9 --init-times 2 --repeat 3 --reuse  # at size
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LIMIT_MB = 4096


def tree_rss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_score(store: Path, truth: Path, out: Path, workers: int) -> tuple[float, int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "workflows.cli", "score", str(store), "--truth", str(truth),
                             "--out", str(out), "--workers", str(workers)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    handle = psutil.Process(proc.pid)
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(handle))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    stop.set()
    sampler.join()
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"forecast score failed ({proc.returncode}):\n{stderr[-3000:]}")
    return seconds, peak, stdout.strip()


DIRECT_READ = """
import sys, time, zarr
group = zarr.open_group(sys.argv[1], mode="r")
began = time.perf_counter()
total = 0
for name in sys.argv[2:]:
    array = group[name]
    for i in range(array.shape[1]):  # one start date at a time (a start date fits memory)
        total += array[:, i].nbytes
print(total, time.perf_counter() - began)
"""


def direct_read(store: Path, channels) -> tuple[int, float]:
    """Bytes of decoded float32 and seconds for zarr's own read of every channel, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", DIRECT_READ, str(store), *channels], capture_output=True, text=True,
                         check=True)
    size, seconds = out.stdout.split()
    return int(size), float(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[928, 1856, 3712, 7424])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "forecast-bench-stores"))
    parser.add_argument("--grid", type=int, nargs=2, default=[17, 32], metavar=("NLAT", "NLON"))
    parser.add_argument("--leads", type=int, default=4)
    parser.add_argument("--channels", nargs="+", default=["z500", "t2m"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--init-times", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="read and score each store this many times, alternating")
    parser.add_argument("--reuse", action="store_true", help="keep a store this bench wrote before under --workdir")
    args = parser.parse_args(argv)

    from forecast.verify.mock import write_mock_store

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"# forecast score on synthetic stores: grid {args.grid[0]}x{args.grid[1]}, {args.leads} leads, "
          f"channels {' '.join(args.channels)}, {args.init_times} start date(s), {args.workers} workers (threads, or local processes above IN_PROCESS_BYTES)")
    print(f"# machine: {os.cpu_count()} cores, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} at the "
          "start (other jobs slow both reads alike: compare the ratio, not the GB/s)")
    print(f"{'M':>6} {'store MB':>9} {'write s':>8} {'score s':>8} {'peak tree MB':>13} {'zarr GB/s':>10} "
          f"{'score GB/s':>11} {'ratio':>6}")
    for m in args.members:
        store, truth = workdir / f"mock-{m}.zarr", workdir / f"mock-{m}.truth.zarr"
        began = time.perf_counter()
        if not (args.reuse and store.exists() and truth.exists()):
            store, truth = write_mock_store(store, members=m, channels=tuple(args.channels), init_times=args.init_times,
                                            leads=args.leads, nlat=args.grid[0], nlon=args.grid[1], block=512)
        written = time.perf_counter() - began
        size = sum(f.stat().st_size for f in store.rglob("*") if f.is_file()) / 2**20
        for _ in range(args.repeat):
            data_bytes, read_seconds = direct_read(store, args.channels)
            seconds, peak, _ = run_score(store, truth, workdir / f"mock-{m}-scores", args.workers)
            rows.append((m, seconds, peak))
            direct, scored = data_bytes / read_seconds / 1e9, data_bytes / seconds / 1e9
            print(f"{m:>6} {size:>9.1f} {written:>8.1f} {seconds:>8.1f} {peak / 2**20:>13.0f} {direct:>10.3f} "
                  f"{scored:>11.3f} {scored / direct:>6.2f}", flush=True)
    members = np.array([r[0] for r in rows], dtype=float)
    seconds = np.array([r[1] for r in rows])
    peak_mb = max(r[2] for r in rows) / 2**20
    ok = peak_mb <= LIMIT_MB
    if len(set(members)) >= 2:
        slope, intercept = np.polyfit(members, seconds, 1)
        fitted = intercept + slope * members
        r2 = 1 - ((seconds - fitted) ** 2).sum() / max(((seconds - seconds.mean()) ** 2).sum(), 1e-12)
        print(f"time = {intercept:.1f} s + {1000 * slope:.2f} s per 1000 members (R^2 = {r2:.3f}); "
              f"marginal cost per member from smallest to largest: "
              f"{(seconds[-1] - seconds[0]) / (members[-1] - members[0]) * 1000:.2f} s per 1000")
    print(f"peak memory of the process tree: {peak_mb:.0f} MB (limit {LIMIT_MB} MB): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

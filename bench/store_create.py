"""How long creating an ensemble store takes (``EnsembleEngine.create_store``: metadata, coordinates, seeds,
manifest), for a HENS-size member count on the tiny world, optionally beside an earlier release.

Each repetition creates the store once per tree, in a fresh process (``PYTHONPATH`` set to that tree, the
same interpreter), alternating which goes first, and prints the seconds of each and their ratio. The
store has ``--members`` members per checkpoint (2 checkpoints and the control) and one start date every
6 hours from 2000-01-12T00 for ``--dates`` dates, 4 channels and all leads in one shard (the tiny grid).

The tiny world (planet and checkpoints) is made once with::

    forecast planet workflows/configs/tiny.yaml --workdir /tmp/tinyworld
    forecast train workflows/configs/tiny.yaml --workdir /tmp/tinyworld

Then, against the release before the lazy template (a git worktree of it)::

    git worktree add /tmp/base-bcaa57c bcaa57c
    python bench/store_create.py --workdir /tmp/tinyworld --baseline /tmp/base-bcaa57c
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CREATE = """
import sys, time
import numpy as np
from workflows.config import load_config
from workflows.recipes import build_engine
workdir, members, dates, store = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
stop = np.datetime64("2000-01-12T00") + (dates - 1) * np.timedelta64(6, "h")
config = load_config("workflows/configs/tiny.yaml", [f"paths.workdir={workdir}", f"paths.store={store}",
                     f"ensemble.members_per_checkpoint={members}", "ensemble.init_times.start=2000-01-12T00",
                     f"ensemble.init_times.stop={stop}", "ensemble.init_times.every_hours=6"])
engine = build_engine(config)
began = time.perf_counter()
engine.create_store(config.paths.resolve("store"))
print(time.perf_counter() - began)
"""


def create_seconds(tree: Path, workdir: str, members: int, dates: int) -> float:
    """Seconds ``tree``'s code takes to create the store, in a fresh process."""
    folder = Path(tempfile.mkdtemp(prefix="store-create-"))
    try:
        env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        result = subprocess.run([sys.executable, "-c", CREATE, workdir, str(members), str(dates), str(folder / "s.zarr")],
                                cwd=tree, env=env, capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"{tree}: {result.stderr.strip().splitlines()[-1]}")
        return float(result.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a tiny world: planet and checkpoints")
    parser.add_argument("--members", type=int, default=3712, help="members per checkpoint (3712: 7,425 in all)")
    parser.add_argument("--dates", type=int, default=9, help="start dates, 6 hours apart")
    parser.add_argument("--baseline", type=Path, help="an earlier checkout to measure beside this one")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    print(f"creating a store of {2 * args.members + 1:,} members x {args.dates} start dates; load average "
          f"{os.getloadavg()[0]:.2f}")
    for k in range(args.repeat):
        trees = [("this", HERE)] + ([("baseline", args.baseline)] if args.baseline else [])
        times = dict((name, create_seconds(tree, args.workdir, args.members, args.dates))
                     for name, tree in (trees if k % 2 == 0 else trees[::-1]))
        line = "  ".join(f"{name} {seconds:.2f} s" for name, seconds in times.items())
        if args.baseline:
            line += f"  ratio this/baseline {times['this'] / times['baseline']:.3f}"
        print(line)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

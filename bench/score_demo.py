"""`forecast score` of this tree against an earlier release, side by side in one run, and their scores.nc.

Each repetition scores the same store with both trees, alternating which goes first, each in a fresh
process (``python -m workflows.cli score ...`` with ``PYTHONPATH`` set to that tree, the same
interpreter). It prints the wall times, the median of the paired ratios new/old (and the ratio of the
medians), the machine's load average before and after (only side-by-side ratios mean anything on a
loaded machine), and compares the two ``scores.nc`` of the last repetition: for every variable in both,
the largest absolute and relative difference and where the NaNs differ; the variables and attributes
only one release writes are listed (a new release adds scores and attributes by design).

On the demo store, against the release before issue 17 (a git worktree of it, left untouched)::

    git worktree add /tmp/base-3fbf8d8 3fbf8d8
    python bench/score_demo.py demo-output/ensemble.zarr --truth demo-output/planet/nature.zarr \\
        --baseline /tmp/base-3fbf8d8 --repeat 3 --work /tmp/score-demo

``--new DIR`` measures another checkout instead of this one (e.g. a branch against main).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def score_once(tree: Path, store: str, truth: str, out: Path, python: str = sys.executable) -> float:
    """Wall seconds of one ``forecast score`` of ``store`` by the code in ``tree``, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [python, "-m", "workflows.cli", "score", store, "--truth", truth, "--out", str(out)]
    began = time.perf_counter()
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"score_demo: `{' '.join(command)}` in {tree} failed ({result.returncode}):\n"
                         f"{result.stderr[-3000:]}")
    return seconds


def compare_scores(new_path, old_path) -> dict:
    """Differences between two ``scores.nc``: ``variables`` maps each variable in both to ``(max_abs,
    max_rel, nan_mismatch)`` (``None`` for a shape or dims mismatch, named in ``mismatched``); ``only_new``,
    ``only_old``, ``attrs_only_new``, ``attrs_only_old`` and ``attrs_differ`` list the rest.

    The relative difference is ``|new - old| / |old|`` where both are finite and ``old`` is not 0;
    ``nan_mismatch`` counts points NaN in one file only.
    """
    import xarray as xr

    with xr.open_dataset(new_path) as new, xr.open_dataset(old_path) as old:
        new, old = new.load(), old.load()
    out = {"variables": {}, "mismatched": [], "only_new": sorted(set(new.data_vars) - set(old.data_vars)),
           "only_old": sorted(set(old.data_vars) - set(new.data_vars)),
           "attrs_only_new": sorted(set(new.attrs) - set(old.attrs)),
           "attrs_only_old": sorted(set(old.attrs) - set(new.attrs)),
           "attrs_differ": sorted(k for k in set(new.attrs) & set(old.attrs) if str(new.attrs[k]) != str(old.attrs[k]))}
    for name in sorted(set(new.data_vars) & set(old.data_vars)):
        a, b = new[name], old[name]
        if a.dims != b.dims or a.shape != b.shape:
            b = b.transpose(*a.dims) if set(a.dims) == set(b.dims) else b
        if a.dims != b.dims or a.shape != b.shape:
            out["mismatched"].append(f"{name}: {dict(a.sizes)} vs {dict(b.sizes)}")
            continue
        b = b.reindex_like(a) if all(d in b.indexes for d in a.dims) else b
        try:
            x, y = np.asarray(a.values, dtype=float), np.asarray(b.values, dtype=float)
        except (TypeError, ValueError):
            out["mismatched"].append(f"{name}: not numeric ({a.dtype}), {'equal' if a.equals(b) else 'differs'}")
            continue
        both = np.isfinite(x) & np.isfinite(y)
        diff = np.abs(x - y)[both]
        base = np.abs(y)[both]
        relative = diff[base > 0] / base[base > 0]
        out["variables"][name] = (float(diff.max()) if diff.size else 0.0,
                                  float(relative.max()) if relative.size else 0.0,
                                  int((np.isnan(x) != np.isnan(y)).sum()))
    return out


def print_comparison(result: dict) -> None:
    print("\nscores.nc, new vs old (last pair):")
    print(f"  {'variable':<40} {'max |diff|':>11} {'max rel':>10} {'NaN differ':>10}")
    for name, (absolute, relative, nans) in result["variables"].items():
        print(f"  {name:<40} {absolute:11.3g} {relative:10.3g} {nans:10d}")
    for key, text in (("mismatched", "shape or dims differ"), ("only_new", "variables only in new"),
                      ("only_old", "variables only in old"), ("attrs_only_new", "attributes only in new"),
                      ("attrs_only_old", "attributes only in old"), ("attrs_differ", "attributes that differ")):
        if result[key]:
            print(f"{text}: {', '.join(result[key])}")


def _revision(tree: Path) -> str:
    result = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return result.stdout.strip() or "not a git tree"


def _load() -> str:
    return "load average %.2f %.2f %.2f (1, 5, 15 min), %d cores" % (*os.getloadavg(), os.cpu_count() or 0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="ensemble store to score")
    parser.add_argument("--truth", required=True)
    parser.add_argument("--baseline", type=Path, help="a checkout of the earlier release (git worktree)")
    parser.add_argument("--new", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--repeat", type=int, default=3, help="pairs of runs (default 3)")
    parser.add_argument("--work", type=Path, help="where the outputs go (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if args.baseline is None:
        print("score_demo: give --baseline DIR, a checkout of the release to compare with, e.g.\n"
              "  git worktree add /tmp/base-3fbf8d8 3fbf8d8\n"
              f"  python bench/score_demo.py {args.store} --truth {args.truth} --baseline /tmp/base-3fbf8d8",
              file=sys.stderr)
        return 2
    for tree in (args.baseline, args.new):
        if not (tree / "workflows" / "cli.py").is_file():
            print(f"score_demo: {tree} is not a checkout of this project (no workflows/cli.py)", file=sys.stderr)
            return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="score-demo-"))
    trees = {"new": args.new.resolve(), "old": args.baseline.resolve()}
    store, truth = str(Path(args.store).resolve()), str(Path(args.truth).resolve())
    print(f"new: {trees['new']} ({_revision(trees['new'])})\nold: {trees['old']} ({_revision(trees['old'])})")
    print(f"python: {sys.executable}\nstore: {store}\nbefore: {_load()}")
    times = {"new": [], "old": []}
    for i in range(args.repeat):
        for side in ("new", "old") if i % 2 == 0 else ("old", "new"):
            seconds = score_once(trees[side], store, truth, work / f"{side}-{i}")
            times[side].append(seconds)
            print(f"  run {i + 1}/{args.repeat} {side}: {seconds:6.2f} s", flush=True)
    print(f"after: {_load()}")
    ratios = [n / o for n, o in zip(times["new"], times["old"])]
    print(f"median wall time: new {statistics.median(times['new']):.2f} s, old {statistics.median(times['old']):.2f} s")
    print(f"new/old: median of paired ratios {statistics.median(ratios):.3f} "
          f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)}); ratio of medians "
          f"{statistics.median(times['new']) / statistics.median(times['old']):.3f}")
    last = args.repeat - 1
    print_comparison(compare_scores(work / f"new-{last}" / "scores.nc", work / f"old-{last}" / "scores.nc"))
    print(f"outputs: {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

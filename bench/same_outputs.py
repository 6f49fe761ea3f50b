"""Behaviour unchanged? Run the same small demo with two checkouts and compare every output value for value.

    git worktree add /tmp/before BASE_COMMIT
    (cd /tmp/before && python -m workflows.cli demo $PWD/bench/same_outputs.yaml --workdir /tmp/out-before)
    python -m workflows.cli demo bench/same_outputs.yaml --workdir /tmp/out-after
    python bench/same_outputs.py /tmp/out-before /tmp/out-after

``same_outputs.yaml`` is the tiny world with two SFNO checkpoints, a VAE, a VAE-only and a mixed experiment,
streaming statistics and keepbits (about 1.5 minutes on 2 cores). Every Zarr store (planet, ensemble,
experiments) and every ``scores.nc`` must be ``xarray.testing.assert_identical`` (values, coordinates,
attributes); every checkpoint's weights must have the same SHA-256; ``card.json`` and ``skill.json`` the
same content apart from the output folder and the training's wall time. Exit 1 at the first difference.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

import xarray as xr


def _comparable(path: Path) -> dict:
    """A card or skill file without what differs between any two runs: the output folder, the wall time."""
    data = json.loads(path.read_text().replace(str(path.resolve().parents[2]), "WORKDIR"))
    data.get("training", {}).pop("seconds", None)
    return data


def compare(a: Path, b: Path) -> list[str]:
    """One line per output found identical in ``a`` and ``b``; an ``AssertionError`` at the first difference."""
    lines = []
    stores = [p for p in sorted(a.rglob("*.zarr")) if not any(q.suffix == ".zarr" for q in p.relative_to(a).parents)]
    for p in stores:
        x, y = (xr.open_zarr(q, decode_timedelta=True).load() for q in (p, b / p.relative_to(a)))
        xr.testing.assert_identical(x, y)
        lines.append(f"identical store {p.relative_to(a)} {dict(x.sizes)}")
    for p in sorted(a.rglob("scores.nc")):
        with xr.open_dataset(p) as x, xr.open_dataset(b / p.relative_to(a)) as y:
            xr.testing.assert_identical(x.load(), y.load())
            lines.append(f"identical scores {p.relative_to(a)} ({len(x.data_vars)} variables)")
    for p in sorted(a.rglob("skill.json")) + sorted(a.rglob("card.json")):
        assert _comparable(p) == _comparable(b / p.relative_to(a)), p
        lines.append(f"same content {p.relative_to(a)}")
    for p in sorted(a.rglob("*.safetensors")):
        digests = [hashlib.sha256(q.read_bytes()).hexdigest() for q in (p, b / p.relative_to(a))]
        assert digests[0] == digests[1], p
        lines.append(f"same sha256 {p.relative_to(a)} {digests[0][:16]}")
    assert lines, f"no outputs under {a}"
    return lines


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    try:
        lines = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    except AssertionError as error:
        print(f"DIFFERENT: {error}")
        sys.exit(1)
    print("\n".join(lines) + f"\nall {len(lines)} outputs identical")

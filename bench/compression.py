"""Bytes per member-step under the store's codecs: float32, zstd alone, and BitRound at ``keepbits: auto``.

    python bench/compression.py --store demo-output/ensemble.zarr           # what a finished run wrote
    python bench/compression.py --analyses demo-output/planet/analysis.zarr --fields demo-output/planet/nature.zarr

``--store`` sums the files of each member variable of an ensemble store and divides by its finished
member-steps (finished members x leads; run whole start dates, e.g. ``--init-times 0:2``). ``--fields`` encodes states of a dataset (e.g. a nature run
at another resolution, where no checkpoints exist) one field per chunk with the store's own codec chain
(``forecast.store``), at the keep-bits ``keepbits: auto`` chooses from ``--analyses``, and prints the same
figures per state (one state of every channel = one member-step). Nothing is left on disk.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np


def store_figures(path: Path) -> dict:
    """Bytes on disk per finished member-step of each member variable of a store, and its keep-bits."""
    from forecast.store import EnsembleStore

    store = EnsembleStore.open(path)
    schema = store.schema
    done = store.done[:] == 1
    if not done.any():
        raise SystemExit(f"{path} has no finished members")
    if schema.store_layout.shard_members > 1 and not all(row.all() or not row.any() for row in done):
        raise SystemExit(f"{path} has start dates with only some members finished: run them to the end first")
    steps = int(done.sum()) * len(schema.lead_hours)
    sizes = {c: sum(f.stat().st_size for f in (path / c).rglob("*") if f.is_file() and f.name != "zarr.json") / steps
             for c in schema.channels}
    grid = schema.grid
    return {"float32": 4 * grid["nlat"] * grid["nlon"] * len(schema.channels), "stored": sum(sizes.values()),
            "per_channel": sizes, "keepbits": schema.layout["keepbits"]}


def encoded_bytes(fields: np.ndarray, channels, keepbits: dict, zstd_level: int = 3) -> float:
    """Bytes per state of ``fields`` ``(time, channel, lat, lon)`` written one field per chunk with the
    store's codecs (BitRound for the channels in ``keepbits``, then zstd)."""
    import zarr

    from forecast.store import StoreLayout, _codecs

    layout = StoreLayout(keepbits=keepbits, zstd_level=zstd_level)
    total = 0
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BitRound is a numcodecs codec outside the v3 spec
        for k, channel in enumerate(channels):
            array = zarr.create_array(f"{tmp}/{channel}", shape=fields[:, k].shape, chunks=(1, *fields.shape[2:]),
                                      dtype="float32", **_codecs(layout, channel))
            array[...] = fields[:, k]
            total += sum(f.stat().st_size for f in Path(tmp, channel).rglob("*") if f.is_file() and f.name != "zarr.json")
    return total / fields.shape[0]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, help="a complete ensemble store")
    parser.add_argument("--analyses", help="analyses that keepbits: auto reads (with --fields)")
    parser.add_argument("--fields", help="dataset whose states are encoded (default: the analyses)")
    parser.add_argument("--states", type=int, default=16, help="states of --fields to encode (default 16)")
    parser.add_argument("--information", type=float, default=0.99)
    args = parser.parse_args(argv)
    if args.store:
        f = store_figures(args.store)
        print(f"{args.store}: {f['stored']:.0f} B per member-step = {100 * f['stored'] / f['float32']:.1f}% of float32 "
              f"({f['float32']} B); keep-bits {f['keepbits'] or 'none'}")
        for channel, size in f["per_channel"].items():
            print(f"  {channel}: {size:.0f} B per member-step")
        return
    from forecast.bitinfo import keepbits_from_source
    from forecast.data import open_source

    analyses = open_source(args.analyses, name="analyses")
    source = open_source(args.fields or args.analyses, name="fields")
    channels = [c for c in analyses.channels if c in source.channels]
    keepbits, record = keepbits_from_source(analyses, channels, analyses.times, args.information)
    times = source.times[np.linspace(0, len(source.times) - 1, min(args.states, len(source.times))).astype(int)]
    fields = source.fields(times, channels)
    float32 = 4 * np.prod(fields.shape[1:])
    grid = f"{fields.shape[2]}x{fields.shape[3]}"
    print(f"{len(channels)} channels on {grid}, {len(times)} states; keep-bits auto "
          f"({100 * args.information:g}% of the real information, from {len(record['analysis_times'])} analyses): {keepbits}")
    for label, bits in (("float32", None), ("zstd alone", {}), ("BitRound auto + zstd", keepbits)):
        size = float32 if bits is None else encoded_bytes(fields, channels, bits)
        print(f"  {label:22s} {size:10.0f} B per member-step  {100 * size / float32:5.1f}% of float32")


if __name__ == "__main__":
    main()

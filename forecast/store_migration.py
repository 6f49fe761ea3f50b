"""Migration of ensemble stores written by earlier releases to this release's layout
(:data:`forecast.store.STORE_VERSION`); ``forecast check --migrate`` runs it."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path

import numpy as np

from forecast.store import (STORE_VERSION, StoreError, StoreSchema, _create_manifest, _create_statistics_parts,
                            check_version, consolidate)


def migrate_store(path) -> list[str]:
    """Convert a store of layout version 1 (releases up to 2026-11-28) to :data:`STORE_VERSION` in place;
    returns what was done, one line each. Run it with no ``forecast run`` writing to the store.

    Values are kept: chunk codecs gain zstd content checksums (chunks already written stay readable and
    are checked once rewritten), the manifest gets one chunk per member, and streaming statistics move to
    per-block parts. Version 1 parts (one per rank and checkpoint) cannot be split into blocks: start
    dates whose statistics were final keep them, the others have their members marked unfinished so a
    rerun recomputes them. Safe to rerun after an interruption; the version is written last.
    """
    import zarr

    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path} is not an ensemble store (no zarr.json)")
    attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    version = attrs.get("store_version", 1)
    if version == STORE_VERSION:
        return [f"{path} already has store layout version {STORE_VERSION}"]
    if version != 1 or "schema" not in attrs:
        check_version(path, attrs)
        raise StoreError(f"{path} is not a complete ensemble store (no schema): it may be half-created")
    schema = StoreSchema.from_json(attrs["schema"])
    notes = []
    rewritten = sum(_add_checksums(meta) for meta in sorted(path.rglob("zarr.json")))
    notes.append(f"zstd content checksums added to {rewritten} array(s)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        group = zarr.open_group(str(path), mode="r+")
    manifest = group.require_group("manifest")
    values = {}
    for name in ("done", "checksum", "statistics_done"):
        if name in manifest:
            try:
                values[name] = manifest[name][...]
            except Exception:  # an undecodable flag array: its members are recomputed
                values[name] = np.zeros(manifest[name].shape, dtype=manifest[name].dtype)
            del manifest[name]
    _create_manifest(group, schema, values)
    notes.append("manifest rewritten with one chunk per member")
    if schema.statistics.get("channels"):
        if "statistics_parts" in group:
            del group["statistics_parts"]
        _create_statistics_parts(group, schema)
        final = values.get("statistics_done", np.zeros(len(schema.init_times)))
        for i, init in enumerate(schema.init_times):
            if final[i] != 1 and values.get("done", np.zeros(1))[i].any():
                group["manifest/done"][i] = 0
                notes.append(f"init {init}: statistics were not final; its members are marked unfinished (rerun "
                             "`forecast run` to recompute them)")
    group.attrs["store_version"] = STORE_VERSION
    consolidate(path)  # readers that use the consolidated copy see the new version
    notes.append(f"store layout version 1 -> {STORE_VERSION}")
    return notes


def _add_checksums(meta: Path) -> bool:
    """Turn on the content checksum of every zstd codec in one array's ``zarr.json``; True if changed."""
    document = json.loads(meta.read_text())
    if document.get("node_type") != "array":
        return False
    changed = False

    def visit(codecs):
        nonlocal changed
        for codec in codecs:
            config = codec.get("configuration", {})
            if codec.get("name") == "zstd" and not config.get("checksum"):
                codec["configuration"] = {**config, "checksum": True}
                changed = True
            for key in ("codecs", "index_codecs"):
                visit(config.get(key, []))

    visit(document.get("codecs", []))
    if changed:
        tmp = meta.with_name(f".zarr.json.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(document, indent=2))
        os.replace(tmp, meta)
    return changed

"""Whether an ensemble store is finished enough to score, from its manifest.

``forecast score`` refuses an unfinished store (exit 3), naming how many members of which start dates are
unfinished; with ``--allow-partial`` it scores the members finished at every start date, and the report
and ``scores.nc`` (attribute ``partial``) say so. Datasets without our manifest (a foreign forecast) are
scored as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from forecast.errors import StoreError


def finished_members(path, allow_partial: bool = False) -> tuple[np.ndarray | None, str]:
    """``(members, note)``: ``members`` is None when every member of every start date is finished (or the
    dataset has no manifest), else the indices finished at every start date (only with ``allow_partial``);
    ``note`` says what was left out. Raises ``StoreError`` for an unfinished store without ``allow_partial``
    and when no member is finished at every start date."""
    from forecast.store import EnsembleStore, StoreVersionError

    path = Path(path)
    try:
        store = EnsembleStore.open(path)
    except StoreVersionError:
        return None, ""  # another release's layout: read as a plain dataset (`forecast check --migrate` converts it)
    except StoreError:
        if _has_schema(path):  # one of ours, damaged (its manifest gone, say): what is finished is unknown
            raise
        return None, ""  # another tool's store or file: nothing says what is finished

    done = np.asarray(store.done[:]) == 1  # (init_time, member)
    if done.all():
        return None, ""
    dates = [str(t)[:13] for t in store.schema.init_times]
    unfinished = ", ".join(f"{dates[i]}: {int((~done[i]).sum())} of {done.shape[1]}" for i in range(len(dates))
                           if not done[i].all())
    if not allow_partial:
        raise StoreError(f"{path} is unfinished (unfinished members per start date: {unfinished}); finish it with "
                         "`forecast run`, or score the finished members with --allow-partial")
    members = np.flatnonzero(done.all(axis=0))
    if len(members) == 0:
        raise StoreError(f"{path}: no member is finished at every start date (unfinished: {unfinished})")
    note = (f"partial store: {len(members)} of {done.shape[1]} members scored (those finished at every start date); "
            f"unfinished members per start date: {unfinished}")
    return members, note


def _has_schema(path: Path) -> bool:
    """Whether the Zarr group at ``path`` carries the ``schema`` attribute ``forecast run`` writes."""
    try:
        return "schema" in json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False


def select_members(forecast, members: np.ndarray):
    """``forecast`` restricted to ``members``; the member plan's control is dropped when it is left out."""
    selected = forecast.isel(member=members)
    plan = json.loads(forecast.attrs.get("member_plan", "{}") or "{}")
    if plan.get("control") and 0 not in members:
        selected.attrs["member_plan"] = json.dumps({**plan, "control": False})
    return selected


# -- finished score output ------------------------------------------------------------------------
SCORED = "complete.json"  # written last by `forecast score`: the whole score output is there


def clear_scored(out_dir) -> None:
    """Remove the marker before scoring into ``out_dir``, so a killed scoring is never taken as complete."""
    (Path(out_dir) / SCORED).unlink(missing_ok=True)


def mark_scored(out_dir, files) -> Path:
    """Write ``out_dir/complete.json`` (the files of the score output, each present) atomically, last."""
    import time

    from forecast.files import write_atomic

    out_dir = Path(out_dir)
    names = sorted(str(Path(f).relative_to(out_dir)) if Path(f).is_relative_to(out_dir) else str(f) for f in files)
    missing = [n for n in names if not (out_dir / n).is_file()]
    if missing:
        raise StoreError(f"{out_dir}: score output incomplete, missing {missing}")
    record = {"files": names, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    return write_atomic(out_dir / SCORED, json.dumps(record, indent=2) + "\n", mode=0o666)  # the umask decides


def is_scored(out_dir) -> bool:
    """Whether ``out_dir`` holds a complete score output: the marker and every file it lists."""
    path = Path(out_dir) / SCORED
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((Path(out_dir) / name).is_file() for name in files)

"""``forecast check STORE``: verify an ensemble store against its manifest and checksums.

A store's manifest marks a member done only after all its values are written, so a run trusts it and
skips those members. A chunk deleted or damaged afterwards breaks that promise; ``check`` finds it by
reading every finished value and comparing it with the checksum recorded when it was written, and
``--repair`` removes shard files that cannot be decoded and marks every member they held unfinished,
so the next ``forecast run`` computes them again. Streaming statistics are checked too: finished
members without a statistics part, parts or final statistics that cannot be decoded, and statistics
never finalised; ``--repair`` resets the blocks concerned and finalises what can be finalised. Parts of
statistics already final (left by a finalisation killed while removing them) are harmless leftovers that
``--repair`` (or the next run) removes.

``--migrate`` converts a store written by an earlier release (:func:`forecast.store_migration.migrate_store`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from forecast.files import leftovers
from forecast.store import EnsembleStore, StoreError
from forecast.store_migration import migrate_store

log = logging.getLogger(__name__)


@dataclass
class CheckResult:
    path: Path
    members: int
    init_times: int
    problems: list = field(default_factory=list)  # one line each, naming the piece
    leftovers: list = field(default_factory=list)  # temporary files of interrupted writes (harmless)
    repaired: list = field(default_factory=list)  # (init time, start, stop) marked unfinished
    removed: list = field(default_factory=list)  # undecodable shard files removed by --repair
    finalised: list = field(default_factory=list)  # start dates whose statistics --repair finalised
    damaged: bool = False  # any problem beyond unfinished members (missing, corrupt, inconsistent pieces)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return (f"{self.path}: ok: {self.members} members x {self.init_times} start date(s) finished, every value "
                    "matches its manifest checksum")
        text = f"{self.path}: {len(self.problems)} problem(s); first: {self.problems[0]}"
        if self.removed:
            text += f"; removed {len(self.removed)} undecodable file(s)"
        if self.repaired:
            text += (f"; marked {sum(b - a for _, a, b in self.repaired)} damaged member(s) unfinished: rerun "
                     "`forecast run` to recompute them")
        if self.finalised:
            text += f"; finalised the statistics of {len(self.finalised)} start date(s)"
        return text


def check_store(path, repair: bool = False) -> CheckResult:
    """Open the store at ``path`` and verify every finished member (a full read of the values); with
    ``repair``, mark members with missing or corrupt values unfinished.

    Raises ``StoreError`` when ``path`` is not an ensemble store; problems found are returned.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"store {path} does not exist")
    store = EnsembleStore.open(path)
    result = CheckResult(path, store.schema.n_members, len(store.schema.init_times))
    problems = store.problems()
    result.problems = [p.message for p in problems]
    result.damaged = any(p.damaged or p.finalise or p.init_index is None for p in problems)
    result.leftovers = sorted(str(p.relative_to(path)) for p in path.rglob("*.partial"))
    result.leftovers += [str(p) for p in leftovers(path)]
    result.leftovers += [str(f.relative_to(path)) for i in _final_dates(store) for f in store.statistics_part_files(i)]
    if result.leftovers:
        log.info("check: %d temporary file(s) of interrupted writes (harmless; rewritten or ignored by a rerun), "
                 "first: %s", len(result.leftovers), result.leftovers[0])
    if repair:
        _repair(store, problems, result)
    return result


def _repair(store: EnsembleStore, problems: list, result: CheckResult) -> None:
    """Remove undecodable files (shards, manifest chunks), reset the members they held (and damaged ones),
    then finalise the statistics of start dates whose parts are all stored."""
    from ensembles.stats import finalise_statistics

    init_times = store.schema.init_times
    for p in problems:  # first every undecodable file: resets read the flags that remain
        for file in p.files:
            Path(file).unlink(missing_ok=True)
            result.removed.append(str(file))
            log.info("check: removed undecodable file %s", file)
    for p in problems:
        if p.damaged and p.members is not None:
            for a, b in store.reset(p.init_index, *p.members):
                _record(result, init_times[p.init_index], a, b)
    for i in sorted({p.init_index for p in problems if p.finalise}):
        store.unfinalise(i)
        if finalise_statistics(store, i):
            result.finalised.append(init_times[i])
            log.info("check: init %s statistics finalised", init_times[i])
        else:  # parts are missing (removed after finalisation, or a migrated store): their blocks are recomputed
            for a, b in store.reset(i, 0, 0):
                _record(result, init_times[i], a, b)
    for i in _final_dates(store):  # parts left by a finalisation killed while removing them
        if store.drop_statistics_parts(i):
            log.info("check: init %s statistics parts of the final statistics removed", init_times[i])


def _final_dates(store: EnsembleStore) -> list[int]:
    """Start dates whose streaming statistics are final (none without statistics)."""
    if not store.schema.statistics.get("channels"):
        return []
    return [i for i in range(len(store.schema.init_times)) if _decodes(lambda: store.statistics_done(i)) is True]


def _decodes(read):
    """``read()``, or None when what it reads cannot be decoded (reported among the problems)."""
    try:
        return read()
    except Exception:  # zarr and its codecs raise many types for a damaged chunk
        return None


def _record(result: CheckResult, init: str, a: int, b: int) -> None:
    """Note members ``a:b`` of ``init`` as reset, counting each member once (pieces of several channels
    or blocks may reset the same members)."""
    seen = {m for i, lo, hi in result.repaired if i == init for m in range(lo, hi)}
    for lo, hi in _spans(sorted(set(range(a, b)) - seen)):
        result.repaired.append((init, lo, hi))
        log.info("check: init %s members %d:%d marked unfinished", init, lo, hi)


def _spans(members: list[int]):
    """Sorted member indices as ``(start, stop)`` runs."""
    runs = []
    for m in members:
        if runs and runs[-1][1] == m:
            runs[-1] = (runs[-1][0], m + 1)
        else:
            runs.append((m, m + 1))
    return runs


def migrate(path) -> list[str]:
    """``forecast check --migrate``: convert a store of an earlier release in place (see
    :func:`forecast.store_migration.migrate_store`); returns what was done."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"store {path} does not exist")
    notes = migrate_store(path)
    for note in notes:
        log.info("migrate: %s", note)
    return notes

"""``forecast check STORE``: verify an ensemble store against its manifest and checksums.

A store's manifest marks a member done only after all its values are written, so a run trusts it and
skips those members. A chunk deleted or damaged afterwards breaks that promise; ``check`` finds it by
reading every finished value and comparing it with the checksum recorded when it was written, and
``--repair`` marks the members concerned unfinished, so the next ``forecast run`` computes them again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from forecast.files import leftovers
from forecast.store import EnsembleStore, StoreError

log = logging.getLogger(__name__)


@dataclass
class CheckResult:
    path: Path
    members: int
    init_times: int
    problems: list = field(default_factory=list)  # one line each, naming the piece
    leftovers: list = field(default_factory=list)  # temporary files of interrupted writes (harmless)
    repaired: list = field(default_factory=list)  # (init time, start, stop) marked unfinished

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return (f"{self.path}: ok: {self.members} members x {self.init_times} start date(s) finished, every value "
                    "matches its manifest checksum")
        text = f"{self.path}: {len(self.problems)} problem(s); first: {self.problems[0]}"
        if self.repaired:
            text += (f"; marked {sum(b - a for _, a, b in self.repaired)} damaged member(s) unfinished: rerun "
                     "`forecast run` to recompute them")
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
    result.leftovers = sorted(str(p.relative_to(path)) for p in path.rglob("*.partial"))
    result.leftovers += [str(p) for p in leftovers(path)]
    if result.leftovers:
        log.info("check: %d temporary file(s) of interrupted writes (harmless; rewritten or ignored by a rerun), "
                 "first: %s", len(result.leftovers), result.leftovers[0])
    if repair:
        for p in problems:
            if p.damaged:
                for a, b in store.reset(p.init_index, *p.members):
                    result.repaired.append((store.schema.init_times[p.init_index], a, b))
                    log.info("check: init %s members %d:%d marked unfinished", store.schema.init_times[p.init_index], a, b)
    return result

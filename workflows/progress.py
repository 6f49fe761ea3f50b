"""Progress of long work (``forecast run``, ``forecast train``): done / total, member-steps per second, ETA.

On a terminal or in a notebook a tqdm bar (``tqdm.auto`` renders a widget in Jupyter); otherwise (Slurm
logs, files, pipes) a log line at most every ``log_every`` seconds and at the end, with the same figures::

    run: members 12/20 (60%), 4.1 member-steps/s, ETA 0:00:24

The engine calls :meth:`Progress.start` once and :meth:`Progress.advance` from its sink thread after
each finished block (it knows nothing of bars or logs: see ``ensembles.engine.EnsembleEngine.run``).
"""

from __future__ import annotations

import datetime
import logging
import sys
import threading
import time

log = logging.getLogger("forecast.progress")


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def format_eta(seconds: float) -> str:
    """``H:MM:SS``, or ``?`` before there is a rate.

    >>> format_eta(3725.4), format_eta(float("inf"))
    ('1:02:05', '?')
    """
    if seconds != seconds or seconds == float("inf"):
        return "?"
    return str(datetime.timedelta(seconds=round(seconds)))


class Progress:
    """Counts ``unit`` items (members x start dates, checkpoints) of ``steps`` steps each.

    Parameters
    ----------
    label : str
        Prefix of the bar and the log lines (``run``, ``train``).
    unit : str
        What is counted.
    bar : bool or None
        Show a tqdm bar; ``None``: when stderr is a terminal or the code runs in a notebook, unless the log
        level is above info.
    log_every : float
        Seconds between log lines when there is no bar (the last line is always written).
    clock : callable
        Monotonic clock (tests pass their own).
    """

    def __init__(self, label: str = "run", unit: str = "members", bar: bool | None = None, log_every: float = 30.0,
                 clock=time.monotonic):
        self.label, self.unit, self.log_every, self.clock = label, unit, log_every, clock
        if bar is None:  # interactive, and not silenced (-q, --log-level warning)
            bar = (sys.stderr.isatty() or _in_notebook()) and log.isEnabledFor(logging.INFO)
        self.bar = bar
        self.total = self.done = self.skipped = 0
        self.steps = 1
        self._lock = threading.Lock()
        self._tqdm = None
        self._began = self._logged = None

    # -- what the engine calls ----------------------------------------------------------------------
    def start(self, total: int, done: int = 0, steps: int = 1) -> None:
        """``total`` items in this share, ``done`` of them finished before (a resumed run)."""
        with self._lock:
            self.total, self.done, self.skipped, self.steps = int(total), int(done), int(done), max(1, int(steps))
            self._began = self._logged = self.clock()
            if self.bar:
                from tqdm.auto import tqdm

                from tqdm.contrib.logging import logging_redirect_tqdm

                self._tqdm = tqdm(total=self.total, initial=self.done, desc=self.label, unit=self.unit[:-1] or "it",
                                  dynamic_ncols=True, file=sys.stderr)
                self._redirect = logging_redirect_tqdm()  # log lines print above the bar, not through it
                self._redirect.__enter__()
        if not self.bar:
            log.info("%s: %d %s to run (%d of %d already done)", self.label, self.total - self.done, self.unit,
                     self.done, self.total)

    def advance(self, items: int = 1) -> None:
        with self._lock:
            self.done += items
            now = self.clock()
            if self._tqdm is not None:
                self._tqdm.update(items)
                self._tqdm.set_postfix_str(f"{self.rate():.3g} {self.unit[:-1] or 'item'}-steps/s", refresh=False)
            elif self.done >= self.total or now - self._logged >= self.log_every:
                self._logged = now
                log.info("%s", self.line())

    def close(self) -> None:
        if self._tqdm is not None:
            self._redirect.__exit__(None, None, None)
            self._tqdm.close()
            self._tqdm = None

    # -- figures ------------------------------------------------------------------------------------
    def rate(self) -> float:
        """Steps per second of the items finished since :meth:`start` (member-steps/s for a run)."""
        elapsed = self.clock() - self._began if self._began is not None else 0.0
        return (self.done - self.skipped) * self.steps / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float:
        rate = self.rate()
        return (self.total - self.done) * self.steps / rate if rate > 0 else float("inf")

    def line(self) -> str:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.label}: {self.unit} {self.done}/{self.total} ({percent:.0f}%), "
                f"{self.rate():.3g} {self.unit[:-1] or 'item'}-steps/s, ETA {format_eta(self.eta())}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

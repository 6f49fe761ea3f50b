"""Clean exits on signals: pre-emption, time limits and Ctrl-C stop a command without losing saved work.

The first SIGTERM, SIGINT or SIGUSR1 raises :class:`Interrupted` in the main thread. The ensemble
engine lets it pass through its writer threads (queued writes are drained; a block is marked done only
after all its values are written), so everything finished so far stays finished and a rerun resumes from
the store's manifest. Further signals are ignored while that happens.

SIGUSR1 is the "time is almost up" signal of the sbatch scripts (``#SBATCH --signal=USR1@180``): inside a
Slurm batch job it also requeues the job (``scontrol requeue``), which then resumes where it stopped.
SIGTERM (``scancel``, or Slurm's own pre-emption, which requeues by itself) and SIGINT only stop.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
from contextlib import contextmanager

log = logging.getLogger(__name__)

EXIT_CODE = 7
REQUEUE_SIGNAL = signal.SIGUSR1
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


class Interrupted(BaseException):
    """A signal stopped the command. A ``BaseException`` (like ``KeyboardInterrupt``), so that no
    ``except Exception`` on the way out swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


@contextmanager
def exit_cleanly_on_signals():
    """Within the block, the first of :data:`SIGNALS` raises :class:`Interrupted`; handlers are restored after."""
    received = []

    def handler(signum, frame):
        if received:
            log.warning("%s ignored: already stopping after %s", signal.Signals(signum).name,
                        signal.Signals(received[0]).name)
            return
        received.append(signum)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def requeue_if_asked(error: Interrupted, environ=None) -> str:
    """Requeue this Slurm batch job if ``error`` came from :data:`REQUEUE_SIGNAL`; returns what was done.

    Every rank of the job calls this; the first request requeues the job, the others find it already
    requeued. Slurm stops the remaining ranks (they have ``KillWait`` seconds to drain their writes).
    """
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID")
    if error.signum != REQUEUE_SIGNAL or not job:
        return "rerun the same command to resume"
    scontrol = shutil.which("scontrol")
    if scontrol is None:
        return f"scontrol not found, Slurm job {job} not requeued; resubmit it to resume"
    result = subprocess.run([scontrol, "requeue", job], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        message = " ".join(result.stderr.split()) or f"exit code {result.returncode}"
        log.warning("scontrol requeue %s: %s", job, message)
        return f"Slurm job {job} not requeued by this rank ({message})"
    return f"Slurm job {job} requeued: it resumes where it stopped"

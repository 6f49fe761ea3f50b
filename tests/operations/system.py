"""What the operations tests need from the machine: root for tmpfs mounts (a full disk, a read-only
folder) and for a local Slurm (``slurm-wlm`` and ``munge``). Where it is missing they skip with the reason,
so ``make test`` passes on a fresh machine; ``.ci/run`` sets ``FORECAST_REQUIRE_SYSTEM_TESTS=1``, which
turns every such skip into a failure, so CI runs them for real."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

REQUIRE_VARIABLE = "FORECAST_REQUIRE_SYSTEM_TESTS"


def required() -> bool:
    """Whether the system tests must run here (CI), so that a missing requirement fails them."""
    return os.environ.get(REQUIRE_VARIABLE, "") not in ("", "0")


def unavailable(reason: str):
    """Skip with ``reason``; fail instead where :data:`REQUIRE_VARIABLE` is set (CI)."""
    if required():
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE} is set: the system tests must run here)", pytrace=False)
    pytest.skip(f"{reason} (system test: needs root, Slurm or mounts; {REQUIRE_VARIABLE}=1 makes this a failure)")


@contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A tmpfs of ``size`` (e.g. ``"300k"``) mounted on ``path`` for the ``with`` block."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        unavailable("mounting a tmpfs needs root")
    options = f"size={size},mode=0750" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        unavailable(f"cannot mount a tmpfs: {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, capture_output=True)


def remount(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)

"""What the operations tests need from the machine: root for tmpfs mounts (a full disk, a read-only
folder) and for a local Slurm. Where it is missing they fail, loudly, unless the developer sets
``FORECAST_SKIP_SYSTEM_TESTS=1`` (CI never does)."""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

SKIP_VARIABLE = "FORECAST_SKIP_SYSTEM_TESTS"


def unavailable(reason: str):
    """Skip if the developer asked for it, else fail with ``reason``."""
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(f"{reason} ({SKIP_VARIABLE}=1)")
    pytest.fail(f"{reason}; set {SKIP_VARIABLE}=1 to skip the tests that need root, Slurm and mounts", pytrace=False)


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

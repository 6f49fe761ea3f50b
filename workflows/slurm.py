"""Submitting the sbatch scripts in ``slurm/`` and asking the queue about them, with argument lists only.

Nothing here goes through a shell: options, config paths and overrides are separate ``argv`` items of
``sbatch``, and the scripts pass them on as ``"$@"``.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from forecast.errors import InputError, SettingError, SystemFailure

log = logging.getLogger(__name__)

REPOSITORY = Path(__file__).resolve().parents[1]
ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
          "SUSPENDED", "STAGE_OUT", "SIGNALING")


class SlurmError(SystemFailure):
    """``sbatch`` or ``squeue`` failed or is missing."""


def scripts_folder(configured: str = "") -> Path:
    folder = Path(configured) if configured else REPOSITORY / "slurm"
    if not (folder / "ensemble.sbatch").is_file():
        raise InputError(f"no sbatch scripts in {folder} (nightly.slurm.scripts)")
    return folder


def check_options(options, where: str) -> list[str]:
    """``options`` as a list of ``--name=value`` items; anything else (a positional, ``--wrap``) is a
    ``SettingError`` naming ``where`` (the key, e.g. ``ensemble`` of ``nightly.slurm``)."""
    options = [str(o) for o in options]
    for option in options:
        if not option.startswith("--") or option.startswith("--wrap"):
            raise SettingError(where, f"holds {option!r}, which is not an sbatch option of the form --name=value "
                                      "(--wrap is refused)")
    return options


def job_environment() -> dict:
    """The submitter's environment plus where the jobs find the code (``FORECAST_HOME``) and the Python
    environment (``FORECAST_VENV``: this process's virtual environment); ``slurm/env.sh`` reads both."""
    env = dict(os.environ)
    env.setdefault("FORECAST_HOME", str(REPOSITORY))
    if sys.prefix != sys.base_prefix:
        env.setdefault("FORECAST_VENV", sys.prefix)
    return env


def _sbatch(args: list, what: str, missing: str, refused: str, **run) -> str:
    """Run ``sbatch ARGS`` and return its standard output; a missing ``sbatch``, no answer in 120 s or a
    refusal is a :class:`SlurmError` (``what: missing`` / ``what: refused: <sbatch's message>``)."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise SlurmError(f"{what}: sbatch not found on PATH ({missing})")
    try:
        result = subprocess.run([sbatch, *args], capture_output=True, text=True, env=job_environment(), timeout=120,
                                **run)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{what}: sbatch did not answer in 120 s (is slurmctld up?)") from None
    if result.returncode != 0:
        raise SlurmError(f"{what}: {refused}: {' '.join(result.stderr.split()) or result.returncode}")
    return result.stdout


def submit(script: Path, arguments, options=(), after: str | None = None, cwd: Path | None = None) -> str:
    """``sbatch --parsable [options] [--dependency=afterok:AFTER] SCRIPT ARGUMENTS...``; returns the job id."""
    args = ["--parsable", *options]
    if after:
        args += [f"--dependency=afterok:{after}", "--kill-on-invalid-dep=yes"]
    args += [str(script), *map(str, arguments)]
    out = _sbatch(args, f"sbatch {script.name}", "nightly.mode is 'slurm'", "failed", cwd=cwd)
    job = out.strip().split(";")[0]
    log.info("slurm: submitted %s as job %s%s", script.name, job, f" (after job {after})" if after else "")
    return job


def check_submission(script_text: str, what: str) -> None:
    """``sbatch --test-only`` of ``script_text`` (given on standard input): Slurm checks the job (partition,
    account, resources) and submits nothing. A refusal or a missing ``sbatch`` is a :class:`SlurmError` naming
    ``what``, before any job is queued (dask-jobqueue would otherwise wait for workers that never come)."""
    _sbatch(["--test-only"], what, "is this a Slurm login node?", "Slurm refuses the job", input=script_text)


def job_state(job: str) -> str | None:
    """The job's state while Slurm still lists it in the queue, else ``None`` (finished or unknown)."""
    squeue = shutil.which("squeue")
    if squeue is None:
        raise SlurmError("squeue not found on PATH (nightly.mode is 'slurm')")
    result = subprocess.run([squeue, "--noheader", f"--jobs={job}", "--format=%T"], capture_output=True, text=True,
                            timeout=60)
    states = result.stdout.split()
    return states[0] if result.returncode == 0 and states else None


def is_active(job: str | None) -> bool:
    return bool(job) and job_state(job) in ACTIVE

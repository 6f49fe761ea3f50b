"""``forecast`` commands as real, separate processes, forked from a warm server so imports are paid once.

Starting ``python -m workflows.cli`` costs 10-20 s here, almost all of it importing torch and
torch-harmonics. The fault and bad-input tests need dozens of processes, so they use a multiprocessing
``forkserver`` that has imported everything once; each command is a fresh child forked from it: its own
pid (a SIGKILL kills only it), its own stdout/stderr files, its own exit code, and ``workflows.cli.main``
as its entry point, as in the installed ``forecast`` script. ``tests/workflows/test_cli.py`` covers the cold
start of a real ``forecast`` process.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

PRELOAD = ["cli_process", "torch", "torch_harmonics", "xarray", "zarr", "workflows.cli", "workflows.recipes",
           "workflows.nightly", "ensembles.engine", "models.sfno", "forecast.verify.scores"]

os.environ.setdefault("OMP_NUM_THREADS", "1")  # single-threaded torch in the server and every command


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def assert_one_line_error(result: Result, code: int, *words: str) -> None:
    """``result`` failed with exit ``code`` and one ``forecast: error:`` line holding every word, no traceback."""
    lines = result.error_lines
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and lines[0].startswith("forecast: error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in result.stderr


class Running:
    """A started command: ``kill()`` (SIGKILL by default), ``wait()`` -> :class:`Result`."""

    def __init__(self, process, out: Path, err: Path):
        self.process, self.out, self.err = process, out, err
        self.began = time.perf_counter()

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Send ``signum``; a process that has already ended (and been reaped) is left alone."""
        try:
            os.kill(self.process.pid, signum)
        except ProcessLookupError:
            pass

    def wait(self, timeout: float = 300) -> Result:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
            raise TimeoutError(f"forecast process {self.pid} still running after {timeout} s:\n{self.err.read_text()[-3000:]}")
        return Result(self.process.exitcode, _read(self.out), _read(self.err), time.perf_counter() - self.began)

    def running(self) -> bool:
        return self.process.is_alive()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""  # a child killed early may not have opened its files


class ForecastProcesses:
    """Start ``forecast ARGS...`` processes; outputs go to numbered files in ``folder``."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0
        multiprocessing.set_forkserver_preload(PRELOAD)
        self.context = multiprocessing.get_context("forkserver")

    def start(self, *args, cwd=None, env: dict | None = None) -> Running:
        self.count += 1
        out, err = self.folder / f"{self.count}.out", self.folder / f"{self.count}.err"
        process = self.context.Process(target=_child, args=([str(a) for a in args], str(cwd or os.getcwd()), env or {},
                                                            str(out), str(err)), daemon=False)
        process.start()
        return Running(process, out, err)

    def run(self, *args, timeout: float = 300, **kwargs) -> Result:
        return self.start(*args, **kwargs).wait(timeout)


def _child(argv: list[str], cwd: str, env: dict, out: str, err: str) -> None:
    """In the forked child: a fresh process state as far as the command can tell, then ``main(argv)``."""
    os.chdir(cwd)
    for key in [k for k in os.environ if k.startswith("SLURM_")]:  # never act on a Slurm job the tests run inside
        del os.environ[key]
    os.environ.update(env)
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_DFL)
    import torch

    torch.set_num_threads(1)
    from workflows.cli import main

    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

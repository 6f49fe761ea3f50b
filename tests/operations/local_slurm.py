"""A one-node Slurm (munged, slurmctld, slurmd on localhost) for the tests, started and stopped by PID.

Needs root and Debian's ``slurm-wlm`` and ``munge`` packages (``.ci/run`` installs them). Everything
lives in private folders: its own munge key and socket, state, spool, logs and ports, so it disturbs
no Slurm or munge already on the machine. ``SLURM_CONF`` in :attr:`LocalSlurm.env` points the client
commands (``sbatch``, ``squeue``, ``scontrol``) at it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# a requeued job waits this long before it starts again (Slurm's default is 120 s): the old run's revoked
# credential has to expire first, or slurmd refuses the new launch ("Job credential revoked") and the job fails
CRED_EXPIRE_S = 10

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo")


class SlurmUnavailable(RuntimeError):
    """The machine cannot run a local Slurm (not root, or the packages are missing)."""


def unavailable_reason() -> str | None:
    """Why this machine cannot run a local Slurm (packages missing, not root), or ``None`` when it can."""
    missing = [name for name in DAEMONS if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"missing {missing}: apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "slurmd needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _half_the_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 // 2
    return 2000


class LocalSlurm:
    """Start with :meth:`start`, stop with :meth:`stop` (also a context manager).

    The node ``localhost`` has ``os.cpu_count()`` CPUs, half the machine's memory and two fake GPUs
    (a GRES without devices), so GPU job scripts run unchanged; the jobs themselves use the CPU.
    """

    def __init__(self, root: str | os.PathLike | None = None, gpus: int = 2):
        if not 0 <= gpus <= 5:
            raise ValueError(f"between 0 and 5 fake GPUs, got {gpus}")
        reason = unavailable_reason()
        if reason:
            raise SlurmUnavailable(reason)
        # munged insists that every folder above its socket is executable by all
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="forecast-slurm-", dir="/tmp"))
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        self.gpus = gpus
        self.processes: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        for key in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF"]:
            del self.env[key]

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> "LocalSlurm":
        """Start munged, slurmctld and slurmd and wait until the node is idle; on failure stop what started."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> "LocalSlurm":
        r = self.root
        for name in ("state", "spool", "log"):
            (r / name).mkdir(exist_ok=True)
        key = r / "munge.key"
        subprocess.run([self._bin("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True)
        os.chmod(key, 0o600)
        self._spawn("munged", [self._bin("munged"), "--foreground", f"--key-file={key}", f"--socket={r / 'munge.socket'}",
                               f"--pid-file={r / 'munged.pid'}", f"--log-file={r / 'log' / 'munged.log'}",
                               f"--seed-file={r / 'munged.seed'}"])
        self._wait(lambda: (r / "munge.socket").exists(), timeout, "munged did not create its socket")
        self._write_config()
        self._spawn("slurmctld", [self._bin("slurmctld"), "-D", "-f", str(self.conf)])
        self._spawn("slurmd", [self._bin("slurmd"), "-D", "-f", str(self.conf), "-N", "localhost"])
        self._wait(self._node_ready, timeout, "the node did not come up")
        return self

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged (by PID), waiting for each."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", f"--user={os.getuid()}"], env=self.env, capture_output=True, timeout=30)
            # wait for job processes to go: slurmd kills them on scancel
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and self.squeue():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- commands -------------------------------------------------------------------------------
    def run(self, *args, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=kwargs.pop("env", self.env), capture_output=True, text=True, check=check,
                              timeout=kwargs.pop("timeout", 60), **kwargs)

    def sbatch(self, *args, cwd=None, env=None) -> str:
        """Submit and return the job id (``sbatch --parsable``)."""
        result = self.run("sbatch", "--parsable", *map(str, args), cwd=cwd, env={**self.env, **(env or {})})
        return result.stdout.strip().split(";")[0]

    def squeue(self) -> list[str]:
        return self.run("squeue", "--noheader", "--format=%i %T").stdout.split("\n")[:-1]

    def job(self, job_id: str) -> dict:
        """``scontrol show job`` as a dict (``JobState``, ``ExitCode``, ``Restarts``, ...); array jobs: the first task."""
        text = self.run("scontrol", "--oneliner", "show", "job", str(job_id)).stdout.splitlines()[0]
        return dict(item.split("=", 1) for item in text.split() if "=" in item)

    def wait(self, job_id: str, timeout: float = 240.0, states=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                                                    "NODE_FAIL", "OUT_OF_MEMORY")) -> dict:
        """Wait for every task of ``job_id`` to reach one of ``states``; returns the last task's record."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.run("scontrol", "--oneliner", "show", "job", str(job_id)).stdout.splitlines()
            records = [dict(item.split("=", 1) for item in line.split() if "=" in item) for line in lines]
            if records and all(r.get("JobState") in states for r in records):
                return records[-1]
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {[r.get('JobState') for r in records]} after {timeout:.0f} s; "
                                   f"slurmctld log tail:\n{self.log_tail()}")
            time.sleep(0.5)

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("slurmctld", "slurmd"):
            path = self.root / "log" / f"{name}.log"
            if path.exists():
                out += [f"== {name}", *path.read_text(errors="replace").splitlines()[-lines:]]
        return "\n".join(out)

    # -- internals ------------------------------------------------------------------------------
    @staticmethod
    def _bin(name: str) -> str:
        return shutil.which(name) or str(Path("/usr/sbin") / name)

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                                start_new_session=True)
        log.close()

    def _wait(self, ready, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join((self.root / "log" / f"{n}.out").read_text(errors="replace")[-1500:] for n in self.processes)
                raise SlurmUnavailable(f"{message} (exited: {dead})\n{logs}")
            time.sleep(0.2)

    def _node_ready(self) -> bool:
        result = self.run("sinfo", "--noheader", "--format=%T", check=False, timeout=10)
        return result.returncode == 0 and result.stdout.strip() in ("idle", "mixed", "allocated")

    def _write_config(self) -> None:
        r = self.root
        cpus = os.cpu_count() or 1
        gres = f" Gres=gpu:{self.gpus}" if self.gpus else ""
        self.conf.write_text(f"""\
ClusterName=forecasttest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={r / 'munge.socket'},cred_expire={CRED_EXPIRE_S}
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobRequeue=1
KillWait=10
MinJobAge=3600
{"GresTypes=gpu" if self.gpus else ""}
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_half_the_memory_mb()}{gres} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
""")
        if self.gpus:
            # a GRES needs a device file per unit; harmless character devices stand in for GPUs
            devices = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"][:self.gpus]
            (r / "gres.conf").write_text("".join(f"NodeName=localhost Name=gpu File={d}\n" for d in devices))

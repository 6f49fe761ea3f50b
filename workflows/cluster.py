"""Dask clusters for scoring: a local cluster sized from the cores, an existing scheduler, or Slurm jobs
through dask-jobqueue's ``SLURMCluster``."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

from forecast.errors import InputError, SystemFailure
from forecast.settings import at_least

log = logging.getLogger(__name__)

LOCAL_WORKER_MEMORY = "1.5GiB"  # per local worker: Dask spills, then pauses the worker, before it grows past this


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of the Slurm jobs of Dask workers (dask-jobqueue ``SLURMCluster``) that score a large store:
    ``jobs`` jobs, each of ``cores`` worker threads sharing ``memory``, split into ``processes`` workers (0: one
    per core). Also the config section ``score.slurm`` (``jobs: 0``, the default: no Slurm workers) and the
    defaults of ``forecast score --slurm-*``: the one home of these defaults.

    >>> SlurmOptions(jobs=2, cores=4).worker_processes
    4
    """

    jobs: int = 0
    cores: int = 8
    processes: int = 0
    memory: str = "32GB"
    walltime: str = "01:00:00"
    queue: str = ""
    account: str = ""
    interface: str = ""
    job_extra: tuple = ()

    def __post_init__(self):
        at_least(self.jobs, 0, "jobs")
        at_least(self.cores, 1, "cores")
        at_least(self.processes, 0, "processes")
        object.__setattr__(self, "job_extra", tuple(self.job_extra))

    @property
    def worker_processes(self) -> int:
        """Dask worker processes per job."""
        return self.processes or self.cores

    def cluster(self):
        """The (not yet scaled) ``SLURMCluster``; constructing it starts only a local scheduler."""
        from dask_jobqueue import SLURMCluster

        if self.jobs < 1:
            raise InputError(f"Slurm jobs must be at least 1 to start Slurm workers, got {self.jobs}")
        kwargs = {"cores": self.cores, "processes": self.worker_processes, "memory": self.memory,
                  "walltime": self.walltime, "job_extra_directives": list(self.job_extra),
                  "scheduler_options": {"dashboard_address": dashboard_address()}}
        if self.queue:
            kwargs["queue"] = self.queue
        if self.account:
            kwargs["account"] = self.account
        if self.interface:
            kwargs["interface"] = self.interface
        return SLURMCluster(**kwargs)


def dashboard_address() -> str | None:
    """``":0"`` (any free port) when the dashboard can run (it needs ``bokeh``), else ``None``."""
    import importlib.util

    return ":0" if importlib.util.find_spec("bokeh") is not None else None


def dashboard_line(cluster) -> str:
    """Where the Dask dashboard is, or why there is none (one log line, never an error)."""
    link = getattr(cluster, "dashboard_link", None) if dashboard_address() else None
    return f"dashboard at {link}" if link else "no dashboard (install bokeh>=3.1 to watch the workers)"


def _quiet():
    for name in ("distributed", "bokeh", "tornado"):  # distributed sets its levels when imported
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def dask_client(workers: int = 1, scheduler: str = "", slurm: SlurmOptions | None = None,
                worker_memory: str = LOCAL_WORKER_MEMORY):
    """A ``distributed.Client``: connected to ``scheduler`` when given; else to ``slurm.jobs`` Slurm jobs of
    workers when ``slurm`` is given; else to a new local cluster of ``workers`` single-threaded worker
    processes of ``worker_memory`` each. Clusters made here are closed on exit."""
    import dask
    from distributed import Client, LocalCluster

    _quiet()
    with dask.config.set({"distributed.worker.daemon": False, "distributed.logging.distributed": "error"}):
        if scheduler:
            client = Client(scheduler)
            log.info("dask: connected to %s", scheduler)
            try:
                yield client
            finally:
                client.close()
            return
        if slurm is not None:
            from workflows.slurm import check_submission

            cluster = slurm.cluster()
            try:
                check_submission(cluster.job_script(), "score --slurm")
            except BaseException:
                cluster.close()
                raise
            cluster.scale(jobs=slurm.jobs)
            log.info("dask: %d Slurm job(s) of %d worker(s) requested", slurm.jobs, slurm.worker_processes)
            log.info("dask: %s", dashboard_line(cluster))
        else:
            cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                                   dashboard_address=dashboard_address(), memory_limit=worker_memory)
            log.info("dask: local cluster with %d worker(s) of %s", max(1, workers), worker_memory)
            log.info("dask: %s", dashboard_line(cluster))
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()


class LostWorkerJobs:
    """Watches a dask-jobqueue cluster while a computation runs: when no worker is connected and none of the
    cluster's Slurm jobs is queued or running any more (cancelled, failed, out of time) for ``grace``
    seconds, the jobs are replaced (scaled to none and back), at most ``replacements`` times, after which it is
    a ``SystemFailure``. The scheduler keeps the graph, so the computation resumes on the new workers.
    Jobs waiting in the queue are waited for. Other clusters are not watched.
    """

    def __init__(self, client, grace: float = 10.0, replacements: int = 2):
        self.client, self.grace, self.replacements = client, grace, replacements
        cluster = getattr(client, "cluster", None)
        from dask_jobqueue.core import JobQueueCluster

        self.cluster = cluster if isinstance(cluster, JobQueueCluster) else None
        self.jobs = len(cluster.worker_spec) if self.cluster is not None else 0
        self.gone_since, self.replaced = None, 0

    def _alive(self) -> bool:
        from workflows.slurm import is_active

        if self.client.scheduler_info().get("workers"):
            return True
        ids = [getattr(job, "job_id", None) for job in list(self.cluster.workers.values())]
        return any(job is None or is_active(job) for job in ids)  # None: still being submitted

    def check(self) -> None:
        """Call every few seconds while waiting; replaces lost jobs or raises ``SystemFailure``."""
        import time

        if self.cluster is None:
            return
        if self._alive():
            self.gone_since = None
            return
        now = time.monotonic()
        self.gone_since = self.gone_since or now
        if now - self.gone_since < self.grace:
            return
        if self.replaced >= self.replacements:
            raise SystemFailure(f"every Dask worker's Slurm job was lost {self.replaced + 1} times (cancelled, failed or "
                                "out of time); scoring stopped (rerun to score)")
        self.replaced += 1
        log.warning("dask: no worker and no Slurm job of them left; submitting %d replacement job(s) (%d of at most %d)",
                    self.jobs, self.replaced, self.replacements)
        self.cluster.scale(jobs=0)
        deadline = now + 60
        while self.cluster.workers and time.monotonic() < deadline:
            time.sleep(0.5)
        self.cluster.scale(jobs=self.jobs)
        self.gone_since = None

"""Dask clusters for scoring: a local cluster sized from the cores, an existing scheduler, or Slurm jobs
through dask-jobqueue's ``SLURMCluster``."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass

from forecast.errors import InputError

log = logging.getLogger(__name__)

LOCAL_WORKER_MEMORY = "1.5GiB"  # per local worker: Dask spills, then pauses the worker, before it grows past this


@dataclass(frozen=True)
class SlurmOptions:
    """Resources of one Slurm job of Dask workers (dask-jobqueue ``SLURMCluster``); ``jobs`` jobs are
    submitted. ``cores`` worker threads share ``memory`` in each job, split into ``processes`` workers."""

    jobs: int = 1
    cores: int = 8
    processes: int = 8
    memory: str = "32GB"
    walltime: str = "01:00:00"
    queue: str = ""
    account: str = ""
    interface: str = ""
    job_extra: tuple = ()

    def cluster(self):
        """The (not yet scaled) ``SLURMCluster``; constructing it starts only a local scheduler."""
        from dask_jobqueue import SLURMCluster

        if self.jobs < 1 or self.cores < 1 or self.processes < 1:
            raise InputError(f"Slurm jobs, cores and processes must be at least 1, got {self}")
        kwargs = {"cores": self.cores, "processes": self.processes, "memory": self.memory, "walltime": self.walltime,
                  "job_extra_directives": list(self.job_extra), "scheduler_options": {"dashboard_address": None}}
        if self.queue:
            kwargs["queue"] = self.queue
        if self.account:
            kwargs["account"] = self.account
        if self.interface:
            kwargs["interface"] = self.interface
        return SLURMCluster(**kwargs)


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
            cluster = slurm.cluster()
            cluster.scale(jobs=slurm.jobs)
            log.info("dask: %d Slurm job(s) of %d worker(s) requested", slurm.jobs, slurm.processes)
        else:
            cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True,
                                   dashboard_address=None, memory_limit=worker_memory)
            log.info("dask: local cluster with %d worker(s) of %s", max(1, workers), worker_memory)
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()

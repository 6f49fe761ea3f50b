"""Dask clusters for scoring: a local cluster sized from the cores, or an existing scheduler."""

from __future__ import annotations

import logging
from contextlib import contextmanager

log = logging.getLogger(__name__)


@contextmanager
def dask_client(workers: int = 1, scheduler: str = ""):
    """A ``distributed.Client``: connected to ``scheduler`` when given, else to a new local cluster of
    ``workers`` single-threaded worker processes (closed on exit)."""
    import dask
    from distributed import Client, LocalCluster

    for name in ("distributed", "bokeh", "tornado"):  # distributed sets its levels when imported
        logging.getLogger(name).setLevel(logging.ERROR)

    with dask.config.set({"distributed.worker.daemon": False, "distributed.logging.distributed": "error"}):
        if scheduler:
            client = Client(scheduler)
            log.info("dask: connected to %s", scheduler)
            try:
                yield client
            finally:
                client.close()
            return
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        log.info("dask: local cluster with %d worker(s)", max(1, workers))
        try:
            yield client
        finally:
            client.close()
            cluster.close()

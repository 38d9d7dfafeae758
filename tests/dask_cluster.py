"""A dask.distributed cluster of two single-threaded worker processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client, LocalCluster


@contextmanager
def two_worker_processes() -> Iterator[Client]:
    """A client of two worker processes, the default client while open."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client

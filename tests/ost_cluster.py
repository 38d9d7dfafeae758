"""Real OST clusters for the ost tests; conftest.py makes the fixtures visible to every module.

One shared cluster serves every test module (started on first use, stopped at exit), so that
its start-up is paid once; tests that break a cluster get a fresh one of their own.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import activezarr
from activezarr.ost import Cluster, ClusterConfig
from activezarr.ost.client.filesystem import OSTFileSystem

__all__ = ["SHARED_STRIPE", "fresh_cluster", "open_active", "ost_cluster", "write_array"]

#: An odd stripe size: stripe boundaries cut elements of every size above one byte.
SHARED_STRIPE = 1001
_shared: Cluster | None = None


@pytest.fixture(scope="session")
def ost_cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    """Four OSTs, stripe size 1001, files striped over all OSTs unless asked otherwise."""
    global _shared
    if _shared is None:
        root = tmp_path_factory.mktemp("ost-shared")
        _shared = Cluster(ClusterConfig(root=root, osts=4, stripe_size=SHARED_STRIPE)).start()
        atexit.register(_shared.stop)
    return _shared


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A three-OST cluster of this test's own, with a slow disk so that runs take a while."""
    config = ClusterConfig(root=tmp_path, osts=3, stripe_size=4096, disk_rate=2.0)
    with Cluster(config) as cluster:
        yield cluster
    # A later cluster may get this one's MDS port: its file system is not this one's.
    OSTFileSystem.clear_instance_cache()


def write_array(url: str, data: np.ndarray, *, storage_options: dict[str, Any] | None = None,
                **create: Any) -> zarr.Array:
    """``data`` written to a new zarr array at ``url`` with ``create`` (chunks, codecs...)."""
    store = activezarr.ActiveStore.from_url(url, storage_options=storage_options)
    array = zarr.create_array(store, shape=data.shape, dtype=data.dtype, **create)
    array[...] = data
    return array


def open_active(url: str, **active: Any) -> activezarr.ActiveReduction:
    """The active wrapper of the array at ``url``, raising instead of falling back."""
    store = activezarr.ActiveStore.from_url(url, active=active)
    return activezarr.ActiveReduction(zarr.open_array(store, mode="r"), fallback=False)

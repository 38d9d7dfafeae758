"""An OST that is down, killed mid-run or hung: a clear error naming it, in bounded time."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
import zarr

import activezarr
from activezarr.errors import StorageUnavailableError
from ost_cluster import write_array

DATA = np.arange(3 * 2**20 // 8, dtype="<f8").reshape(-1, 1024)  # 3 MB: 0.5 s per OST on disk


@pytest.fixture
def dataset(fresh_cluster):
    url = f"{fresh_cluster.url}/faults.zarr"
    write_array(url, DATA, chunks=(64, 1024), compressors=None)
    return url


def _reduction(url: str, fallback: bool) -> activezarr.ActiveReduction:
    store = activezarr.ActiveStore.from_url(url, storage_options={"timeout": 3})
    return activezarr.ActiveReduction(zarr.open_array(store, mode="r"), fallback=fallback)


@pytest.mark.parametrize("fallback", [False, True])
def test_an_ost_that_is_down_is_named(fresh_cluster, dataset, fallback):
    fresh_cluster.kill("ost1")
    start = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"OST 1 \(http://"):
        _reduction(dataset, fallback).mean()
    assert time.monotonic() - start < 10


def test_an_ost_killed_mid_run_is_named(fresh_cluster, dataset):
    red = _reduction(dataset, fallback=False)
    killer = threading.Timer(0.2, fresh_cluster.kill, ["ost2"])
    killer.start()
    start = time.monotonic()
    try:
        with pytest.raises(StorageUnavailableError, match="OST 2"):
            red.mean()
    finally:
        killer.join()
    assert time.monotonic() - start < 10


def test_a_hung_ost_times_out_and_is_named(fresh_cluster, dataset):
    hung = fresh_cluster.processes["ost0"]
    os.kill(hung.pid, signal.SIGSTOP)
    start = time.monotonic()
    try:
        with pytest.raises(StorageUnavailableError, match="OST 0 .* timed out"):
            _reduction(dataset, fallback=False).sum()
    finally:
        os.kill(hung.pid, signal.SIGCONT)
    assert time.monotonic() - start < 10


def test_spread_chunks_fall_back_to_the_client_when_the_oss_is_down(fresh_cluster):
    url = f"{fresh_cluster.url}/oss-down.zarr"
    data = np.random.default_rng(3).normal(size=(256, 256))
    write_array(url, data, chunks=(128, 128), compressors=zarr.codecs.GzipCodec())
    fresh_cluster.kill("oss")
    red = _reduction(url, fallback=True)
    np.testing.assert_allclose(red.mean(), data.mean())
    assert red.last_report.paths == {"client": 4}
    assert red.last_report.fallbacks == 4
    with pytest.raises(StorageUnavailableError, match=r"OSS \(http://"):
        _reduction(url, fallback=False).mean()

"""An OST that is down, killed mid-run or hung: a clear error naming it, in bounded time."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import zarr

import activezarr
from activezarr.errors import FallbackWarning, StorageUnavailableError
from activezarr.ost import Cluster, ClusterConfig
from activezarr.ost.client.backend import OSTBackend
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


@contextlib.contextmanager
def stopped(cluster, name: str, after: float = 0.0) -> Iterator[None]:
    """The cluster's process ``name`` stopped by SIGSTOP ``after`` seconds into the block (a
    hung server: its port still accepts connections), and continued when the block ends."""
    process = cluster.processes[name]
    stopper = threading.Timer(after, os.kill, [process.pid, signal.SIGSTOP])
    stopper.start()
    try:
        yield
    finally:
        stopper.join()
        os.kill(process.pid, signal.SIGCONT)


@pytest.mark.parametrize("fallback", [False, True])
@pytest.mark.parametrize("options, seconds", [({}, 3), ({"read_timeout": 1}, 1)])
def test_an_ost_stopped_during_a_reduction_is_named_within_its_read_timeout(
        fresh_cluster, dataset, fallback, options, seconds):
    """The default bounds a stalled OST under 10 s; the chunks it holds cannot fall back (only
    it has their bytes), and the fallback does not wait for it again."""
    store = activezarr.ActiveStore.from_url(dataset, storage_options=options)
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"), fallback=fallback,
                                     plain_when_cheaper=False)
    start = time.monotonic()
    with stopped(fresh_cluster, "ost0", after=0.2), pytest.raises(StorageUnavailableError) as err:
        red.sum()
    elapsed = time.monotonic() - start
    assert re.search(rf"OST 0 \(http://.*\) is unavailable: timed out: no answer within "
                     rf"{seconds} s, nor from /healthz", str(err.value))
    if fallback:
        assert "not asked again during this reduction" in str(err.value)
    assert elapsed < min(2 * seconds + 3, 10), elapsed


def test_an_ost_the_oss_found_stopped_is_not_asked_again_by_the_fallback(fresh_cluster):
    """Compressed chunks spread over the OSTs go to the OSS, which names the OST it waited
    for; the client's fallback then fails at once instead of waiting for it too."""
    url = f"{fresh_cluster.url}/behind-oss.zarr"
    data = np.random.default_rng(5).normal(size=(256, 256))
    write_array(url, data, chunks=(128, 128), compressors=zarr.codecs.GzipCodec())
    store = activezarr.ActiveStore.from_url(url, read_only=True)
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"), plain_when_cheaper=False)
    start = time.monotonic()
    with stopped(fresh_cluster, "ost1"), pytest.raises(StorageUnavailableError) as err:
        red.mean()
    elapsed = time.monotonic() - start
    assert re.search(r"OST 1 \(http://.*\) is unavailable: timed out: no answer within 3 s, "
                     r"nor from /healthz \(found by OSS \(http://.*\)\) \(not asked again "
                     r"during this reduction\)", str(err.value))
    assert elapsed < 10, elapsed


def test_an_oss_stopped_is_dropped_for_the_reduction_and_its_chunks_fall_back(fresh_cluster,
                                                                             monkeypatch):
    """One chunk a batch, one batch at a time: the first batch waits for the stopped OSS, the
    others go to the client at once."""
    url = f"{fresh_cluster.url}/oss-stopped.zarr"
    data = np.random.default_rng(4).normal(size=(256, 256))
    write_array(url, data, chunks=(64, 128), compressors=zarr.codecs.GzipCodec())
    monkeypatch.setattr(OSTBackend, "max_batch_chunks", 1)
    store = activezarr.ActiveStore.from_url(url, read_only=True)
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"), max_concurrency=1,
                                     plain_when_cheaper=False)
    start = time.monotonic()
    with stopped(fresh_cluster, "oss"), pytest.warns(FallbackWarning, match=r"OSS \(http://"):
        np.testing.assert_allclose(red.mean(), data.mean())
    assert time.monotonic() - start < 10  # each of 8 batches waiting would take 24 s or more
    report = red.last_report
    assert report.paths == {"client": 8} and report.fallbacks == 8
    reasons = " ".join(report.fallback_reasons)
    assert "timed out: no answer within 3 s" in reasons
    assert "not asked again during this reduction" in reasons


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


def test_the_oss_remembers_a_stalled_ost_across_reductions(tmp_path):
    """A stopped OST costs the first reduction its read timeout; for ``stall_memory`` seconds
    the OSS then answers for it at once, in later reductions too (each a client of its own,
    which forgets); once continued and forgotten, it is asked again."""
    config = ClusterConfig(root=tmp_path, osts=3, stripe_size=4096, stall_memory=2.0)
    with Cluster(config) as cluster:
        url = f"{cluster.url}/remembered.zarr"
        data = np.random.default_rng(6).normal(size=(256, 256))
        write_array(url, data, chunks=(128, 128), compressors=zarr.codecs.GzipCodec())

        def mean() -> float:
            store = activezarr.ActiveStore.from_url(url, read_only=True)
            return activezarr.ActiveReduction(zarr.open_array(store, mode="r"),
                                              plain_when_cheaper=False).mean()

        elapsed = []
        with stopped(cluster, "ost1"):
            for _ in range(2):
                start = time.monotonic()
                with pytest.raises(StorageUnavailableError) as err:
                    mean()
                elapsed.append(time.monotonic() - start)
                assert re.search(r"OST 1 \(http://.*\) is unavailable: timed out: no answer "
                                 r"within 3 s, nor from /healthz", str(err.value))
            assert "(not asked again for 2 s)" in str(err.value)  # the OSS's memory
        assert elapsed[1] < elapsed[0], elapsed  # the second did not wait for the OST
        time.sleep(2.5)  # the memory lapses; the OST runs again
        np.testing.assert_allclose(mean(), data.mean())

"""Servers that die or stall during a reduction: their chunks go to the live servers, each
failure costs one timeout at most, and a reduction never outlives its deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

import activezarr
from s3_servers import S3, ActiveServer, start_active_server
from test_s3_backend import BUCKET

SHAPE, CHUNKS = (64 * 128, 1024), (128, 1024)  # 64 chunks of 512 KiB: 8 batches of 8


@pytest.fixture(scope="module")
def many_chunks(moto_s3: S3) -> tuple[str, np.ndarray]:
    """An s3:// array of 64 chunks (zstd: small in S3, 32 MiB decoded)."""
    moto_s3.bucket(BUCKET)
    url = f"s3://{BUCKET}/many.zarr"
    data = (np.arange(np.prod(SHAPE)) % 1000).astype("float32").reshape(SHAPE)
    store = activezarr.ActiveStore.from_url(url, storage_options=moto_s3.storage_options)
    zarr.create_array(store, shape=SHAPE, chunks=CHUNKS, dtype="float32")[...] = data
    return url, data


@contextlib.contextmanager
def two_servers(moto_s3: S3, logs: Path) -> Iterator[tuple[ActiveServer, ActiveServer]]:
    with start_active_server(logs, "--upstream", moto_s3.endpoint) as a, \
            start_active_server(logs, "--upstream", moto_s3.endpoint) as b:
        yield a, b


def test_a_server_killed_mid_run_hands_its_chunks_to_the_live_one(
        moto_s3: S3, many_chunks: tuple[str, np.ndarray], tmp_path: Path) -> None:
    url, data = many_chunks
    with two_servers(moto_s3, tmp_path) as (alive, doomed):
        array = activezarr.open_array(url, storage_options=moto_s3.storage_options, active={
            "server": [alive.url, doomed.url], "concurrency": 2, "deadline": 60})

        def kill_after_the_first_batch(done: int) -> None:
            if doomed.process.poll() is None:
                doomed.process.kill()
                doomed.process.wait()

        red = activezarr.ActiveReduction(array, fallback=False, max_concurrency=2,
                                         progress=kill_after_the_first_batch)
        assert np.isclose(red.mean(), data.mean(dtype=np.float64), rtol=1e-6)
        report = red.last_report
        assert doomed.process.returncode is not None  # it did die during the run
        assert report.fallbacks == 0 and report.paths == {"s3": 64}, report
        # 8 batches; the dead server costs at most one failed attempt per batch in flight.
        assert report.requests <= 8 + 1 + 2 + 2, report


def _served(server: ActiveServer) -> float:
    """Chunk requests ``server`` has answered so far, from its ``/metrics``."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.split()[-1]) for line in lines
               if line.startswith("activezarr_requests_total{"))


def test_every_server_gets_a_share_of_one_batch_and_one_chunk_reductions_take_turns(
        moto_s3: S3, many_chunks: tuple[str, np.ndarray], tmp_path: Path) -> None:
    url, data = many_chunks
    with two_servers(moto_s3, tmp_path) as servers:
        array = activezarr.open_array(url, storage_options=moto_s3.storage_options,
                                      active={"server": [s.url for s in servers]})
        red = activezarr.ActiveReduction(array, fallback=False)
        assert np.isclose(red.sum(), data.sum(dtype=np.float64), rtol=1e-6)
        assert red.last_report.paths == {"s3": 64}
        # 64 chunks of 512 KiB are one batch of the s3 backend: half of it to each server
        assert [_served(s) for s in servers] == [32, 32]
        for i in range(4):  # reductions of one chunk each, as dask's leaves are
            rows = slice(i * 128, (i + 1) * 128)
            assert np.isclose(red[rows].sum(), data[rows].sum(dtype=np.float64), rtol=1e-6)
        assert [_served(s) for s in servers] == [34, 34]


def test_a_stalled_server_costs_one_timeout_not_one_per_batch(
        moto_s3: S3, many_chunks: tuple[str, np.ndarray], tmp_path: Path) -> None:
    url, data = many_chunks
    with two_servers(moto_s3, tmp_path) as (alive, stalled):
        os.kill(stalled.process.pid, signal.SIGSTOP)
        try:
            array = activezarr.open_array(url, storage_options=moto_s3.storage_options, active={
                "server": [stalled.url, alive.url], "timeout": 1, "concurrency": 2,
                "deadline": 60})
            red = activezarr.ActiveReduction(array, fallback=False, max_concurrency=2)
            assert np.isclose(red.sum(), data.sum(dtype=np.float64), rtol=1e-6)
        finally:
            os.kill(stalled.process.pid, signal.SIGCONT)
        report = red.last_report
        assert report.fallbacks == 0 and report.paths == {"s3": 64}
        assert report.requests <= 8 + 1 + 2 + 2, report  # timed out once per request in flight


def test_a_stalled_server_costs_its_read_timeout_not_the_request_timeout(
        moto_s3: S3, many_chunks: tuple[str, np.ndarray], tmp_path: Path) -> None:
    """A stopped server is silent, and so is its /healthz: it is dropped after twice
    ``read_timeout``, not the 120 s a request may take; the reduction does not ask it again."""
    url, data = many_chunks
    with two_servers(moto_s3, tmp_path) as (alive, stalled):
        os.kill(stalled.process.pid, signal.SIGSTOP)
        try:
            array = activezarr.open_array(url, storage_options=moto_s3.storage_options, active={
                "server": [stalled.url, alive.url], "read_timeout": 0.5, "concurrency": 2})
            red = activezarr.ActiveReduction(array, fallback=False, max_concurrency=2)
            start = time.monotonic()
            assert np.isclose(red.sum(), data.sum(dtype=np.float64), rtol=1e-6)
            elapsed = time.monotonic() - start
            alone = activezarr.open_array(url, storage_options=moto_s3.storage_options,
                                          active={"server": stalled.url, "read_timeout": 0.5})
            with pytest.raises(activezarr.StorageUnavailableError,
                               match=r"no active server left \(.*timed out: no answer within "
                                     r"0\.5 s, nor from /healthz"):
                activezarr.ActiveReduction(alone, fallback=False)[:128].sum()
        finally:
            os.kill(stalled.process.pid, signal.SIGCONT)
        assert elapsed < 60, elapsed  # generous: the stall costs about 1 s
        report = red.last_report
        assert report.fallbacks == 0 and report.paths == {"s3": 64}
        assert report.requests <= 8 + 1 + 2 + 2, report  # one stall per request in flight


def test_later_reductions_skip_a_stalled_server_for_its_stall_memory(
        moto_s3: S3, many_chunks: tuple[str, np.ndarray], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every dask task is a reduction of its own: once one found a server stalled, the later
    ones skip it for ``stall_memory`` seconds instead of each waiting for it again."""
    from activezarr.backends import servers
    from activezarr.transport.http import StallMemory

    monkeypatch.setattr(servers, "_stalled", StallMemory())  # this test's servers only
    url, data = many_chunks
    rows = slice(0, 4 * 128)  # four chunks: a small leaf

    def leaf(**options: object) -> activezarr.ActiveReduction:
        array = activezarr.open_array(url, storage_options=moto_s3.storage_options,
                                      active={"read_timeout": 0.5, **options})
        red = activezarr.ActiveReduction(array, fallback=False)
        assert np.isclose(red[rows].sum(), data[rows].sum(dtype=np.float64), rtol=1e-6)
        return red

    with two_servers(moto_s3, tmp_path) as (alive, stalled):
        leaf(server=alive.url)  # the capability document, fetched once per process
        direct = leaf(server=alive.url).last_report.requests  # every request answered
        os.kill(stalled.process.pid, signal.SIGSTOP)
        try:
            finds = leaf(server=[stalled.url, alive.url])  # a share of the batch each
            assert finds.last_report.requests > direct  # asked it, and its /healthz
            for _ in range(3):
                later = leaf(server=[stalled.url, alive.url])
                assert later.last_report.requests == direct  # never asked it
            forgetful = leaf(server=[stalled.url, alive.url], stall_memory=0)
            assert forgetful.last_report.requests > direct
            alone = activezarr.open_array(url, storage_options=moto_s3.storage_options,
                                          active={"server": stalled.url})
            with pytest.raises(activezarr.StorageUnavailableError,
                               match=r"no active server left \(.*nor from /healthz.*\(not "
                                     r"asked again for 30 s\)"):
                activezarr.ActiveReduction(alone, fallback=False)[rows].sum()
        finally:
            os.kill(stalled.process.pid, signal.SIGCONT)


def test_a_reduction_never_outlives_its_deadline(moto_s3: S3,
                                                 many_chunks: tuple[str, np.ndarray],
                                                 tmp_path: Path) -> None:
    url, _ = many_chunks
    with start_active_server(tmp_path, "--upstream", moto_s3.endpoint) as stalled:
        os.kill(stalled.process.pid, signal.SIGSTOP)
        try:
            array = activezarr.open_array(url, storage_options=moto_s3.storage_options, active={
                "server": stalled.url, "timeout": 300, "deadline": 1})
            with pytest.raises(activezarr.DeadlineExceededError, match="deadline of 1 s"):
                activezarr.ActiveReduction(array).mean()
        finally:
            os.kill(stalled.process.pid, signal.SIGCONT)


@pytest.mark.parametrize("option", [{"deadline": 0}, {"deadline": -1}, {"deadline": "soon"}])
def test_a_deadline_must_be_positive(moto_s3: S3, option: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="option 'deadline' of the s3 backend: .*(greater than "
                                         "0|valid number)"):
        activezarr.ActiveStore.from_url(f"s3://{BUCKET}/x.zarr",
                                        storage_options=moto_s3.storage_options,
                                        active={"server": "http://h:1", **option})


def test_a_stalled_object_store_is_the_server_answer_not_a_dead_server(
        netcdf_dir: Path, tmp_path: Path) -> None:
    """The server's upstream timeout is shorter than the client's: a stalled store comes back
    as the server's 503 with its reason, and the server stays in the rotation."""
    kerchunk_hdf = pytest.importorskip("kerchunk.hdf")
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        store_url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        refs = kerchunk_hdf.SingleHdf5ToZarr(str(netcdf_dir / "test1.nc"),
                                             inline_threshold=0).translate()
        local = str(netcdf_dir / "test1.nc")
        refs["refs"] = {k: ["s3://stalled/test1.nc", *v[1:]]
                        if isinstance(v, list) and v[0] == local else v
                        for k, v in refs["refs"].items()}
        with start_active_server(tmp_path, "--upstream", store_url,
                                 "--upstream-timeout", "0.5") as server:
            store = activezarr.ActiveStore.from_url("reference://", storage_options={
                "fo": refs, "remote_protocol": "s3",
                "remote_options": {"endpoint_url": store_url, "key": "k", "secret": "s"}},
                active={"server": server.url, "timeout": 30, "retries": 1, "deadline": 60})
            array = zarr.open_array(store, path="tas", mode="r", zarr_format=2)
            with pytest.raises(activezarr.StorageUnavailableError,
                               match=r"chunk 'tas/0\.0\.0'.*object store unreachable"):
                activezarr.ActiveReduction(array, fallback=False).mean()


def test_an_overloaded_server_is_retried_not_dropped(moto_s3: S3,
                                                     many_chunks: tuple[str, np.ndarray],
                                                     tmp_path: Path) -> None:
    url, data = many_chunks
    with start_active_server(tmp_path, "--upstream", moto_s3.endpoint,
                             "--max-inflight", "1") as busy:  # a second request gets 503
        array = activezarr.open_array(url, storage_options=moto_s3.storage_options, active={
            "server": busy.url, "concurrency": 4, "retries": 20, "backoff": 0.02,
            "deadline": 60})
        red = activezarr.ActiveReduction(array, fallback=False, max_concurrency=4)
        assert np.isclose(red.max(), data.max())
        assert red.last_report.fallbacks == 0 and red.last_report.paths == {"s3": 64}

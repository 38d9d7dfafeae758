"""Every request bounded in memory, CPU and time, whatever it holds (issue 19, items 2 and 3).

Each test runs the real ``activezarr serve`` process: stalled request bodies stay within
``--max-memory``, connections over ``--max-connections`` are refused, a batch that would decode
256 GiB stops at ``--request-timeout`` while the server keeps answering others, a client that
leaves stops its queued work, and ``--max-request-decoded-bytes`` refuses a request at once.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import numcodecs
import numpy as np
import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from activezarr.backends.base import BatchResult
from activezarr.backends.servers import ActiveServers, Refused, ServerOptions, within_limits
from activezarr.servers.active.config import ServerConfig
from activezarr.servers.active.service import ChunkService
from activezarr.servers.metrics import Metrics
from activezarr.servers.workers import in_worker
from s3_servers import ActiveServer, start_active_server
from server_client import error, ok, post, values

MiB = 2**20
#: What the server may hold beyond ``--max-memory`` with 300 connections open: each one's
#: aiohttp buffers (32 KiB of body read ahead and one socket read: some 0.16 MiB a connection)
#: and the allocator's slack. The test prints what it measured (76 MiB in all, bodies
#: included, where the server before issue 19 grew by 1,352 MiB).
CONNECTIONS_OVERHEAD = 64 * MiB
#: Decoded bytes of one bomb: 8 KiB of zstd.
BOMB_DECODED = 256 * MiB


def metric(server: ActiveServer, name: str, **labels: str) -> float:
    """A sample of the server's ``/metrics`` (0 when it has none yet)."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def _address(server: ActiveServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def _file_item(root: Path, name: str, **fields: Any) -> dict[str, Any]:
    return {"interface_type": "file", "url": f"file://{root}/{name}", **fields}


# --- item 2: request bodies count against the memory budget ----------------------------------


@pytest.fixture(scope="module")
def body_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveServer]:
    """64 MiB of memory, 4 MiB bodies, and room for 300 connections."""
    with start_active_server(
            tmp_path_factory.mktemp("bodies"), "--max-memory", str(64 * MiB),
            "--max-chunk-bytes", str(8 * MiB), "--max-body", str(4 * MiB),
            "--body-timeout", "60", "--memory-wait", "60", "--max-connections", "320",
            "--workers", "2") as server:
        yield server


def _stall(sockets: list[socket.socket], body_bytes: int, settle: float) -> None:
    """Sends every socket's body but its last 10 bytes, as far as the server takes them;
    returns once nothing more went out for ``settle`` seconds."""
    left = dict.fromkeys(sockets, body_bytes - 10)
    block = bytes(256 * 1024)
    quiet_since = time.monotonic()
    while left and time.monotonic() - quiet_since < settle:
        for sock in list(left):
            try:
                sent = sock.send(block[:min(len(block), left[sock])])
            except BlockingIOError:
                continue
            quiet_since = time.monotonic()
            left[sock] -= sent
            if not left[sock]:
                del left[sock]
        time.sleep(0.01)


def test_stalled_bodies_stay_within_the_memory_budget(body_server: ActiveServer) -> None:
    """300 connections each send all but 10 bytes of a 4 MB body and stall: the bodies'
    bytes are reserved before they are read, so at most 64 MiB of them are held."""
    process = psutil.Process(body_server.process.pid)
    before = process.memory_info().rss
    body_bytes = 4 * 10**6
    sockets = []
    try:
        for _ in range(300):
            sock = socket.create_connection(_address(body_server), timeout=10)
            sock.sendall(b"POST /v2/sum HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % body_bytes)
            sock.setblocking(False)
            sockets.append(sock)
        peak = before
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.01):
                peak = max(peak, process.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _stall(sockets, body_bytes, settle=3.0)
            time.sleep(2.0)  # what the server buffers has arrived
        finally:
            stop.set()
            sampler.join()
        # Nothing is refused yet: the bodies that fit are held, the others wait for memory.
        assert requests.get(f"{body_server.url}/healthz", timeout=10).status_code == 503
    finally:
        for sock in sockets:
            sock.close()
    grown = peak - before
    print(f"\n300 stalled 4 MB bodies: RSS grew {grown / MiB:.1f} MiB "
          f"(--max-memory 64 MiB + {CONNECTIONS_OVERHEAD // MiB} MiB allowed)")
    assert grown < 64 * MiB + CONNECTIONS_OVERHEAD


def test_connections_over_the_limit_are_refused(tmp_path: Path) -> None:
    with start_active_server(tmp_path, "--max-connections", "4") as server:
        idle = [socket.create_connection(_address(server), timeout=10) for _ in range(4)]
        try:
            time.sleep(0.2)  # the server has accepted them
            with socket.create_connection(_address(server), timeout=10) as extra:
                answer = extra.recv(4096)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503") and b"application/json" in head
            assert "--max-connections" in json.loads(body)["error"]["message"]
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.2)  # closed on the server's side too
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200


# --- item 3: a deadline per request, and decoded bytes per request -----------------------------


@pytest.fixture(scope="module")
def bomb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bomb.zst``: 8 KiB of zstd decoding to 256 MiB; ``small.bin``: four int32."""
    root = tmp_path_factory.mktemp("bombs")
    (root / "bomb.zst").write_bytes(numcodecs.Zstd(level=19).encode(bytes(BOMB_DECODED)))
    (root / "small.bin").write_bytes(np.arange(4, dtype="<i4").tobytes())
    return root


@pytest.fixture(scope="module")
def deadline_server(bomb_root: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveServer]:
    """A 4 s request timeout; memory for one bomb at a time; no limit on decoded bytes per
    request that a 1,024-bomb batch would meet."""
    with start_active_server(
            tmp_path_factory.mktemp("deadline"), "--allow-root", str(bomb_root),
            "--max-memory", str(1024 * MiB), "--max-chunk-bytes", str(8 * MiB),
            "--max-decoded-bytes", str(BOMB_DECODED), "--max-request-decoded-bytes",
            str(2**40), "--request-timeout", "4", "--memory-wait", "120",
            "--workers", "2") as server:
        yield server


def _bombs(root: Path, n: int = 1024) -> list[dict[str, Any]]:
    return [{"op": "sum", **_file_item(root, "bomb.zst", dtype="uint8", shape=[BOMB_DECODED],
                                       codecs=[{"id": "zstd"}])} for _ in range(n)]


def test_a_heavy_batch_stops_at_its_deadline_while_others_are_served(
        deadline_server: ActiveServer, bomb_root: Path) -> None:
    """1,024 items each decoding 8 KiB to 256 MiB (some 360 s of CPU unbounded) stop at the
    4 s deadline; a small request sent every 0.2 s meanwhile is answered within 1 s."""
    batch = {"requests": _bombs(bomb_root)}
    assert len(json.dumps(batch)) < 200_000
    small = _file_item(bomb_root, "small.bin", dtype="int32")
    started = metric(deadline_server, "activezarr_requests_total", op="sum")
    latencies: list[float] = []
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        answer = pool.submit(requests.post, f"{deadline_server.url}/v2/batch", json=batch,
                             timeout=120)
        while not answer.done():
            t = time.monotonic()
            assert values(ok(post(deadline_server, "sum", small, auth=None)))[()] == 6
            latencies.append(time.monotonic() - t)
            time.sleep(0.2)
        elapsed = time.monotonic() - t0
        results = ok(answer.result())
    late = [r for r in results if r.get("status") == 504]
    done = [r for r in results if "status" not in r]
    print(f"\n1,024-bomb batch answered in {elapsed:.1f} s (deadline 4 s): {len(done)} done, "
          f"{len(late)} stopped; {len(latencies)} small requests meanwhile, slowest "
          f"{max(latencies):.2f} s ({sorted(round(x, 2) for x in latencies)})")
    # How many finish by the deadline depends on the machine (19-24 on 2 idle cores); that most
    # are stopped does not: the 1,024 would take minutes.
    assert len(late) + len(done) == 1024 and len(late) > 1024 // 2
    assert "--request-timeout" in late[0]["error"]["message"]
    assert all(values(r)[()] == 0 for r in done)
    assert elapsed < 30  # not the minutes 1,024 bombs would take
    assert latencies and max(latencies) < 1.0
    # Chunks stopped before their decoding began: at most one per worker was under way.
    assert metric(deadline_server, "activezarr_requests_total", op="sum") - started \
        <= len(done) + 2 + len(latencies)


def test_a_client_that_leaves_stops_its_queued_work(deadline_server: ActiveServer,
                                                    bomb_root: Path) -> None:
    """The batch's connection closes while its first bombs decode: the server counts the
    request stopped, and its chunks not yet begun are never decoded."""
    stopped = metric(deadline_server, "activezarr_stopped_requests_total", reason="disconnected")
    chunks_stopped = metric(deadline_server, "activezarr_stopped_chunks_total")
    started = metric(deadline_server, "activezarr_requests_total", op="sum")
    body = json.dumps({"requests": _bombs(bomb_root)}).encode()
    with socket.create_connection(_address(deadline_server), timeout=10) as sock:
        sock.sendall(b"POST /v2/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        for _ in range(200):  # until the first bomb is being decoded
            if metric(deadline_server, "activezarr_requests_total", op="sum") > started:
                break
            time.sleep(0.05)
    for _ in range(200):
        if metric(deadline_server, "activezarr_stopped_requests_total",
                  reason="disconnected") > stopped:
            break
        time.sleep(0.05)
    assert metric(deadline_server, "activezarr_stopped_requests_total",
                  reason="disconnected") == stopped + 1
    assert metric(deadline_server, "activezarr_stopped_chunks_total") - chunks_stopped > 1000
    decoded = metric(deadline_server, "activezarr_requests_total", op="sum") - started
    print(f"\nclient left: {decoded:.0f} of 1,024 bombs decoded, "
          f"{metric(deadline_server, 'activezarr_stopped_chunks_total') - chunks_stopped:.0f} "
          "chunks stopped")
    assert decoded < 24  # not the 1,024 the batch asked for


def test_a_deadline_is_a_504_the_client_does_not_retry(tmp_path: Path) -> None:
    """A chunk whose upstream answers after the deadline: the server answers 504 naming
    ``--request-timeout``; the client sends it once and records that reason for the fallback."""

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            time.sleep(2)
            self.send_response(200)
            self.send_header("Content-Length", "16")
            self.end_headers()
            self.wfile.write(bytes(16))

        def log_message(self, *args: Any) -> None:
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{upstream.server_address[1]}"
    try:
        with start_active_server(tmp_path, "--upstream", base, "--request-timeout",
                                 "0.5") as server:
            body = {"interface_type": "http", "url": f"{base}/x", "dtype": "int32"}
            message = error(post(server, "sum", body, auth=None), 504)
            assert "--request-timeout" in message
            clients = ActiveServers(ServerOptions(server=server.url, retries=3))
            tally = BatchResult([], "active")
            [answer] = asyncio.run(clients.reduce([("sum", body)], {}, tally))
            assert isinstance(answer, Refused) and "--request-timeout" in answer.reason
            assert tally.requests == 2  # the capability document, then the chunk once
    finally:
        upstream.shutdown()
        upstream.server_close()


def test_decoded_bytes_over_the_request_limit_are_refused(bomb_root: Path,
                                                           tmp_path: Path) -> None:
    with start_active_server(tmp_path, "--allow-root", str(bomb_root),
                             "--max-request-decoded-bytes", str(600 * MiB)) as server:
        reads = metric(server, "activezarr_upstream_reads_total")
        response = requests.post(f"{server.url}/v2/batch", json={"requests": _bombs(bomb_root, 3)},
                                 timeout=30)
        message = error(response, 413)
        assert "--max-request-decoded-bytes" in message and str(600 * MiB) in message
        assert metric(server, "activezarr_upstream_reads_total") == reads  # nothing read
        [result] = ok(requests.post(f"{server.url}/v2/batch",
                                    json={"requests": _bombs(bomb_root, 1)}, timeout=60))
        assert values(result)[()] == 0  # one bomb is within the limit


def test_cancelled_work_never_starts_and_running_work_is_waited_for() -> None:
    """The worker pool under a cancelled request: its queued work is dropped (and what it was
    given released); the piece already running finishes (and what it returned is discarded)
    before the request lets go."""
    ran: list[str] = []
    release = threading.Event()
    discarded: list[str] = []
    unstarted: list[str] = []

    def slow() -> str:
        release.wait(10)
        ran.append("slow")
        return "slow result"

    def queued() -> str:
        ran.append("queued")
        return "queued result"

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            running = asyncio.ensure_future(in_worker(
                pool, slow, discard=discarded.append, unstarted=lambda: unstarted.append("slow")))
            waiting = asyncio.ensure_future(in_worker(
                pool, queued, unstarted=lambda: unstarted.append("queued")))
            await asyncio.sleep(0.1)  # slow() occupies the only worker
            running.cancel()
            waiting.cancel()
            await asyncio.sleep(0.1)
            assert not running.done()  # waits for slow() to finish
            release.set()
            for task in (running, waiting):
                with pytest.raises(asyncio.CancelledError):
                    await task

    asyncio.run(main())
    assert ran == ["slow"] and discarded == ["slow result"] and unstarted == ["queued"]


def test_the_client_splits_batches_by_the_bytes_a_request_may_decode() -> None:
    items = [{"op": "sum", "dtype": "float64", "shape": [1024, 128]} for _ in range(10)]
    groups = within_limits(items, max_items=1024, max_body=2**20, max_decoded=3 * MiB)
    assert [len(g) for g in groups] == [3, 3, 3, 1]  # 1 MiB each
    assert [len(g) for g in within_limits(items, 1024, 2**20)] == [10]  # not published


def test_a_batch_serves_at_most_its_lanes_of_reads_at_once(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """``upstream_reads + 2 x workers`` reads of one batch at once (here 2 + 2 x 1), each
    answered right, however many chunks the batch holds."""
    chunk = np.arange(16, dtype="<f8")
    items = []
    for i in range(30):
        (tmp_path / f"c{i}").write_bytes((chunk + i).tobytes())
        items.append({"op": "sum", "interface_type": "file", "url": str(tmp_path / f"c{i}"),
                      "dtype": "float64", "shape": [16]})
    config = ServerConfig(roots=(str(tmp_path),), workers=1, upstream_reads=2)
    at_once = [0, 0]  # now, most

    async def main() -> list[dict[str, Any]]:
        async with aiohttp.ClientSession() as session:
            with ThreadPoolExecutor(config.workers) as pool:
                service = ChunkService(config, session, pool, Metrics())
                serve_read = service._serve_read

                async def counted(*args: Any) -> None:
                    at_once[0] += 1
                    at_once[1] = max(at_once)
                    try:
                        await serve_read(*args)
                    finally:
                        at_once[0] -= 1

                monkeypatch.setattr(service, "_serve_read", counted)
                async with service.budget.reservation() as held:
                    deadline = asyncio.get_running_loop().time() + 60
                    return await service.run_batch(items, None, held, deadline)

    results = asyncio.run(main())
    assert at_once[1] == 4
    assert [values(r)[()] for r in results] == [(chunk + i).sum() for i in range(30)]

"""One set of retry rules for every client (activezarr.transport.http), shown on real servers
on loopback through both clients that use it: the active servers' pool and the ost cluster's
client. Tried again: a connection refused or reset, a 502 or 503 (after its Retry-After);
not: a 4xx, a 504; attempts and the time they span are bounded."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from tenacity import RetryCallState

from activezarr.backends.base import BatchResult
from activezarr.backends.servers import ActiveServers, ServerOptions
from activezarr.errors import StorageUnavailableError
from activezarr.ost.wire.transport import ClusterClient, OSTUnavailableError
from activezarr.servers.processes import listening_socket, port_of
from activezarr.transport.http import Retries, ServerUnavailableError, remember_unavailable

#: A step of a server's script: a status with its Retry-After (None: no header), "reset" or
#: "slow" (a 200 after 1.5 s).
Step = tuple[int, float | None] | str


@dataclass
class Scripted:
    """A server on loopback answering ``POST /NAME`` as ``scripts[NAME]`` says, one step a
    request, then 200 ``done``; it notes when each request arrived."""

    url: str
    scripts: dict[str, list[Step]] = field(default_factory=dict)
    arrivals: dict[str, list[float]] = field(default_factory=dict)

    async def answer(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.arrivals.setdefault(name, []).append(time.monotonic())
        script = self.scripts.get(name, [])
        step = script.pop(0) if script else (200, None)
        if step == "reset":
            assert request.transport is not None
            request.transport.abort()  # the connection reset, no answer
            return web.Response()
        if step == "slow":  # busy past the client's read timeout, its /healthz answering
            await asyncio.sleep(1.5)
            step = (200, None)
        status, retry_after = step
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        body = b"done" if status == 200 else b'{"error": {"message": "scripted"}}'
        return web.Response(status=status, body=body, headers=headers,
                            content_type="application/json")


@pytest.fixture(scope="module")
def scripted() -> Iterator[Scripted]:
    loop = asyncio.new_event_loop()
    sock = listening_socket()
    server = Scripted(f"http://127.0.0.1:{port_of(sock)}")
    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/{name}", server.answer)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield server
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


@pytest.fixture
def closed_port() -> str:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


RULES = Retries(retries=3, within=20.0, backoff=0.01, backoff_cap=0.05)


async def _pool(server: str, path: str, rules: Retries) -> bytes:
    servers = ActiveServers(ServerOptions(server=server, retries=rules.retries,
                                          retry_within=rules.within, backoff=rules.backoff,
                                          backoff_cap=rules.backoff_cap, read_timeout=0.5,
                                          concurrency=1))
    return await servers.call("POST", path, BatchResult([], "s3"), body={})


async def _cluster(server: str, path: str, rules: Retries) -> bytes:
    client = ClusterClient(server, token="t", read_timeout=0.5, retries=rules)
    answer = await client.request("POST", server + path, json_body={})
    assert answer is not None
    return answer


#: Both clients, as (name, send): each answers the body of a 200 or raises its own errors.
CLIENTS: list[tuple[str, Callable[[str, str, Retries], Awaitable[bytes]]]] = [
    ("pool", _pool), ("cluster", _cluster)]
clients = pytest.mark.parametrize("send", [c for _, c in CLIENTS], ids=[n for n, _ in CLIENTS])


def _run(send: Callable[[str, str, Retries], Awaitable[bytes]], server: str, path: str,
         rules: Retries = RULES) -> Any:
    async def main() -> bytes:
        remember_unavailable()  # as a reduction does
        return await send(server, path, rules)

    return asyncio.run(main())


def _path(scripted: Scripted, request: pytest.FixtureRequest, steps: list[Step]) -> str:
    name = request.node.name.replace("[", "-").replace("]", "")
    scripted.scripts[name] = list(steps)
    return f"/{name}"


@clients
def test_a_503_is_tried_again_after_its_retry_after(scripted, request, send) -> None:
    path = _path(scripted, request, [(503, 0.3), (503, 0.3)])
    assert _run(send, scripted.url, path) == b"done"
    arrived = scripted.arrivals[path[1:]]
    assert len(arrived) == 3
    assert all(later - earlier >= 0.29 for earlier, later in zip(arrived, arrived[1:]))


@clients
def test_a_502_without_retry_after_is_tried_again_after_a_backoff(scripted, request,
                                                                  send) -> None:
    path = _path(scripted, request, [(502, None)])
    assert _run(send, scripted.url, path) == b"done"
    assert len(scripted.arrivals[path[1:]]) == 2


@clients
def test_a_connection_reset_is_tried_again(scripted, request, send) -> None:
    path = _path(scripted, request, ["reset", "reset"])
    assert _run(send, scripted.url, path) == b"done"
    assert len(scripted.arrivals[path[1:]]) == 3


@clients
def test_a_server_busy_past_its_read_timeout_is_waited_for(scripted, request, send) -> None:
    """Its /healthz answers, though the one connection the pool may open is busy."""
    path = _path(scripted, request, ["slow"])
    assert _run(send, scripted.url, path) == b"done"
    assert len(scripted.arrivals[path[1:]]) == 1


@clients
@pytest.mark.parametrize("status", [400, 404, 504])
def test_a_4xx_or_a_504_is_the_final_answer(scripted, request, send, status) -> None:
    """A 504 is the server's deadline passed: the same work would meet it again."""
    path = _path(scripted, request, [(status, None)] * 2)
    with pytest.raises(Exception, match="scripted"):  # the pool's refusal, the cluster's errors
        _run(send, scripted.url, path)
    assert len(scripted.arrivals[path[1:]]) == 1


@clients
def test_the_attempts_are_bounded(scripted, request, send) -> None:
    path = _path(scripted, request, [(503, 0)] * 10)
    with pytest.raises(StorageUnavailableError, match="scripted"):
        _run(send, scripted.url, path)
    assert len(scripted.arrivals[path[1:]]) == RULES.retries + 1


@clients
def test_a_retry_after_past_retry_within_ends_the_retries_at_once(scripted, request,
                                                                  send) -> None:
    path = _path(scripted, request, [(503, 600)] * 2)
    start = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="scripted"):
        _run(send, scripted.url, path, Retries(retries=3, within=5.0))
    assert time.monotonic() - start < 60  # not the 600 s the server asked for
    assert len(scripted.arrivals[path[1:]]) == 1


def test_a_closed_port_is_tried_again_then_named_and_remembered(closed_port: str) -> None:
    """The pool: every attempt counted, then no server left; the cluster's client: the
    server named, and not asked again in the same reduction."""
    tally = BatchResult([], "s3")

    async def pool() -> None:
        servers = ActiveServers(ServerOptions(server=closed_port, retries=2, backoff=0.01))
        await servers.call("GET", "/x", tally)

    with pytest.raises(StorageUnavailableError,
                       match=rf"no active server left \({closed_port}: ClientConnectorError"):
        asyncio.run(pool())
    assert tally.requests == 3

    async def cluster() -> list[str]:
        remember_unavailable()
        client = ClusterClient(closed_port, token="t", retries=Retries(2, backoff=0.01))
        messages = []
        for _ in range(2):
            with pytest.raises(OSTUnavailableError) as raised:
                await client.request("GET", closed_port + "/x")
            messages.append(str(raised.value))
        return messages

    first, second = asyncio.run(cluster())
    assert "ClientConnectorError" in first and "not asked again" not in first
    assert second.endswith("(not asked again during this reduction)")


def test_outside_a_reduction_nothing_is_remembered(closed_port: str) -> None:
    async def twice() -> list[bool]:
        client = ClusterClient(closed_port, token="t", retries=Retries(0))
        known = []
        for _ in range(2):
            with pytest.raises(OSTUnavailableError) as raised:
                await client.request("GET", closed_port + "/x")
            assert isinstance(raised.value.__cause__, ServerUnavailableError)
            known.append(raised.value.__cause__.known)
        return known

    assert asyncio.run(twice()) == [False, False]


@pytest.mark.parametrize("bounds, message", [
    ({"retries": -1}, "retries must be 0 or more, got -1"),
    ({"within": 0.0}, "retry_within must be more than 0 seconds, got 0.0"),
    ({"backoff_cap": -1.0}, "backoff_cap must be 0 or more, got -1.0")])
def test_retry_bounds_are_checked(bounds: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Retries(**bounds)


def test_the_backoff_is_capped_and_jittered() -> None:
    rules = Retries(backoff=1, backoff_cap=3)
    state = RetryCallState(None, None, (), {})
    for attempt in range(1, 10):
        state.attempt_number = attempt
        assert all(0 <= rules.wait(state) <= min(3, 2 ** (attempt - 1)) for _ in range(20))

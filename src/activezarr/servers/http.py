"""The HTTP face every server shares: the error middleware, ``/healthz``, ``/metrics``, the
capability document and CBOR responses. Each server passes only what differs."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import cbor2
from aiohttp import log as aiohttp_log
from aiohttp import web

from ..protocol import HEALTH_PATH, SCHEMA_PATH, error_body
from .errors import Overloaded, UnknownOperation, json_response
from .metrics import CONTENT_TYPE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Bytes of a request body aiohttp reads ahead of the handler (twice this, and one socket read,
#: before it stops reading): what a connection whose body waits for memory holds. aiohttp's
#: default (64 KiB) cost some 0.7 MiB per stalled connection, this some 0.16 MiB.
_READ_AHEAD = 16 * 1024
#: The status an exception answers with; the server counts and logs it there as it likes.
ErrorStatus = Callable[[web.Request, Exception], int]


def error_middleware(status: ErrorStatus, http_errors_as_json: bool = True) -> Any:
    """Every error becomes PROTOCOL.md's JSON body with the status ``status`` gives it;
    aiohttp's own HTTP errors too, unless ``http_errors_as_json`` is false (they pass as
    aiohttp writes them)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            if isinstance(exc, web.HTTPException) and not http_errors_as_json:
                raise
            return json_response(error_body(exc), status=status(request, exc))

    return middleware


def create_server_app(*, exposition: Callable[[web.Application], bytes],
                      on_error: ErrorStatus, client_max_size: int,
                      saturated: Callable[[web.Application], bool] | None = None,
                      document: Mapping[str, Any] | None = None,
                      http_errors_as_json: bool = True) -> web.Application:
    """An application with the error middleware, ``/healthz`` (503 while ``saturated``),
    ``/metrics`` (Prometheus text from ``exposition``) and, given a ``document``, the
    capability document; the server adds its own routes."""
    app = web.Application(client_max_size=client_max_size,
                          middlewares=[error_middleware(on_error, http_errors_as_json)])

    async def healthz(request: web.Request) -> web.Response:
        """200 when ready for work; 503 while saturated."""
        if saturated is not None and saturated(request.app):
            return json_response({"status": "saturated"}, status=503)
        return json_response({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=exposition(request.app), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get(HEALTH_PATH, healthz)
    app.router.add_get("/metrics", metrics)
    if document is not None:
        add_document(app, document)
    return app


def add_document(app: web.Application, document: Mapping[str, Any]) -> None:
    """Serve ``document`` as the capability document: what a client may send to this server."""
    body = dict(document)

    async def schema(request: web.Request) -> web.Response:
        return json_response(body)

    app.router.add_get(SCHEMA_PATH, schema)


def operation(request: web.Request, ops: Sequence[str]) -> str:
    """The ``{op}`` of ``POST /v2/{op}``, one of ``ops``; others are a 404, as PROTOCOL.md says."""
    op = request.match_info["op"]
    if op not in ops:
        raise UnknownOperation(f"unknown operation {op!r}; operations: {', '.join(ops)}")
    return op


def cbor_response(payload: Any, count: Callable[[int], object]) -> web.Response:
    """``payload`` as CBOR; ``count`` is told the body's size (the bytes a server returns)."""
    body = cbor2.dumps(payload)
    count(len(body))
    return web.Response(body=body, content_type="application/cbor")


def _refusal(limit: int) -> bytes:
    """The whole answer to a connection over the limit: 503, PROTOCOL.md's JSON error."""
    body = json_response(error_body(Overloaded(
        f"{limit} connections open, the server's --max-connections; retry later")), 503).body
    assert isinstance(body, bytes)
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"Retry-After: 1\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, counted by its :class:`ConnectionLimit`; a
    connection over the limit is answered 503 and closed before anything is read."""

    def __init__(self, gate: ConnectionLimit) -> None:
        self.gate = gate
        self.inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.gate.open >= self.gate.limit:
            transport.write(self.gate.refusal)
            transport.close()
            return
        self.gate.open += 1
        self.inner = self.gate.protocols()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.gate.open -= 1
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class ConnectionLimit:
    """A protocol factory that lets at most ``limit`` connections be open at once: what each
    holds (its buffers, a request's headers and first body bytes) is then bounded in all.
    aiohttp's server has no such limit of its own."""

    def __init__(self, protocols: Callable[[], asyncio.Protocol], limit: int) -> None:
        self.protocols = protocols
        self.limit = limit
        self.open = 0
        self.refusal = _refusal(limit)

    def __call__(self) -> asyncio.Protocol:
        return _Counted(self)


def run(app: web.Application, *, max_connections: int, shutdown_timeout: float,
        host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None,
        ssl_context: ssl.SSLContext | None = None, access_log: bool = False,
        listening: Callable[[], object] = lambda: None) -> None:
    """Serve ``app`` on ``host:port`` (or the listening ``sock``) until SIGINT or SIGTERM, at
    most ``max_connections`` open at once; ``listening`` is called once it listens. A handler
    whose client disconnects is cancelled (aiohttp's ``handler_cancellation``), and so is the
    work it was waiting for. A line per request is logged (aiohttp's access log) only given
    ``access_log``: the output is for people."""
    asyncio.run(_serve(app, max_connections, shutdown_timeout,
                       {"sock": sock} if sock is not None else {"host": host, "port": port},
                       ssl_context, access_log, listening))


async def _serve(app: web.Application, max_connections: int, shutdown_timeout: float,
                 where: Mapping[str, Any], ssl_context: ssl.SSLContext | None,
                 access_log: bool, listening: Callable[[], object]) -> None:
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=shutdown_timeout,
                           read_bufsize=_READ_AHEAD,
                           access_log=aiohttp_log.access_logger if access_log else None)
    await runner.setup()
    try:
        assert runner.server is not None  # set up above
        loop = asyncio.get_running_loop()
        server = await loop.create_server(ConnectionLimit(runner.server, max_connections),
                                          ssl=ssl_context, **where)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        listening()
        await stop.wait()
        server.close()
    finally:
        await runner.cleanup()

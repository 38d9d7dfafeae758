"""The active server's application: its routes, document and resources' lifecycle (the rest is
:mod:`activezarr.servers.http`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from aiohttp import web

from ...chunk.codecs import ALLOWED_CODECS
from ...protocol import DTYPES, EXTENSIONS, OPS, BatchRequest, ChunkRequest, parse
from ..budget import Reservation
from ..errors import RequestTimeout, TooLarge
from ..http import cbor_response, create_server_app, operation
from ..metrics import Metrics
from .config import ServerConfig
from .readers import Credentials
from .service import ChunkService

CONFIG = web.AppKey("config", ServerConfig)
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", ChunkService)


def _auth(request: web.Request) -> Credentials | None:
    return Credentials.from_header(request.headers.get("Authorization"))


def _cbor(request: web.Request, payload: Any) -> web.Response:
    return cbor_response(payload, request.app[METRICS].bytes_returned.inc)


async def _body(request: web.Request, held: Reservation) -> bytes:
    """The whole body, read before the request takes a slot. Its bytes are reserved in
    ``held`` (the memory budget) before they are read: bodies in flight count like any memory
    the server holds, and a slow client holds no more than its body's bytes."""
    config = request.app[CONFIG]
    length = request.content_length
    if length is not None and length > config.max_body:
        raise TooLarge(f"the body of {length} bytes is over the server's --max-body "
                       f"{config.max_body}")
    # Twice: aiohttp gathers the body in a buffer, then copies it out whole.
    await held.grow(2 * (config.max_body if length is None else length))
    timeout = config.body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout} s") from None
    except ConnectionError:  # the client went away: nobody to answer, and no bug
        raise RequestTimeout("the client closed the connection before sending its body") \
            from None


def _deadline(request: web.Request) -> float:
    """When the request's work stops, on the loop's clock: ``request_timeout`` from now."""
    return asyncio.get_running_loop().time() + request.app[CONFIG].request_timeout


@contextlib.asynccontextmanager
async def _by(request: web.Request, deadline: float) -> AsyncIterator[None]:
    """Stops the work inside at ``deadline``: a 504 naming ``--request-timeout``."""
    service = request.app[SERVICE]
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise
        service.metrics.stopped_requests.labels("deadline").inc()
        raise service.deadline_exceeded() from None


@contextlib.contextmanager
def _counted_if_left(request: web.Request) -> Iterator[None]:
    """Counts a handler cancelled because its client disconnected (or the server stops)."""
    try:
        yield
    except asyncio.CancelledError:
        request.app[METRICS].stopped_requests.labels("disconnected").inc()
        raise


async def reduce_chunk(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    op = operation(request, service.operations)
    with _counted_if_left(request):
        async with _by(request, _deadline(request)), service.budget.reservation() as held:
            body = await _body(request, held)
            with service.slot():
                chunk = parse(ChunkRequest, body, op=op)
                return _cbor(request, await service.run(op, chunk, _auth(request)))


async def reduce_batch(request: web.Request) -> web.Response:
    """Every item not done by the deadline answers its own 504; the others keep theirs."""
    service = request.app[SERVICE]
    deadline = _deadline(request)
    with _counted_if_left(request):
        async with service.budget.reservation() as held:
            async with _by(request, deadline):
                body = await _body(request, held)
            with service.slot():
                batch = parse(BatchRequest, body)
                async with service.budget.reservation() as results:
                    return _cbor(request, await service.run_batch(
                        batch.requests, _auth(request), results, deadline, batch.combine,
                        batch.lean, batch.absent))


def _document(config: ServerConfig) -> dict[str, Any]:
    """The capability document: what a client may send to this server."""
    interfaces = ["s3", "http", "https"] + (["file"] if config.roots else [])
    return {
        "name": "activezarr", "api": "v2", "operations": [*OPS, *config.reductions],
        "dtypes": list(DTYPES),
        "compression": ["blosc2", "gzip", "zlib"], "filters": ["shuffle"],
        "codecs": sorted(ALLOWED_CODECS), "interface_types": interfaces,
        "limits": config.limits(), "extensions": list(EXTENSIONS),
    }


def _resources(config: ServerConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=config.max_inflight)
        executor = ThreadPoolExecutor(config.workers, thread_name_prefix="activezarr-reduce")
        timeout = aiohttp.ClientTimeout(total=config.upstream_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            app[SERVICE] = ChunkService(config, session, executor, app[METRICS])
            try:
                yield
            finally:
                executor.shutdown(wait=True, cancel_futures=True)

    return lifecycle


def create_app(config: ServerConfig) -> web.Application:
    """The active server for ``config``."""
    app = create_server_app(
        exposition=lambda app: app[METRICS].exposition(),
        on_error=lambda request, exc: request.app[SERVICE].record_error(exc),
        # saturated: every slot taken, or memory awaited
        saturated=lambda app: app[SERVICE].saturated,
        document=_document(config), client_max_size=config.max_body)
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_resources(config))
    app.router.add_post("/v2/batch", reduce_batch)
    app.router.add_post("/v2/batch/", reduce_batch)
    app.router.add_post("/v2/{op}", reduce_chunk)
    app.router.add_post("/v2/{op}/", reduce_chunk)
    return app

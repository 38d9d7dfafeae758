"""The aiohttp application: routes, the error middleware, and the resources' lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import cbor2
from aiohttp import web

from ...chunk.codecs import ALLOWED_CODECS
from ...protocol import (
    DTYPES,
    EXTENSIONS,
    HEALTH_PATH,
    OPS,
    SCHEMA_PATH,
    BatchRequest,
    ChunkRequest,
    error_body,
    parse,
)
from ..errors import RequestTimeout, UnknownOperation, json_response
from ..metrics import CONTENT_TYPE, Metrics
from .config import ServerConfig
from .readers import Credentials
from .service import ChunkService

CONFIG = web.AppKey("config", ServerConfig)
METRICS = web.AppKey("metrics", Metrics)
SERVICE = web.AppKey("service", ChunkService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes PROTOCOL.md's JSON body with the status its type knows."""
    try:
        return await handler(request)
    except Exception as exc:
        status = request.app[SERVICE].record_error(exc)
        return json_response(error_body(exc), status=status)


def _auth(request: web.Request) -> Credentials | None:
    return Credentials.from_header(request.headers.get("Authorization"))


def _cbor(request: web.Request, payload: Any) -> web.Response:
    body = cbor2.dumps(payload)
    request.app[METRICS].bytes_returned.inc(len(body))
    return web.Response(body=body, content_type="application/cbor")


async def _body(request: web.Request) -> bytes:
    """The whole body, read before the request takes a slot: a slow client holds nothing."""
    timeout = request.app[CONFIG].body_timeout
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout} s") from None
    except ConnectionError:  # the client went away: nobody to answer, and no bug
        raise RequestTimeout("the client closed the connection before sending its body") \
            from None


async def reduce_chunk(request: web.Request) -> web.Response:
    op = request.match_info["op"]
    if op not in OPS:
        raise UnknownOperation(f"unknown operation {op!r}; operations: {', '.join(OPS)}")
    service = request.app[SERVICE]
    body = await _body(request)
    with service.slot():
        chunk = parse(ChunkRequest, body)
        return _cbor(request, await service.run(op, chunk, _auth(request)))


async def reduce_batch(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = await _body(request)
    with service.slot():
        batch = parse(BatchRequest, body)
        async with service.budget.reservation() as results:
            return _cbor(request, await service.run_batch(
                batch.requests, _auth(request), results, batch.combine, batch.lean,
                batch.absent))


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].exposition(),
                        headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    """200 when ready for work; 503 while saturated (every slot taken, or memory awaited)."""
    if request.app[SERVICE].saturated:
        return json_response({"status": "saturated"}, status=503)
    return json_response({"status": "ok"})


async def schema(request: web.Request) -> web.Response:
    """The capability document: what a client may send to this server."""
    config = request.app[CONFIG]
    interfaces = ["s3", "http", "https"] + (["file"] if config.roots else [])
    return json_response({
        "name": "activezarr", "api": "v2", "operations": list(OPS), "dtypes": list(DTYPES),
        "compression": ["blosc2", "gzip", "zlib"], "filters": ["shuffle"],
        "codecs": sorted(ALLOWED_CODECS), "interface_types": interfaces,
        "limits": config.limits(), "extensions": list(EXTENSIONS),
    })


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
    app = web.Application(client_max_size=config.max_body, middlewares=[error_middleware])
    app[CONFIG] = config
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_resources(config))
    app.router.add_post("/v2/batch", reduce_batch)
    app.router.add_post("/v2/batch/", reduce_batch)
    app.router.add_post("/v2/{op}", reduce_chunk)
    app.router.add_post("/v2/{op}/", reduce_chunk)
    app.router.add_get("/metrics", metrics)
    app.router.add_get(HEALTH_PATH, healthz)
    app.router.add_get(SCHEMA_PATH, schema)
    return app

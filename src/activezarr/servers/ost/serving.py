"""What every server of the cluster shares: error statuses, health, byte counters, running."""

from __future__ import annotations

import hmac
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import cbor2
from aiohttp import web

from ...chunk.codecs import ALLOWED_CODECS
from ...protocol import DTYPES, HEALTH_PATH, SCHEMA_PATH, error_body
from ..errors import ServerError, UnknownOperation, json_response, status_of
from ..metrics import CONTENT_TYPE, links_exposition
from .messages import LIMITS, OPS, TOKEN_HEADER
from .transport import OSTUnavailableError, RemoteError

log = logging.getLogger("activezarr.ost")
#: Bytes by the link they crossed: ``disk_read``, ``disk_write``, ``storage`` (OST to OSS)
#: and ``lan`` (storage to client); each is counted once, by the server that sent the bytes.
LINKS = web.AppKey("links", Counter)
TOKEN = web.AppKey("token", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _status(exc: BaseException) -> int:
    if isinstance(exc, OSTUnavailableError):
        return 503  # a server behind this one is down: not the client's fault
    if isinstance(exc, RemoteError):
        return exc.status
    return status_of(exc)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes PROTOCOL.md's JSON body with the status its type knows."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        status = _status(exc)
        if status == 500:
            log.error("server bug", exc_info=exc)
        return json_response(error_body(exc), status=status)


def item_error(exc: BaseException) -> dict[str, Any]:
    """A batch item's error answer: PROTOCOL.md's JSON error with its ``status``."""
    status = _status(exc)
    if status == 500:
        log.error("server bug", exc_info=exc)
    return {**error_body(exc), "status": status}


class WrongToken(ServerError):
    """A mutating call without the cluster's token."""

    status = 401


def require_token(request: web.Request) -> None:
    """Refuse a mutating call that does not carry the cluster's token."""
    given = request.headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), request.app[TOKEN].encode()):
        raise WrongToken(f"{request.method} {request.path} needs this cluster's token "
                         f"(header {TOKEN_HEADER})")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    links: Counter[str] = request.app[LINKS]
    return web.Response(body=links_exposition(links), headers={"Content-Type": CONTENT_TYPE})


def operation(request: web.Request) -> str:
    """The ``{op}`` of ``POST /v2/{op}``; unknown operations are a 404, as PROTOCOL.md says."""
    op = request.match_info["op"]
    if op not in OPS:
        raise UnknownOperation(f"unknown operation {op!r}; operations: {', '.join(OPS)}")
    return op


def add_schema(app: web.Application, extensions: tuple[str, ...]) -> None:
    """PROTOCOL.md's capability document, for ``interface_type: "ost"``."""
    document = {"name": "activezarr-ost", "api": "v2", "operations": list(OPS),
                "dtypes": list(DTYPES), "codecs": sorted(ALLOWED_CODECS),
                "interface_types": ["ost"], "limits": LIMITS, "extensions": list(extensions)}

    async def schema(request: web.Request) -> web.Response:
        return json_response(document)

    app.router.add_get(SCHEMA_PATH, schema)


def cbor_response(request: web.Request, payload: Any, link: str = "lan") -> web.Response:
    """``payload`` as CBOR, its size counted on ``link``."""
    body = cbor2.dumps(payload)
    request.app[LINKS][link] += len(body)
    return web.Response(body=body, content_type="application/cbor")


def create_base_app(token: str) -> web.Application:
    """An application with the error middleware, ``/healthz`` and ``/metrics``; mutating
    handlers call :func:`require_token` with the cluster's ``token``."""
    if not token:
        raise ValueError("a cluster server needs its cluster's token")
    app = web.Application(client_max_size=1 << 30, middlewares=[error_middleware])
    app[LINKS] = Counter()
    app[TOKEN] = token
    app.router.add_get(HEALTH_PATH, healthz)
    app.router.add_get("/metrics", metrics)
    return app


def serve(app: web.Application, host: str, port: int | None, fd: int | None = None) -> None:
    """Run ``app`` in the foreground until SIGINT or SIGTERM, on ``host:port`` or on the
    listening socket inherited as descriptor ``fd``."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    where: dict[str, Any] = {"host": host, "port": port} if fd is None else \
        {"sock": socket.socket(fileno=fd)}  # bound by the parent
    web.run_app(app, print=None, shutdown_timeout=2, **where)

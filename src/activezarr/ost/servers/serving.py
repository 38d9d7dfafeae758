"""What every server of the cluster shares: error statuses, the token, byte counters, running
(the HTTP face is :mod:`activezarr.servers.http`)."""

from __future__ import annotations

import hmac
import logging
import socket
from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ...chunk.codecs import ALLOWED_CODECS
from ...chunk.reductions import plugin_operations
from ...protocol import DTYPES, HEALTH_PATH, error_body
from ...servers import http
from ...servers.errors import ServerError, logged_status
from ...servers.metrics import links_exposition
from ...servers.settings import Listening, setting
from ..wire.messages import LIMITS, OPS, TOKEN_HEADER
from ..wire.transport import OSTUnavailableError

log = logging.getLogger("activezarr.ost")
#: Bytes by the link they crossed: ``disk_read``, ``disk_write``, ``storage`` (OST to OSS)
#: and ``lan`` (storage to client); each is counted once, by the server that sent the bytes.
LINKS = web.AppKey("links", Counter)
TOKEN = web.AppKey("token", str)
#: The operations a server serves: the built-ins and the plugin reductions it was told to load.
OPERATIONS = web.AppKey("operations", tuple[str, ...])


def item_error(exc: BaseException) -> dict[str, Any]:
    """A batch item's error answer: PROTOCOL.md's JSON error with its ``status``, and which
    server could not be reached or stalled (``unavailable``) when that was the reason."""
    answer = {**error_body(exc), "status": logged_status(exc, log)}
    if isinstance(exc, OSTUnavailableError) and exc.server is not None:
        answer["unavailable"] = {"server": exc.server, "reason": exc.reason}
    return answer


class WrongToken(ServerError):
    """A call without the cluster's token."""

    status = 401


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse every call but ``/healthz`` that does not carry the cluster's token: reads too,
    or any process on the machine could read any file's bytes. A middleware, so that a route
    added later is guarded without saying so."""
    if request.path != HEALTH_PATH:
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), request.app[TOKEN].encode()):
            raise WrongToken(f"{request.method} {request.path} needs this cluster's token "
                             f"(header {TOKEN_HEADER})")
    return await handler(request)


def operations(app: web.Application) -> tuple[str, ...]:
    """The operations ``app`` serves."""
    served: tuple[str, ...] = app[OPERATIONS]
    return served


def operation(request: web.Request) -> str:
    """The ``{op}`` of ``POST /v2/{op}``, one the cluster's servers serve."""
    return http.operation(request, operations(request.app))


def add_schema(app: web.Application, extensions: tuple[str, ...]) -> None:
    """PROTOCOL.md's capability document, for ``interface_type: "ost"``."""
    http.add_document(app, {"name": "activezarr-ost", "api": "v2",
                            "operations": list(operations(app)),
                            "dtypes": list(DTYPES), "codecs": sorted(ALLOWED_CODECS),
                            "interface_types": ["ost"], "limits": LIMITS,
                            "extensions": list(extensions)})


def cbor_response(request: web.Request, payload: Any, link: str = "lan") -> web.Response:
    """``payload`` as CBOR, its size counted on ``link``."""
    links: Counter[str] = request.app[LINKS]
    return http.cbor_response(payload, lambda n: links.update({link: n}))


def _exposition(app: web.Application) -> bytes:
    links: Counter[str] = app[LINKS]
    return links_exposition(links)


def create_base_app(token: str, reductions: tuple[str, ...] = ()) -> web.Application:
    """An application with the error middleware, ``/healthz`` and ``/metrics``, answering
    only callers showing the cluster's ``token`` (:func:`require_token`), ``/healthz`` aside.
    It serves the plugin reductions ``reductions`` besides the built-in operations."""
    if not token:
        raise ValueError("a cluster server needs its cluster's token")
    app = http.create_server_app(exposition=_exposition,
                                 on_error=lambda request, exc: logged_status(exc, log),
                                 client_max_size=1 << 30,
                                 http_errors_as_json=False)  # an object's 404 stays aiohttp's
    app.middlewares.append(require_token)  # inside the error middleware: a 401 is JSON
    app[LINKS] = Counter()
    app[TOKEN] = token
    app[OPERATIONS] = (*OPS, *plugin_operations(reductions))
    return app


class Serving(Listening):
    """What every server of the cluster is told: where it listens, and the cluster's token."""

    token: str = setting(..., "The cluster's token, required on every call but /healthz.",
                         min_length=1)


def serve(app: web.Application, settings: Listening, fd: int | None = None) -> None:
    """Run ``app`` in the foreground until SIGINT or SIGTERM, on the settings' host and port or
    on the listening socket inherited as descriptor ``fd``, within their connection limit."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    where: dict[str, Any] = {"host": settings.host, "port": settings.port} if fd is None else \
        {"sock": socket.socket(fileno=fd)}  # bound by the parent
    http.run(app, max_connections=settings.max_connections, shutdown_timeout=2,
             access_log=settings.access_log, **where)

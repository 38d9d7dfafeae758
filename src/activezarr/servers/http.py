"""The HTTP face every server shares: the error middleware, ``/healthz``, ``/metrics``, the
capability document and CBOR responses. Each server passes only what differs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import cbor2
from aiohttp import web

from ..protocol import HEALTH_PATH, SCHEMA_PATH, error_body
from .errors import UnknownOperation, json_response
from .metrics import CONTENT_TYPE

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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

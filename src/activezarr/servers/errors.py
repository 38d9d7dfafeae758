"""Errors the server answers with; each knows its HTTP status (PROTOCOL.md's table)."""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from aiohttp import web
from pydantic import ValidationError

from ..errors import ActiveZarrError


class ServerError(Exception):
    """Base of the errors raised on purpose by the server."""

    status: ClassVar[int] = 500


class BadRequest(ServerError):
    """Invalid input, an object that does not exist, or a request over a limit."""

    status = 400


class NoSuchKey(BadRequest):
    """The object store itself says the key does not exist (S3's ``NoSuchKey``): in a batch
    that asks for ``absent``, the chunk was never written, not an error."""


class Unauthorized(ServerError):
    """The object store refused the credentials."""

    status = 401


class Forbidden(ServerError):
    """The url is outside every configured upstream and root."""

    status = 403


class UnknownOperation(ServerError):
    status = 404


class RequestTimeout(ServerError):
    """The client did not send its whole body in time (a slow client holds nothing)."""

    status = 408


class TooLarge(ServerError):
    """A body or chunk over the configured limit."""

    status = 413


class DeadlineExceeded(ServerError):
    """The request's work ran past the server's request timeout and was stopped; sending the
    same work again would cost the same."""

    status = 504


class Overloaded(ServerError):
    """Saturated, or the upstream store is unreachable: the client retries with backoff."""

    status = 503


#: Errors of bad input: the wire model's validation, and the kernel's and codecs' own errors
#: (decode failures, codecs not allowed, selections). Anything else is a bug: a 500.
_BAD_INPUT = (ValidationError, ActiveZarrError)


def status_of(exc: BaseException) -> int:
    """The HTTP status of ``exc``; 500 only for what must be a server bug."""
    if isinstance(exc, ServerError):
        return exc.status
    if isinstance(exc, web.HTTPException):
        return exc.status
    if isinstance(exc, _BAD_INPUT):
        return 400
    return 500


def logged_status(exc: BaseException, log: logging.Logger) -> int:
    """:func:`status_of` ``exc``; a 500 is a bug and is logged on ``log`` with its traceback."""
    status = status_of(exc)
    if status == 500:
        log.error("server bug", exc_info=exc)
    return status


def json_response(payload: Any, status: int = 200) -> web.Response:
    """JSON with ``Content-Type: application/json`` exactly, as Reductionist answers."""
    return web.Response(body=json.dumps(payload).encode(), status=status,
                        content_type="application/json")

"""Errors the server answers with; each knows its HTTP status (PROTOCOL.md's table)."""

from __future__ import annotations

from typing import ClassVar

from aiohttp import web

from ..errors import ActiveZarrError


class ServerError(Exception):
    """Base of the errors raised on purpose by the server."""

    status: ClassVar[int] = 500


class BadRequest(ServerError):
    """Invalid input, an object that does not exist, or a request over a limit."""

    status = 400


class Unauthorized(ServerError):
    """The object store refused the credentials."""

    status = 401


class Forbidden(ServerError):
    """The url is outside every configured upstream and root."""

    status = 403


class UnknownOperation(ServerError):
    status = 404


class TooLarge(ServerError):
    """A body or chunk over the configured limit."""

    status = 413


class Overloaded(ServerError):
    """Saturated, or the upstream store is unreachable: the client retries with backoff."""

    status = 503


#: Errors of bad input raised by the wire model, the kernel and the codecs.
_BAD_INPUT = (ValueError, TypeError, LookupError, ArithmeticError, ActiveZarrError)


def status_of(exc: BaseException) -> int:
    """The HTTP status of ``exc``; 500 only for what must be a server bug."""
    if isinstance(exc, ServerError):
        return exc.status
    if isinstance(exc, web.HTTPException):
        return exc.status
    if isinstance(exc, _BAD_INPUT):
        return 400
    return 500

"""Counting the bytes a reduction pulls over the network: HTTP bodies with their framing.

A :class:`Meter` made current with :func:`metered` receives every response the code under it
reads: our own requests to active servers (:func:`record_response`) and, through a botocore
hook, everything s3fs fetches (chunks, listings, metadata). Only the innermost meter counts a
response, so a per-chunk meter inside a per-reduction one never counts twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

_current: ContextVar[Meter | None] = ContextVar("activezarr_meter", default=None)
_HOOK_ID = "activezarr-traffic"


@dataclass
class Meter:
    """Responses and their bytes received over the network while this meter was current."""

    nbytes: int = 0
    responses: int = 0


@contextmanager
def metered() -> Iterator[Meter]:
    """A fresh meter, current for the code in the ``with`` block and the tasks it starts."""
    meter = Meter()
    token = _current.set(meter)
    try:
        yield meter
    finally:
        _current.reset(token)


def framing(status: int, reason: str | None, headers: Iterable[tuple[Any, Any]]) -> int:
    """Bytes of an HTTP/1.1 status line and header block (``name: value\\r\\n`` each)."""
    reason = reason if reason is not None else _reason(status)
    line = len(f"HTTP/1.1 {status} {reason}\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in headers) + 2


def record(nbytes: int) -> None:
    """Count one response of ``nbytes`` on the current meter, if any."""
    meter = _current.get()
    if meter is not None:
        meter.nbytes += nbytes
        meter.responses += 1


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _on_s3_response(response_dict: Mapping[str, Any] | None = None, **_: Any) -> None:
    """botocore's ``response-received`` hook: one call per HTTP attempt, retries included."""
    if response_dict is None:
        return
    headers = response_dict.get("headers") or {}
    body = response_dict.get("body")
    size = len(body) if isinstance(body, bytes | bytearray) \
        else int(headers.get("content-length", 0) or 0)  # a stream is read whole by s3fs
    record(framing(int(response_dict.get("status_code", 0)), None, headers.items()) + size)


async def watch(fs: Any) -> None:
    """Count what the fsspec filesystem ``fs`` receives, where it can be seen (s3fs)."""
    fs = getattr(fs, "sync_fs", fs)
    if getattr(fs, "fss", None) is not None:  # a reference filesystem: its targets
        for target in {id(t): t for t in fs.fss.values()}.values():
            await watch(target)
        return
    if getattr(fs, "target", None) is not None and hasattr(fs, "active"):  # active::
        await watch(fs.target)
        return
    set_session = getattr(fs, "set_session", None)
    # A synchronous s3fs runs on fsspec's own loop; its session cannot be touched from ours.
    if set_session is not None and "s3" in protocols(fs) and getattr(fs, "asynchronous", False):
        client = await set_session()
        client.meta.events.register("response-received.s3", _on_s3_response,
                                    unique_id=_HOOK_ID)


def protocols(fs: Any) -> set[str]:
    """The protocols whose bytes ``fs`` reads: its own, an active:: or kerchunk target's."""
    fs = getattr(fs, "sync_fs", fs)
    if getattr(fs, "target", None) is not None:
        return protocols(fs.target)
    if getattr(fs, "fss", None) is not None:
        return set().union(*(protocols(t) for t in fs.fss.values()))
    protocol = getattr(fs, "protocol", ())
    return {protocol} if isinstance(protocol, str) else set(protocol)

"""Where a request may read from: configured upstream URLs and file roots, nothing else.

A URL's path is read the way a browser (and Reductionist's URL parser) reads it: a valid
``%XX`` is an escaped byte, anything else (spaces, ``[]``, a lone ``%``) is itself. The decoded
object name is checked against the configured prefix and re-encoded canonically, so that what
the upstream receives names exactly the object that was checked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, unquote_to_bytes, urlsplit

from yarl import URL

from ..errors import BadRequest, Forbidden
from .config import Upstream

_DOT_SEGMENTS = {".", ".."}
_ESCAPE = re.compile(rb"%[0-9A-Fa-f]{2}")
#: What S3 (SigV4) leaves unescaped in a canonical path: RFC 3986's unreserved characters.
_UNRESERVED = "-_.~"


def _decode_path(path: str) -> str:
    """``path`` with its valid ``%XX`` escapes decoded, everything else taken literally."""
    raw = path.encode()
    decoded = _ESCAPE.sub(lambda m: unquote_to_bytes(m.group()), raw)
    if b"\0" in decoded:
        raise BadRequest(f"url path {path!r} names an object with a NUL byte")
    try:
        return decoded.decode()
    except UnicodeDecodeError:
        raise BadRequest(f"url path {path!r} does not decode to UTF-8") from None


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed lazily; a bad port raises here
    except ValueError as exc:
        raise BadRequest(f"url {url!r} is not a valid URL: {exc}") from None
    return parts


def _segments(url: str) -> tuple[URL, list[str]]:
    """The URL (scheme, host, port) and its decoded path segments, refusing dot segments."""
    parts = _split(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"url {url!r} is not an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise BadRequest(f"url {url!r} names an object with a query or fragment")
    segments = _decode_path(parts.path).split("/")
    # An upstream that normalises paths would turn "a/../b" (or "a/..%2Fb", or "a\..\b") into
    # "b": refuse rather than escape the configured prefix.
    if any(s in _DOT_SEGMENTS for seg in segments for s in seg.split("\\")):
        raise Forbidden(f"url {url!r} has '.' or '..' path segments")
    try:
        origin = URL.build(scheme=parts.scheme, host=parts.hostname, port=parts.port)
    except ValueError:
        raise BadRequest(f"url {url!r} has an invalid host or port") from None
    return origin, segments


def _encode(segments: Sequence[str]) -> str:
    return "/".join(quote(s, safe=_UNRESERVED) for s in segments)


class AccessPolicy:
    """Maps request URLs to what the server really reads, refusing (403) anything else."""

    def __init__(self, upstreams: Sequence[Upstream], roots: Sequence[str]) -> None:
        self.upstreams = tuple(upstreams)
        self.roots = tuple(os.path.abspath(r) for r in roots)

    def url(self, url: str) -> URL:
        """The internal URL of an object named by its public ``url``."""
        origin, segments = _segments(url)
        for upstream in self.upstreams:
            public = upstream.public
            prefix = [s for s in _decode_path(public.raw_path).split("/") if s]
            named = segments[1:]  # after the leading "/"
            if (origin.scheme, origin.host, origin.port) == (public.scheme, public.host,
                                                             public.port) \
                    and named[:len(prefix)] == prefix:
                rest = named[len(prefix):]
                base = str(upstream.internal).rstrip("/")
                return URL(base + ("/" + _encode(rest) if rest else ""), encoded=True)
        raise Forbidden(f"url {url!r} is not under any configured upstream")

    def path(self, url: str) -> FilePath:
        """The root and the path below it of a ``file`` url (``file:///...`` or absolute)."""
        path = _decode_path(_split(url).path) if url.startswith("file:") else url
        if not os.path.isabs(path):
            raise BadRequest(f"file url {url!r} is not an absolute path")
        parts = path.split("/")
        if any(p in _DOT_SEGMENTS for p in parts):
            raise Forbidden(f"path {path!r} has '.' or '..' segments")
        names = [p for p in parts if p]
        for root in self.roots:
            prefix = [p for p in root.split("/") if p]
            if names[:len(prefix)] == prefix and len(names) > len(prefix):
                return FilePath(root, tuple(names[len(prefix):]))
        raise Forbidden(f"path {path!r} is not under any allowed root")


@dataclass(frozen=True)
class FilePath:
    """A file named below an allowed root; opened component by component, never by name."""

    root: str
    names: tuple[str, ...]

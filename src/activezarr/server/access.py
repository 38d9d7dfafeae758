"""Where a request may read from: configured upstream URLs and file roots, nothing else."""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from yarl import URL

from .config import Upstream
from .errors import BadRequest, Forbidden

_DOT_SEGMENTS = {".", ".."}


def _checked(url: str) -> URL:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"url {url!r} is not an absolute http(s) URL")
    if parts.query or parts.fragment:
        raise BadRequest(f"url {url!r} names an object with a query or fragment")
    # A normalising client or proxy would turn "a/../b" into "b": refuse rather than escape.
    if any(unquote(s) in _DOT_SEGMENTS for s in parts.path.split("/")):
        raise Forbidden(f"url {url!r} has '.' or '..' path segments")
    return URL(url, encoded=True)


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return path == prefix or path.startswith(prefix + "/")


class AccessPolicy:
    """Maps request URLs to what the server really reads, refusing (403) anything else."""

    def __init__(self, upstreams: Sequence[Upstream], roots: Sequence[str]) -> None:
        self.upstreams = tuple(upstreams)
        self.roots = tuple(os.path.realpath(r) for r in roots)

    def url(self, url: str) -> URL:
        """The internal URL of an object named by its public ``url``."""
        target = _checked(url)
        for upstream in self.upstreams:
            public = upstream.public
            if (target.scheme, target.host, target.port) == (public.scheme, public.host,
                                                             public.port) \
                    and _under(target.raw_path, public.raw_path):
                rest = target.raw_path[len(public.raw_path.rstrip("/")):]
                return URL(str(upstream.internal).rstrip("/") + rest, encoded=True)
        raise Forbidden(f"url {url!r} is not under any configured upstream")

    def path(self, url: str) -> str:
        """The real path of a ``file`` url (``file:///...`` or an absolute path) under a root."""
        path = unquote(urlsplit(url).path) if url.startswith("file:") else url
        if not os.path.isabs(path):
            raise BadRequest(f"file url {url!r} is not an absolute path")
        real = os.path.realpath(path)  # symlinks resolved before the check, not after
        if not any(os.path.commonpath([real, root]) == root for root in self.roots):
            raise Forbidden(f"path {path!r} is not under any allowed root")
        return real

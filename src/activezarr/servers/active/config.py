"""What a server is configured to reach and how much work it accepts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from yarl import URL

from ...chunk.reductions import plugin_operations

MiB = 2**20


@dataclass(frozen=True)
class Upstream:
    """Objects named under ``public`` are read through ``internal`` (the data centre's own URL)."""

    public: URL
    internal: URL

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """``PUBLIC`` or ``PUBLIC=INTERNAL``, both absolute http(s) URLs."""
        public, _, internal = text.partition("=")
        urls = [URL(public), URL(internal or public)]
        for url in urls:
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"upstream {str(url)!r} is not an absolute http(s) URL")
        return cls(*urls)


@dataclass(frozen=True)
class ServerConfig:
    upstreams: tuple[Upstream, ...] = ()
    roots: tuple[str, ...] = ()
    max_body: int = 4 * MiB
    max_chunk_bytes: int = 256 * MiB
    max_decoded_bytes: int = 1024 * MiB
    #: Bytes one request may decode in all (a batch is one request): bounds its CPU with
    #: ``request_timeout``.
    max_request_decoded_bytes: int = 16384 * MiB
    #: Bytes held at once by every request together (read, decoded, results): the permits.
    max_memory: int = 2048 * MiB
    max_inflight: int = 256
    max_batch: int = 1024
    #: Seconds a request may wait for memory permits before it is told to retry (503).
    memory_wait: float = 30.0
    #: Seconds a client has to send its whole body, before it takes any slot.
    body_timeout: float = 30.0
    #: Seconds a request may take from its arrival, after which its remaining work stops (504);
    #: well below a client's timeout (120 s by default), so that the client hears why.
    request_timeout: float = 60.0
    #: Connections open at once; more are answered 503 and closed before anything is read, so
    #: that what idle or stalled connections hold stays bounded.
    max_connections: int = 512
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    s3_region: str = "us-east-1"
    #: Seconds one upstream read may take; shorter than a client's request timeout (120 s by
    #: default), so that a slow object store is answered with a 503, not mistaken for a dead server.
    upstream_timeout: float = 60.0
    #: Reads from the object stores in flight at once (the rest wait, their timeout not yet
    #: running): an object store answering hundreds of GETs at once serves fewer bytes in all.
    upstream_reads: int = 16
    #: Plugin reductions served besides the built-in operations (``--reductions``).
    reductions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.request_timeout <= 0:
            raise ValueError(f"request_timeout {self.request_timeout} is not positive")
        if self.max_connections < 1:
            raise ValueError(f"max_connections {self.max_connections} is below 1")
        plugin_operations(self.reductions)  # installed, each an aggregation of its own
        if self.upstream_reads < 1:
            raise ValueError(f"upstream_reads {self.upstream_reads} is below 1")
        if self.max_memory < self.max_chunk_bytes:
            raise ValueError(f"max_memory {self.max_memory} is below max_chunk_bytes "
                             f"{self.max_chunk_bytes}: no whole chunk could be read")

    def limits(self) -> dict[str, int]:
        """The limits, as published in the capability document."""
        return {"max_body": self.max_body, "max_chunk_bytes": self.max_chunk_bytes,
                "max_decoded_bytes": self.max_decoded_bytes,
                "max_request_decoded_bytes": self.max_request_decoded_bytes,
                "max_memory": self.max_memory,
                "max_inflight": self.max_inflight, "max_batch": self.max_batch}

"""What the active server is configured to reach and how much work it accepts: declared once,
here; ``activezarr serve``'s options, their help and their ``ACTIVEZARR_*`` variables are made
from :class:`ServeSettings`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, PlainValidator, model_validator
from yarl import URL

from ...chunk.reductions import plugin_operations
from ...errors import UnknownReductionError
from ..settings import Listening, Reductions, Settings, reductions_setting, setting

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


def _upstream(value: Any) -> Upstream:
    return value if isinstance(value, Upstream) else Upstream.parse(str(value))


def _directory(value: Any) -> str:
    if not os.path.isdir(value):
        raise ValueError(f"{value!r} is not a directory")
    return str(value)


class ServerConfig(Settings):
    """What the active server reads and the bounds of the work it accepts."""

    upstreams: tuple[Annotated[Upstream, PlainValidator(_upstream)], ...] = setting(
        (), "Object store the server may read: PUBLIC[=INTERNAL] URL. Repeatable.",
        option="upstream")
    roots: tuple[Annotated[str, PlainValidator(_directory)], ...] = setting(
        (), "Directory served to interface_type 'file'. Repeatable.", option="allow-root")
    max_body: int = setting(
        4 * MiB, "Largest request body accepted, in bytes; larger is refused with 413.", ge=1)
    max_chunk_bytes: int = setting(
        256 * MiB, "Largest stored chunk read, in bytes; larger is refused with 413.", ge=1)
    max_decoded_bytes: int = setting(
        1024 * MiB, "Largest decoded chunk, in bytes; larger is refused.", ge=1)
    #: Bounds one request's CPU, with ``request_timeout``.
    max_request_decoded_bytes: int = setting(
        16384 * MiB, "Bytes one request (a whole batch) may decode in all; more is refused "
        "with 413.", ge=1)
    #: The permits: bodies reserve twice their size (read, then parsed).
    max_memory: int = setting(
        2048 * MiB, "Bytes all requests may hold at once (bodies, read, decoded, results); "
        "at least --max-chunk-bytes and twice --max-body.", ge=1)
    max_inflight: int = setting(256, "Requests served at once; more are refused with 503.", ge=1)
    max_batch: int = Field(1024, ge=1, description="Items in one /v2/batch (not an option).")
    memory_wait: float = setting(30.0, "Seconds a request waits for memory before a 503.", gt=0)
    #: Before the body has arrived the request takes no slot.
    body_timeout: float = setting(30.0, "Seconds a client has to send its request body.", gt=0)
    #: Well below a client's timeout (120 s by default), so that the client hears why.
    request_timeout: float = setting(
        60.0, "Seconds a request may take; then its remaining work stops and it is answered "
        "504 (keep it below the clients' timeout).", gt=0)
    workers: int = setting(lambda: os.cpu_count() or 1, "Decode/reduce threads.",
                           shown="the number of CPUs", ge=1)
    s3_region: str = setting("us-east-1", "Region S3 requests are signed for.")
    #: Half the request timeout: a slow object store is answered 503 (retried), not 504.
    upstream_timeout: float = setting(
        30.0, "Seconds an upstream read may take; keep it below --request-timeout, so that a "
        "slow object store is answered 503 (the client retries), not 504.", gt=0)
    #: The rest wait, their timeout not yet running: an object store answering hundreds of
    #: GETs at once serves fewer bytes in all.
    upstream_reads: int = setting(
        16, "Reads from the object stores in flight at once; more wait (their timeout starts "
        "when they are sent).", ge=1)
    reductions: Reductions = reductions_setting()

    @model_validator(mode="after")
    def _plugins_installed(self) -> Self:
        try:
            plugin_operations(self.reductions)  # installed, each an aggregation of its own
        except UnknownReductionError as exc:
            raise ValueError(str(exc)) from None
        return self

    @model_validator(mode="after")
    def _memory_holds_a_request(self) -> Self:
        if self.max_memory < self.max_chunk_bytes:
            raise ValueError(f"--max-memory {self.max_memory} is below --max-chunk-bytes "
                             f"{self.max_chunk_bytes}: no whole chunk could be read")
        if self.max_memory < 2 * self.max_body:
            raise ValueError(f"--max-memory {self.max_memory} is below twice --max-body "
                             f"{self.max_body} (a body reserves twice its size): raise "
                             "--max-memory or lower --max-body")
        return self

    def limits(self) -> dict[str, int]:
        """The limits, as published in the capability document."""
        return {"max_body": self.max_body, "max_chunk_bytes": self.max_chunk_bytes,
                "max_decoded_bytes": self.max_decoded_bytes,
                "max_request_decoded_bytes": self.max_request_decoded_bytes,
                "max_memory": self.max_memory,
                "max_inflight": self.max_inflight, "max_batch": self.max_batch}


class ServeSettings(ServerConfig, Listening):
    """Everything ``activezarr serve`` is told: the server's configuration, where it listens
    and the certificate it serves https with."""

    tls_cert: Path | None = setting(None, "Certificate (PEM) to serve https with; needs "
                                    "--tls-key.")
    tls_key: Path | None = setting(None, "Private key (PEM) of --tls-cert.")

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("--tls-cert and --tls-key go together")
        for path in (self.tls_cert, self.tls_key):
            if path is not None and not path.is_file():
                raise ValueError(f"{str(path)!r} is not a file")
        return self

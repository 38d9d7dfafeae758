"""Serving chunk requests: where to read, reading, and reducing in a bounded worker pool."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import aiohttp

from ..protocol import BatchItem, ChunkRequest, error_body
from .access import AccessPolicy
from .coalesce import Read, plan_reads
from .config import ServerConfig
from .errors import BadRequest, Overloaded, status_of
from .metrics import Metrics
from .operations import execute
from .readers import Credentials, UpstreamReader, read_file

log = logging.getLogger("activezarr.server")


class ChunkService:
    """Everything a handler needs; one per application, built in its cleanup context."""

    def __init__(self, config: ServerConfig, session: aiohttp.ClientSession,
                 executor: ThreadPoolExecutor, metrics: Metrics) -> None:
        self.config = config
        self.policy = AccessPolicy(config.upstreams, config.roots)
        self.reader = UpstreamReader(session, config.max_chunk_bytes, config.s3_region)
        self.executor = executor
        self.metrics = metrics
        self._inflight = 0
        # Bounds the chunks held in memory at once, batches included.
        self._chunks = asyncio.Semaphore(config.max_inflight)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Admit one more request, or refuse with 503 when ``max_inflight`` are being served."""
        if self._inflight >= self.config.max_inflight:
            raise Overloaded(f"{self._inflight} requests in flight; retry later")
        self._inflight += 1
        self.metrics.inflight.inc()
        try:
            yield
        finally:
            self._inflight -= 1
            self.metrics.inflight.dec()

    async def _fetch(self, request: ChunkRequest, auth: Credentials | None) -> bytes:
        if request.interface_type in ("s3", "http", "https"):
            url = self.policy.url(request.url)
            raw = await self.reader.read(request, url, auth)
        elif request.interface_type == "file":
            path = self.policy.path(request.url)
            loop = asyncio.get_running_loop()
            raw = await loop.run_in_executor(self.executor, read_file, request, path,
                                             self.config.max_chunk_bytes)
        else:
            raise BadRequest(f"interface_type {request.interface_type!r} is not served here")
        self.metrics.upstream_reads.inc()
        self.metrics.bytes_upstream.inc(len(raw))
        return raw

    async def run(self, op: str, request: ChunkRequest,
                  auth: Credentials | None) -> dict[str, Any]:
        """The response map of ``op`` on the chunk ``request`` names."""
        async with self._chunks:
            raw = await self._fetch(request, auth)
            return await self._compute(op, request, raw)

    async def _compute(self, op: str, request: ChunkRequest,
                       raw: bytes | memoryview) -> dict[str, Any]:
        start = time.perf_counter()
        self.metrics.requests.labels(op).inc()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self.executor, execute, op, request, raw,
                                            self.config.max_decoded_bytes)
        self.metrics.latency.labels(op).observe(time.perf_counter() - start)
        return result

    async def run_batch(self, items: Sequence[Any],
                        auth: Credentials | None) -> list[dict[str, Any]]:
        """Per-item results in order; one failing item does not fail the others.

        Byte ranges of one object that lie close together are read once.
        """
        if len(items) > self.config.max_batch:
            raise BadRequest(f"{len(items)} requests in a batch, over the limit of "
                             f"{self.config.max_batch}")
        results: list[dict[str, Any]] = [{} for _ in items]
        parsed: list[tuple[int, BatchItem]] = []
        for position, item in enumerate(items):
            try:
                # Re-read as JSON so that the strict model applies JSON's rules (lists as tuples).
                parsed.append((position, BatchItem.model_validate_json(json.dumps(item))))
            except Exception as exc:
                results[position] = self._item_error(exc)
        reads = plan_reads(parsed, self.config.max_chunk_bytes)
        by_position = dict(parsed)
        await asyncio.gather(*(self._serve_read(read, by_position, auth, results)
                               for read in reads))
        return results

    async def _serve_read(self, read: Read, items: dict[int, BatchItem],
                          auth: Credentials | None, results: list[dict[str, Any]]) -> None:
        async with self._chunks:
            try:
                raw = await self._fetch(read.request, auth)
            except Exception as exc:
                for position, _, _ in read.parts:
                    results[position] = self._item_error(exc)
                return

            view = memoryview(raw)  # parts share the read's bytes, uncopied

            async def part(position: int, start: int, stop: int | None) -> None:
                item = items[position]
                try:
                    results[position] = await self._compute(item.op, item, view[start:stop])
                except Exception as exc:
                    results[position] = self._item_error(exc)

            await asyncio.gather(*(part(*p) for p in read.parts))

    def _item_error(self, exc: BaseException) -> dict[str, Any]:
        return {**error_body(exc), "status": self.record_error(exc)}

    def record_error(self, exc: BaseException) -> int:
        """The status of ``exc``, counted; a 500 is a bug and is logged with its traceback."""
        status = status_of(exc)
        if status == 500:
            log.error("server bug", exc_info=exc)
        self.metrics.errors.labels(str(status)).inc()
        return status

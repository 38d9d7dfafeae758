"""Serving chunk requests: where to read, reading, and reducing in a bounded worker pool."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from ...protocol import OPS, BatchItem, ChunkRequest, error_body, parse, resolve_shared
from ..budget import MemoryBudget, Reservation
from ..combine import Combiner
from ..errors import (
    BadRequest,
    DeadlineExceeded,
    NoSuchKey,
    Overloaded,
    TooLarge,
    logged_status,
)
from ..metrics import Metrics
from ..operations import chunk_partial, execute
from ..workers import in_worker
from .access import AccessPolicy
from .coalesce import Read, plan_reads
from .config import ServerConfig
from .readers import Admit, Credentials, UpstreamReader, open_file, read_open_file

log = logging.getLogger("activezarr.server")
#: Python-level bytes per element of a result's ``count`` list, beyond the raw values.
_COUNT_BYTES = 40


def working_bytes(request: ChunkRequest) -> int:
    """Memory a request holds beyond the bytes it reads: the decoded chunk, one working copy of
    it (selection, mask, widened sums) and its result. Unknown for a shapeless chunk until read.
    """
    return 3 * (request.decoded_nbytes or 0) + request.extra_working_bytes


def _result_bytes(result: dict[str, Any]) -> int:
    """Memory a result holds until the response is sent: itself, and then its encoding."""
    stored = sum(len(v) for v in result.values() if isinstance(v, bytes))
    return 2 * stored + _COUNT_BYTES * len(result.get("count", ())) + 256


@dataclass
class _Answer:
    """Where a batch's results go: per item, or merged by the combiner."""

    results: list[dict[str, Any]]
    held: Reservation
    combiner: Combiner
    lean: bool
    absent: bool

    def undone(self, read: Read) -> list[int]:
        """The positions of ``read`` with neither an answer nor a place in a merged group."""
        return [p for p, _, _ in read.parts
                if not self.results[p] and not self.combiner.merged(p)]


def partial_lean(lean: bool) -> Callable[..., dict[str, Any]] | None:
    """:func:`execute` with ``lean`` answers when the batch asked for them (None: as is)."""
    return functools.partial(execute, lean=True) if lean else None


class ChunkService:
    """Everything a handler needs; one per application, built in its cleanup context."""

    def __init__(self, config: ServerConfig, session: aiohttp.ClientSession,
                 executor: ThreadPoolExecutor, metrics: Metrics) -> None:
        self.config = config
        self.policy = AccessPolicy(config.upstreams, config.roots)
        self.reader = UpstreamReader(session, config.max_chunk_bytes, config.s3_region,
                                     config.upstream_reads)
        self.executor = executor
        self.metrics = metrics
        self.budget = MemoryBudget(config.max_memory, config.memory_wait)
        self._inflight = 0

    @property
    def operations(self) -> tuple[str, ...]:
        """The operations served: the built-ins and the plugin reductions configured."""
        return (*OPS, *self.config.reductions)

    @property
    def saturated(self) -> bool:
        """Whether new work would be refused or kept waiting (what ``/healthz`` reports)."""
        return self._inflight >= self.config.max_inflight or self.budget.saturated

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

    def _check_limits(self, request: ChunkRequest) -> None:
        """What the configuration refuses, before anything is read."""
        decoded = request.decoded_nbytes
        if decoded is not None and decoded > self.config.max_decoded_bytes:
            raise BadRequest(f"shape {request.shape} decodes to {decoded} bytes, over the "
                             f"limit of {self.config.max_decoded_bytes}")

    def _check_request_decoded(self, requests: Sequence[ChunkRequest]) -> None:
        """A request (a whole batch) decodes at most ``max_request_decoded_bytes`` in all,
        counted before anything is read: with the deadline, this bounds its CPU."""
        decoded = sum(self._decoded_bound(r) for r in requests)
        limit = self.config.max_request_decoded_bytes
        if decoded > limit:
            raise TooLarge(f"the request decodes up to {decoded} bytes, over the server's "
                           f"--max-request-decoded-bytes {limit}; send fewer chunks at once")

    def _decoded_bound(self, request: ChunkRequest) -> int:
        """The most bytes ``request`` decodes: its shape's, else what a shapeless chunk may."""
        if request.decoded_nbytes is not None:
            return request.decoded_nbytes
        if request.codec_configs():
            return self._shapeless_decoded(request)
        return request.size if request.size is not None else self.config.max_chunk_bytes

    def deadline_exceeded(self) -> DeadlineExceeded:
        """The error of a request whose work ran past ``request_timeout``."""
        return DeadlineExceeded(
            f"the request ran past the server's --request-timeout of "
            f"{self.config.request_timeout} s; its remaining work was stopped: send fewer "
            "chunks at once")

    def _admit(self, held: Reservation, requests: Sequence[ChunkRequest]) -> Admit:
        """Reserves, once the read's size is known, everything the read and the decoding of
        ``requests`` will hold, in one step: a request never holds memory while it waits for
        more (two such requests could wait for each other)."""
        working = sum(working_bytes(r) or self._shapeless_decoded(r) for r in requests)
        plain_shapeless = any(r.shape is None and not r.codec_configs() for r in requests)

        async def admit(nbytes: int) -> None:
            await held.grow(nbytes * (3 if plain_shapeless else 1) + working)

        return admit

    async def _fetch(self, request: ChunkRequest, auth: Credentials | None,
                     admit: Admit) -> bytes | memoryview:
        raw: bytes | memoryview
        if request.interface_type in ("s3", "http", "https"):
            url = self.policy.url(request.url)
            raw = await self.reader.read(request, url, auth, admit)
        elif request.interface_type == "file":
            path = self.policy.path(request.url)
            fd, size = await in_worker(self.executor, open_file, request, path,
                                       self.config.max_chunk_bytes,
                                       discard=lambda opened: os.close(opened[0]))
            try:
                await admit(size)
            except BaseException:
                os.close(fd)
                raise
            # The read closes the file; a read stopped before it started leaves it to us.
            raw = await in_worker(self.executor, read_open_file, request, fd, size,
                                  unstarted=lambda: os.close(fd))
        else:
            raise BadRequest(f"interface_type {request.interface_type!r} is not served here")
        self.metrics.upstream_reads.inc()
        self.metrics.bytes_upstream.inc(len(raw))
        return raw

    async def run(self, op: str, request: ChunkRequest,
                  auth: Credentials | None) -> dict[str, Any]:
        """The response map of ``op`` on the chunk ``request`` names."""
        self._check_limits(request)
        self._check_request_decoded([request])
        async with self.budget.reservation() as held:
            raw = await self._fetch(request, auth, self._admit(held, [request]))
            answer: dict[str, Any] = await self._compute(op, request, raw)
            return answer

    def _shapeless_decoded(self, request: ChunkRequest) -> int:
        """A shapeless compressed chunk may decode to anything up to the limit: reserve it."""
        if request.shape is None and request.codec_configs():
            return min(self.config.max_decoded_bytes, self.budget.total // 2)
        return 0

    async def _compute(self, op: str, request: ChunkRequest, raw: bytes | memoryview,
                       work: Callable[..., Any] | None = None) -> Any:
        """``work`` (default :func:`execute`) on ``request``'s bytes in the worker pool."""
        start = time.perf_counter()
        self.metrics.requests.labels(op).inc()
        limit = self._shapeless_decoded(request) or self.config.max_decoded_bytes
        result = await in_worker(self.executor, work or execute, op, request, raw, limit)
        self.metrics.latency.labels(op).observe(time.perf_counter() - start)
        return result

    async def run_batch(self, items: Sequence[Any], auth: Credentials | None,
                        results_held: Reservation, deadline: float,
                        combine: Sequence[int] | None = None, lean: bool = False,
                        absent: bool = False) -> list[dict[str, Any]]:
        """Per-item results in order; one failing item does not fail the others. At
        ``deadline`` (the loop's clock) the items not yet done stop and answer 504.

        Byte ranges of one object that lie close together are read once. ``results_held``
        holds the results' memory until the response is sent. Items sharing a ``combine``
        label are answered once, merged (:class:`Combiner`); ``lean`` packs counts and tells
        each answer's stored bytes; ``absent`` answers keys the store says do not exist as such.
        """
        if len(items) > self.config.max_batch:
            raise BadRequest(f"{len(items)} requests in a batch, over the limit of "
                             f"{self.config.max_batch}")
        results: list[dict[str, Any]] = [{} for _ in items]
        parsed: list[tuple[int, BatchItem]] = []
        items = resolve_shared(items)
        for position, item in enumerate(items):
            try:
                # Re-read as JSON so that the strict model applies JSON's rules (lists as tuples).
                request = parse(BatchItem, json.dumps(item), self.operations)
                self._check_limits(request)
                parsed.append((position, request))
            except Exception as exc:
                results[position] = self._item_error(exc)
        self._check_request_decoded([request for _, request in parsed])
        reads = plan_reads(parsed, min(self.config.max_chunk_bytes, self.budget.total // 4))
        by_position = dict(parsed)
        answer = _Answer(results, results_held, Combiner(combine, by_position), lean, absent)
        # Reads of one batch in flight at once: enough to keep the object stores and the
        # workers busy, few enough that one batch neither queues all its chunks ahead of other
        # requests' in the worker pool nor opens all its files at once. Each lane serves one
        # read after another, so that a read starts as soon as the one before it ends.
        lanes = self.config.upstream_reads + 2 * self.config.workers
        pending = iter(reads)

        async def lane() -> None:
            for read in pending:
                await self._serve_read(read, by_position, auth, answer)

        # One deadline for the whole batch (one timer, however many reads).
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.gather(*(lane() for _ in range(min(lanes, len(reads)))))
        except TimeoutError:
            self.metrics.stopped_requests.labels("deadline").inc()
            for position in self._stopped(reads, answer):
                results[position] = self._item_error(self.deadline_exceeded())
        except asyncio.CancelledError:
            self._stopped(reads, answer)
            raise
        for position, result in answer.combiner.answers(lean).items():
            results[position] = result
        return results

    def _stopped(self, reads: Sequence[Read], answer: _Answer) -> list[int]:
        """The positions of ``reads`` that a stop (the deadline, or the client gone) left
        without an answer, counted."""
        undone = [position for read in reads for position in answer.undone(read)]
        self.metrics.stopped_chunks.inc(len(undone))
        return undone

    async def _serve_read(self, read: Read, items: dict[int, BatchItem],
                          auth: Credentials | None, answer: _Answer) -> None:
        results, results_held = answer.results, answer.held
        parts = [items[position] for position, _, _ in read.parts]
        try:
            async with self.budget.reservation() as held:
                raw = await self._fetch(read.request, auth, self._admit(held, parts))
                view = memoryview(raw)  # parts share the read's bytes, uncopied

                async def part(position: int, start: int, stop: int | None) -> None:
                    item = items[position]
                    stored = len(view[start:stop])
                    try:
                        if answer.combiner.combines(position):
                            partial = await self._compute(item.op, item, view[start:stop],
                                                          chunk_partial)
                            if answer.combiner.add(position, item, partial, stored):
                                await held.move(results_held, 3 * partial.nbytes + 256)
                            return
                        result = await self._compute(item.op, item, view[start:stop],
                                                     partial_lean(answer.lean))
                        await held.move(results_held, _result_bytes(result))
                        results[position] = {**result, "stored_bytes": stored} if answer.lean \
                            else result
                    except Exception as exc:
                        results[position] = self._item_error(exc)

                if len(read.parts) == 1:  # most reads: no task of its own to start and wait for
                    await part(*read.parts[0])
                else:
                    await asyncio.gather(*(part(*p) for p in read.parts))
        except Exception as exc:
            for position, _, _ in read.parts:
                if not results[position]:
                    results[position] = {"absent": True} \
                        if answer.absent and isinstance(exc, NoSuchKey) else self._item_error(exc)

    def _item_error(self, exc: BaseException) -> dict[str, Any]:
        return {**error_body(exc), "status": self.record_error(exc)}

    def record_error(self, exc: BaseException) -> int:
        """The status of ``exc``, counted; a 500 is a bug and is logged with its traceback."""
        status = logged_status(exc, log)
        self.metrics.errors.labels(str(status)).inc()
        return status

"""``POST /v2/batch`` on the OSTs and the OSS: every chunk (or stripe part) a server holds of a
client's batch in one request, the partials of items sharing a ``combine`` label merged before
answering (PROTOCOL.md's Batch), in bounded memory.

Memory is reserved in bytes before anything is read: the results of the whole batch when it
arrives (one partial per label group), then each item's read, decoding and partial as it
starts; a batch that could never fit is refused at once (413).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ...chunk.kernel import kept_shape
from ...chunk.partial import Partial
from ...protocol import BatchItem, BatchRequest, parse, resolve_shared
from ...servers.budget import MemoryBudget, Reservation
from ...servers.combine import Combiner, Encode, encode_answer
from ...servers.errors import BadRequest, TooLarge
from ..wire.messages import MAX_BATCH, MAX_BATCH_BODY, MAX_MEMORY, MEMORY_WAIT, partial_bytes
from .serving import cbor_response, item_error, operations

BUDGET = web.AppKey("budget", MemoryBudget)


@dataclass(frozen=True)
class ItemServer:
    """How one kind of server reads and reduces a batch item."""

    model: type[BatchItem]
    #: The bytes the item reads, known before reading.
    stored: Callable[[Any], int]
    read: Callable[[web.Request, Any], Awaitable[Any]]
    #: (partial, answer fields of this item even when combined); runs in a worker thread.
    reduce: Callable[[Any, Any], tuple[Partial, dict[str, Any]]]
    encode: Encode = encode_answer


def result_bytes(item: BatchItem) -> int:
    """Memory of an item's partial and its encoding: a count and each field per output cell."""
    assert item.shape is not None
    reduction = item.chunk_reduction(item.op, item.shape, ())
    selected = [len(range(*s)) for s in item.chunk_selection(item.shape)]
    cells = math.prod(kept_shape(selected, reduction.spec.reduced_axes))
    return partial_bytes(reduction.aggregation.words, cells)


def working_bytes(item: BatchItem, stored: int) -> int:
    """Memory an item holds while it is served: its bytes, three times what they decode to
    (decoded, selected, widened), its weights and groups, and its partial."""
    decoded = item.decoded_nbytes if item.codec_configs() else stored
    return stored + 3 * (decoded or 0) + item.extra_working_bytes + result_bytes(item)


def _results_bytes(items: dict[int, BatchItem], labels: Sequence[int] | None) -> int:
    """Memory of a batch's answers: one partial per label group, one per item alone."""
    if labels is None:
        return sum(map(result_bytes, items.values()))
    groups: dict[int, int] = {}
    for position, item in items.items():
        groups[labels[position]] = max(groups.get(labels[position], 0), result_bytes(item))
    return sum(groups.values())


async def bounded_body(request: web.Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it passes ``limit`` bytes."""
    if (request.content_length or 0) > limit:
        raise TooLarge(f"a batch body of {request.content_length} bytes is over the limit "
                       f"of {limit}")
    body = bytearray()
    async for data in request.content.iter_chunked(1 << 16):
        body += data
        if len(body) > limit:
            raise TooLarge(f"a batch body over the limit of {limit} bytes")
    return bytes(body)


async def _parse(request: web.Request, server: ItemServer
                 ) -> tuple[BatchRequest, dict[int, BatchItem], list[dict[str, Any]]]:
    """The batch, its valid items by position, and the answers of the invalid ones."""
    batch = parse(BatchRequest, await bounded_body(request, MAX_BATCH_BODY))
    if batch.absent:
        raise BadRequest("absent is not served here: the MDS says which files exist")
    if len(batch.requests) > MAX_BATCH:
        raise TooLarge(f"{len(batch.requests)} requests in a batch, over the limit of "
                       f"{MAX_BATCH}")
    answers: list[dict[str, Any]] = [{} for _ in batch.requests]
    items: dict[int, BatchItem] = {}
    for position, raw in enumerate(resolve_shared(batch.requests)):
        try:
            # Re-read as JSON so that the strict model applies JSON's rules (lists as tuples).
            items[position] = parse(server.model, json.dumps(raw), operations(request.app))
        except Exception as exc:
            answers[position] = item_error(exc)
    return batch, items, answers


async def serve_batch(request: web.Request, server: ItemServer) -> web.Response:
    """The answers to a batch, in order; one failing item does not fail the others."""
    batch, items, answers = await _parse(request, server)
    combiner = Combiner(batch.combine, items, server.encode)
    extra: dict[int, dict[str, Any]] = {}
    budget = request.app[BUDGET]
    biggest = max((working_bytes(i, server.stored(i)) for i in items.values()), default=0)
    results = _results_bytes(items, batch.combine)
    if results + biggest > budget.total:
        raise TooLarge(f"the batch needs {results + biggest} bytes of memory (its results and "
                       f"its largest item), more than the server's {budget.total}")

    async def serve(position: int, item: BatchItem, held: Reservation) -> None:
        stored = server.stored(item)
        await held.grow(working_bytes(item, stored))
        data = await server.read(request, item)
        partial, fields = await asyncio.to_thread(server.reduce, item, data)
        if combiner.combines(position):
            combiner.add(position, item, partial, stored)
            extra[position] = fields
            return
        answers[position] = {**server.encode(item.op, item, partial, batch.lean), **fields}

    async def one(position: int, item: BatchItem) -> None:
        try:
            async with budget.reservation() as held:
                await serve(position, item, held)
        except Exception as exc:
            answers[position] = item_error(exc)

    async with budget.reservation() as held_results:
        await held_results.grow(results)
        await asyncio.gather(*(one(p, i) for p, i in items.items()))
        # Lean answers leave ``stored_bytes`` out here: every request states the bytes it
        # reads (its ``extents``, or the ``size`` of a whole chunk).
        for position, answer in combiner.answers(batch.lean, tell_stored=False).items():
            answers[position] = {**answer, **extra.get(position, {})}
        return cbor_response(request, answers)


def add_batch_routes(app: web.Application, server: ItemServer) -> None:
    """``POST /v2/batch`` served by ``server``; before ``/v2/{op}``, which would match it."""
    app[BUDGET] = MemoryBudget(MAX_MEMORY, MEMORY_WAIT)

    async def handler(request: web.Request) -> web.Response:
        return await serve_batch(request, server)

    app.router.add_post("/v2/batch", handler)
    app.router.add_post("/v2/batch/", handler)

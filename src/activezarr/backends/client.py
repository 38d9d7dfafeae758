"""The client path: fetch stored chunks through the zarr store and reduce them here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from zarr.abc.store import RangeByteRequest
from zarr.buffer import default_buffer_prototype

from ..planning.array_layout import ArrayLayout
from ..planning.chunks import ChunkTask
from ..planning.cost import Traits
from ..transport import traffic
from .base import Backend, BatchResult, ChunkJob, backends, plain_framing


@backends.register("client")
class ClientBackend(Backend):
    """Works with any zarr store; also the fallback of every other backend."""

    name = "client"

    async def traits(self, layout: ArrayLayout) -> Traits:
        """The chunks themselves: the active path is the plain read."""
        return Traits(combines=False, batch_chunks=self.batch_chunks(layout.chunk_nbytes),
                      plain_framing=plain_framing(self.store), moves_chunks=True)

    async def _fetch(self, task: ChunkTask) -> tuple[bytes | None, int]:
        """The stored bytes of ``task`` (None if never written) and the bytes that moved."""
        byte_range = None
        if task.byte_range is not None:
            offset, length = task.byte_range
            byte_range = RangeByteRequest(offset, offset + length)
        with traffic.metered() as meter:  # each fetch runs in its own task: its own meter
            buffer = await self.store.get(task.key, prototype=default_buffer_prototype(),
                                          byte_range=byte_range)
        raw = None if buffer is None else buffer.to_bytes()
        # Over a watched network filesystem the meter saw the response with its framing;
        # otherwise (local files, memory) the bytes handed over are what moved.
        return raw, meter.nbytes or (len(raw) if raw is not None else 0)

    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        fetched = await asyncio.gather(*(self._fetch(t) for t in tasks))
        raws = [raw for raw, _ in fetched]
        partials = await asyncio.to_thread(
            lambda: [
                None if raw is None else job.kernel.reduce(raw, t.selection, t.key,
                                                           weights=t.weights, labels=t.labels,
                                                           spans=t.spans)
                for raw, t in zip(raws, tasks)
            ]
        )
        return BatchResult(partials, path=self.name,
                           bytes_stored=sum(len(r) for r in raws if r is not None),
                           bytes_from_storage=sum(moved for _, moved in fetched),
                           requests=len(tasks))


class PlainRead(ClientBackend):
    """The client path taken because the cost model found the active one would move more
    (not a fallback: nothing failed); its chunks count as the ``plain`` path."""

    name = "plain"

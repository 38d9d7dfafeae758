"""The client path: fetch stored chunks through the zarr store and reduce them here."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from zarr.abc.store import RangeByteRequest
from zarr.buffer import default_buffer_prototype

from ..planner import ChunkTask
from .base import Backend, BatchResult, ChunkJob, backends


@backends.register("client")
class ClientBackend(Backend):
    """Works with any zarr store; also the fallback of every other backend."""

    name = "client"

    async def _fetch(self, task: ChunkTask) -> bytes | None:
        byte_range = None
        if task.byte_range is not None:
            offset, length = task.byte_range
            byte_range = RangeByteRequest(offset, offset + length)
        buffer = await self.store.get(task.key, prototype=default_buffer_prototype(),
                                      byte_range=byte_range)
        return None if buffer is None else buffer.to_bytes()

    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        raws = await asyncio.gather(*(self._fetch(t) for t in tasks))
        partials = await asyncio.to_thread(
            lambda: [
                None if raw is None else job.kernel.reduce(raw, t.selection, t.key)
                for raw, t in zip(raws, tasks)
            ]
        )
        nbytes = sum(len(r) for r in raws if r is not None)
        return BatchResult(partials, path=self.name, bytes_stored=nbytes,
                           bytes_from_storage=nbytes, requests=len(tasks))

"""The S3 path: chunk requests to active servers (PROTOCOL.md) in front of the object store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import Any

from zarr.abc.store import Store

from ..errors import StorageUnavailableError
from ..planning.array_layout import ArrayLayout
from ..planning.chunks import ChunkTask
from ..planning.cost import HEADS_PER_LISTED_KEY, Traits
from .base import Backend, BatchResult, ChunkJob, backends, region_labels
from .credentials import S3Access, s3_access
from .servers import (
    ActiveServers,
    ServerOptions,
    collect,
    request_for,
    server_traits,
)


@backends.register("s3")
class S3Backend(Backend):
    """Reduces chunks of an s3fs-backed store on one or more active servers.

    Options: :class:`~.servers.ServerOptions` (``server`` and how to reach it).
    """

    name = "s3"
    combine_batch_bytes = 64 * 2**20
    options_model = ServerOptions
    options: ServerOptions

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(store, options)
        self.servers = ActiveServers(self.options)
        self.fs: Any = getattr(store, "fs", None)
        self.root = str(getattr(store, "root", "")).strip("/")
        self._access: asyncio.Future[S3Access] | None = None
        self._sizes: asyncio.Future[dict[str, int]] | None = None

    @classmethod
    def configured(cls, options: Mapping[str, Any]) -> bool:
        return bool(options.get("server"))

    async def traits(self, layout: ArrayLayout) -> Traits:
        """The servers' answers as their capability document says (our server's until it is
        fetched: combined, lean, unwritten chunks answered; the document then costs a read)."""
        return server_traits(self.servers, self.batch_chunks(layout.chunk_nbytes))

    async def _s3(self) -> S3Access:
        """Endpoint and credentials, resolved once per reduction."""
        if self._access is None:
            self._access = asyncio.ensure_future(s3_access(self.fs))
        return await asyncio.shield(self._access)

    # --- what is stored --------------------------------------------------------------------

    async def _stored_sizes(self, job: ChunkJob, keys: Sequence[str]) -> dict[str, int]:
        """Size of the stored chunks among ``keys``; those missing were never written and
        reduce as the fill value.

        One listing of the array when the selection touches a good part of it, else one
        HEAD per key: a point query on a million-chunk array costs one request, not a
        thousand pages of listing.
        """
        if job.chunks and job.chunks * HEADS_PER_LISTED_KEY <= job.layout.stored_objects:
            return await self._heads(keys)
        if self._sizes is None:
            self._sizes = asyncio.ensure_future(self._list(job))
        return await asyncio.shield(self._sizes)

    async def _heads(self, keys: Sequence[str]) -> dict[str, int]:
        """Sizes of ``keys`` that exist; only the store's own "no such key" means unwritten."""

        async def size(key: str) -> int | None:
            path = f"{self.root}/{key}"
            try:
                return int((await self.fs._info(path))["size"])
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StorageUnavailableError(f"cannot stat {path}: {exc}") from exc

        found = await asyncio.gather(*(size(k) for k in keys))
        return {k: n for k, n in zip(keys, found) if n is not None}

    async def _list(self, job: ChunkJob) -> dict[str, int]:
        """The listing's requests and bytes are counted by the engine's meter (traffic.py)."""
        ndim = len(job.layout.shape)
        keys = job.layout.chunk_key((0,) * ndim), job.layout.chunk_key((1,) * ndim)
        prefix = os.path.dirname(os.path.commonprefix(keys))
        base = f"{self.root}/{prefix}".rstrip("/")
        try:
            found = await self.fs._find(base, detail=True)
        except OSError as exc:
            raise StorageUnavailableError(f"cannot list {base}: {exc}") from exc
        start = len(self.root) + 1
        return {path[start:]: info["size"] for path, info in found.items()}

    # --- reducing --------------------------------------------------------------------------

    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        result = BatchResult([None] * len(tasks), path=self.name)
        access = await self._s3()
        spoken = await self.servers.spoken(result)
        extensions = spoken.extensions
        # A server that answers "no such key" as such saves finding which chunks exist.
        absent = {"absent", "lean", "batch"} <= set(extensions)
        whole = [t.key for t in tasks if t.byte_range is None]
        sizes = await self._stored_sizes(job, whole) if whole and not absent else {}
        planned = []
        for i, task in enumerate(tasks):
            if task.byte_range is None and not absent and task.key not in sizes:
                continue  # never written: the engine uses the fill value
            built = request_for(job, task, i, result, self.servers, spoken,
                                interface_type="s3", url=access.url(f"{self.root}/{task.key}"),
                                byte_range=task.byte_range)
            if built is None:
                continue
            stored = task.byte_range[1] if task.byte_range else sizes.get(task.key, 0)
            planned.append((i, *built, stored))
        labels = region_labels([tasks[i] for i, *_ in planned])
        answers = await self.servers.reduce([(op, body) for _, op, body, _ in planned],
                                            access.headers, result, labels, absent)
        collect(job, planned, answers, result)
        return result

    async def close(self) -> None:
        await self.servers.close()


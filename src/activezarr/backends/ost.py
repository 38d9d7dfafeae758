"""The ``ost`` path: each chunk reduces where the striped file system's layout says it should.

Uncompressed chunks reduce on every OST holding part of them, in parallel; the few elements
cut by stripe boundaries come back as bytes and are reduced here, exactly. A compressed chunk
inside one OST reduces on that OST; one spread over several goes to the OSS or to the client,
as ``active={"spread_compressed": "oss" | "client"}`` says (default ``oss``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from zarr.abc.store import Store

from ..chunk.partial import Partial
from ..chunk.parts import reduce_loose
from ..client.ost_filesystem import OSTFileSystem
from ..errors import ChunkDecodeError, UnsupportedArrayError
from ..planning.array_layout import ArrayLayout
from ..planning.chunks import ChunkTask
from ..planning.cost import PLAIN_RESULT_MAP, RESULT_MAP, Traits
from ..planning.placement import SPREAD_POLICIES, Placement, place
from ..protocol import build_request, partial_from_result
from ..servers.ost.messages import EXTENSIONS, PartRequest
from ..servers.ost.namespace import normalize
from ..servers.ost.striping import FileLayout, by_ost
from ..servers.ost.transport import RemoteError
from .base import Backend, BatchResult, ChunkJob, backends


@backends.register("ost")
class OSTBackend(Backend):
    """Reduces chunks of an ``ost://`` store on its OSTs, its OSS or the client, per layout.

    ``bytes_from_storage`` counts the LAN (storage to client); ``Report.links`` adds the OST
    disk reads and the storage network (OST to OSS), as the servers' ``/metrics`` also count.
    """

    name = "ost"
    #: One chunk per batch: each chunk picks its own path and the engine counts one per batch.
    max_batch_chunks = 1
    option_names = Backend.option_names | {"spread_compressed"}

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(store, options)
        fs = getattr(store, "fs", None)
        if not isinstance(fs, OSTFileSystem):
            raise UnsupportedArrayError("the ost backend needs a store on an ost:// file system")
        self.fs = fs
        self.client = fs.client
        self.root = normalize(str(getattr(store, "root", "")))
        self.spread = str(self.options.get("spread_compressed", "oss"))
        if self.spread not in SPREAD_POLICIES:
            raise ValueError(f"spread_compressed must be one of {SPREAD_POLICIES}, "
                             f"got {self.spread!r}")
        self._layouts: dict[str, asyncio.Future[FileLayout | None]] = {}

    async def traits(self, layout: ArrayLayout) -> Traits:
        """Answers counted as their CBOR bodies; an uncompressed chunk answers once per OST
        holding part of it (striped as this file system stripes), a compressed one once (its
        OST or the OSS). Batching, combining and lean answers as this class and the OSTs say."""
        cluster = await self.client.cluster()
        stripe = self.fs.stripe_size or cluster.stripe_size
        count = cluster.stripe_count if self.fs.stripe_count is None else self.fs.stripe_count
        count = len(cluster.osts) if count == -1 else count
        parts = 1 if layout.codecs else max(1, min(count, -(-layout.chunk_nbytes // stripe)))
        return Traits(combines=self.combine_batch_bytes > 0,
                      batch_chunks=self.batch_chunks(layout.chunk_nbytes),
                      encoding="lean" if "lean" in EXTENSIONS else "cbor", framing=0,
                      result_map=RESULT_MAP if "lean" in EXTENSIONS else PLAIN_RESULT_MAP,
                      answers_per_chunk=parts, plain_framing=0)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if self.root else key

    async def _layout(self, key: str) -> FileLayout | None:
        """The layout of the file holding ``key``, asked once per file; None if never written."""
        if key not in self._layouts:
            async def ask() -> FileLayout | None:
                entry = await self.client.stat(self._path(key))
                return None if entry is None else entry.layout

            self._layouts[key] = asyncio.ensure_future(ask())
        return await asyncio.shield(self._layouts[key])

    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        [task] = tasks
        layout = await self._layout(task.key)
        if layout is None:
            return BatchResult([None], path=self.name)
        offset, size = task.byte_range or (0, layout.size)
        compressed = bool(job.kernel.spec.codecs)
        if not compressed and size != job.kernel.nbytes:
            raise ChunkDecodeError(f"stored {size} bytes, expected {job.kernel.nbytes}", task.key)
        placement = place(layout, offset, size, compressed=compressed, spread=self.spread)
        # The OSTs read the chunk from disk on every path; the OSS path also carries it over the
        # storage network.
        links = Counter(disk_read=size, storage=size if placement.path == "oss" else 0)
        result = BatchResult([None], path=placement.path, bytes_stored=size, links=+links)
        partial: Partial | None
        try:
            if placement.path == "client":
                partial = await self._on_client(job, task, layout, placement, result)
            elif placement.path == "oss":
                partial = await self._on_oss(job, task, offset, size, result)
            else:
                partial = await self._on_osts(job, task, layout, placement, result)
        except RemoteError as exc:
            # Refused (a 4xx): the client reduces it, or says why it cannot.
            result.failed[0] = str(exc)
            partial = None
        if partial is None and not result.failed:
            result.failed[0] = f"the {placement.path} path cannot express this chunk's request"
        result.partials[0] = partial
        return result

    def _request(self, job: ChunkJob, task: ChunkTask, url: str,
                 byte_range: tuple[int, int] | None) -> tuple[str, dict[str, Any]] | None:
        """(op, body) in PROTOCOL.md terms; None when the protocol cannot say it."""
        return build_request(job.kernel.spec, task.selection, interface_type="ost", url=url,
                             byte_range=byte_range, extensions=EXTENSIONS,
                             weights=task.weights, labels=task.labels)

    async def _on_client(self, job: ChunkJob, task: ChunkTask, layout: FileLayout,
                         placement: Placement, result: BatchResult) -> Partial:
        offset, size = task.byte_range or (0, layout.size)
        raw = await self.client.gather(layout, offset, size)
        result.requests += len(placement.osts)
        result.bytes_from_storage += len(raw)
        return await asyncio.to_thread(lambda: job.kernel.reduce(
            raw, task.selection, task.key, weights=task.weights, labels=task.labels))

    async def _on_oss(self, job: ChunkJob, task: ChunkTask, offset: int, size: int,
                      result: BatchResult) -> Partial | None:
        cluster = await self.client.cluster()
        url = f"ost://{self.fs.host}/{self._path(task.key)}"
        built = self._request(job, task, url, (offset, size))
        if built is None or cluster.oss is None:
            return None
        op, body = built
        answer, nbytes = await self.client.reduce(cluster.oss, op, body)
        result.requests += 1
        result.bytes_from_storage += nbytes
        return partial_from_result(op, answer, job.kernel.spec)

    async def _on_osts(self, job: ChunkJob, task: ChunkTask, layout: FileLayout,
                       placement: Placement, result: BatchResult) -> Partial | None:
        """Every OST holding part of the chunk reduces its part; loose bytes are joined here."""
        if task.weights is not None or task.labels is not None:
            return None  # stripe parts are not whole selections: weights and groups go whole
        osts = (await self.client.cluster()).osts
        requests = []
        for ost, extents in by_ost(placement.extents).items():
            built = self._request(job, task, f"{osts[ost]}/objects/{layout.fid}", None)
            if built is None:
                return None
            op, body = built
            body["extents"] = PartRequest.extents_of(extents)
            requests.append(self.client.reduce(osts[ost], op, body))
        spec = job.kernel.spec
        partial: Partial | None = None
        loose: list[tuple[int, bytes]] = []
        for answer, nbytes in await asyncio.gather(*requests):
            result.requests += 1
            result.bytes_from_storage += nbytes
            loose.extend((start, data) for start, data in answer.get("loose", ()))
            part = partial_from_result(op, answer, spec)
            if partial is None:
                partial = part
            else:
                partial.merge(part)
        assert partial is not None
        if loose:
            partial.merge(reduce_loose(spec, task.selection, loose))
        return partial

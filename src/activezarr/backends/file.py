"""The POSIX path: read exact byte ranges beside the files and reduce them in a worker pool,
or have active servers that see the same files (``--allow-root``) read and reduce them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any
from urllib.parse import quote

import numpy as np
import zarr
from pydantic import Field
from zarr.abc.store import Store

from ..chunk.partial import Partial, owned
from ..chunk.spec import Selection
from ..errors import UnsupportedArrayError
from ..fileio import check_ranges, read_ranges_into
from ..planning.array_layout import ArrayLayout
from ..planning.chunks import ChunkTask
from ..planning.cost import Traits
from .base import Backend, BatchResult, ChunkJob, backends, region_labels
from .s3 import S3Backend
from .servers import ActiveServers, ServerOptions, reduce_targets, server_traits


class FileOptions(ServerOptions):
    """The file backend's ``active`` options: its pool's, and the servers' that see the same
    files (used when ``server`` is given)."""

    workers: int | None = Field(None, ge=1, description="threads reading and reducing chunks "
                                "(default: the CPUs, at most zarr's async.concurrency)")


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    # numcodecs and numpy release the GIL in decompression and reductions, so threads scale.
    return ThreadPoolExecutor(workers, thread_name_prefix="activezarr-file")


def _default_workers() -> int:
    """One thread per CPU, but no more than the batches a reduction keeps in flight.

    Threads beyond that do no extra work at once, yet each keeps a malloc arena holding freed
    chunk buffers, so peak memory would grow with the number of CPUs.
    """
    return max(1, min(os.cpu_count() or 1, int(zarr.config.get("async.concurrency") or 1)))


@dataclasses.dataclass(frozen=True)
class StoredChunk:
    """Where a chunk's stored bytes are: ``data`` itself (inlined), or ``byte_range`` (None:
    all) of the file ``path``. A missing file is a chunk never written, unless ``named``
    says which reference names it (then it is an error)."""

    path: str = ""
    byte_range: tuple[int, int] | None = None
    named: str | None = None
    data: bytes | None = None


#: The most stored bytes of a batch read into the buffer its pool thread keeps (reused, so
#: warm in the CPU's cache and never allocated again); a larger batch gets a buffer of its own.
KEPT_BUFFER_BYTES = 8 * 2**20
_kept = threading.local()


def _buffer(nbytes: int) -> memoryview:
    """A buffer of ``nbytes``: this thread's kept one if it is small enough."""
    if nbytes > KEPT_BUFFER_BYTES:
        return np.empty(nbytes, np.uint8).data
    kept: memoryview | None = getattr(_kept, "buffer", None)
    if kept is None or len(kept) < nbytes:
        kept = _kept.buffer = np.empty(max(nbytes, 2**20), np.uint8).data
    return kept[:nbytes]


def read_stored(sources: Sequence[StoredChunk]) -> list[Any]:
    """The stored bytes of each of ``sources``; None where its file does not exist.

    Each file is opened once and its ranges read in one call into this thread's buffer: the
    pieces are valid until the thread reads again, so the caller decodes them before it
    returns (partials are arrays of their own).
    """
    stored: list[Any] = [source.data for source in sources]
    files: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        if source.data is None:
            files.setdefault(source.path, []).append(i)
    with contextlib.ExitStack() as opened:
        reads = []  # (descriptor, path, size, positions, ranges), each range checked
        for path, positions in files.items():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            opened.callback(os.close, fd)
            size = os.fstat(fd).st_size
            ranges = [sources[i].byte_range or (0, size) for i in positions]
            check_ranges(ranges, path, size)  # before the buffer is sized by them
            reads.append((fd, path, size, positions, ranges))
        buffer = _buffer(sum(length for *_, ranges in reads for _, length in ranges))
        for fd, path, size, positions, ranges in reads:
            nbytes = sum(length for _, length in ranges)
            pieces = read_ranges_into(fd, ranges, path, size, buffer[:nbytes])
            buffer = buffer[nbytes:]
            for i, piece in zip(positions, pieces):
                stored[i] = piece
    return stored


@backends.register("file")
class FileBackend(Backend):
    """Reduces chunks of a local directory store in a bounded pool of worker threads, or, given
    ``server``, on active servers that read the same paths below their ``--allow-root`` (a
    file system shared with storage nodes: only partials cross the network).

    Options: :class:`FileOptions`.
    """

    name = "file"
    options_model = FileOptions
    options: FileOptions

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(store, options)
        root = getattr(store, "root", None)
        if root is None:
            raise UnsupportedArrayError("the file backend needs a store with a local 'root'")
        self.root = os.fspath(root)
        self.pool = _pool(self.options.workers or _default_workers())
        self.servers = ActiveServers(self.options) if self.options.server else None
        #: Whether chunks go to the servers (which combine): then batches as large as the s3
        #: backend's, one answer per output region and batch.
        self.on_servers = self.servers is not None

    # Per instance (the engine asks the instance): whether the servers take the chunks is
    # known once the backend is made.
    def batch_chunks(self, chunk_nbytes: int) -> int:  # type: ignore[override]
        return (S3Backend if self.on_servers else Backend).batch_chunks(chunk_nbytes)

    async def traits(self, layout: ArrayLayout) -> Traits:
        """Nothing crosses a network here: the partials are handed over from the worker pool
        (merged per output region and batch, arrays with int64 counts), and what the report
        counts is their size; a plain read would hand over the stored chunks instead, saving
        no link, so the pool is kept whatever the bytes. With ``server``, the servers answer
        (combined per output region) and a plain read would read the stored chunks."""
        if self.servers is not None:
            traits = server_traits(self.servers, self.batch_chunks(layout.chunk_nbytes))
            return dataclasses.replace(traits, probes=False, plain_framing=0, index_framing=None)
        return Traits(combines=True, batch_chunks=self.batch_chunks(layout.chunk_nbytes),
                      encoding="memory", framing=0, plain_framing=0, local=True)

    def _reduce_batch(self, job: ChunkJob, tasks: Sequence[ChunkTask],
                      sources: Sequence[StoredChunk]) -> BatchResult:
        """Partials of ``tasks`` (stored where ``sources`` say); those landing in one output
        region merged beside the files, so that only one per region and batch is handed over.
        The same selection of chunks landing in one region is reduced together
        (:meth:`.ChunkKernel.reduce_together`)."""
        kernel = job.kernel
        partials: list[Partial | None] = [None] * len(tasks)
        failed: dict[int, str] = {}
        combined: set[int] = set()
        holders: dict[int, Partial] = {}
        together: dict[tuple[int, Selection], list[tuple[int, Any]]] = {}
        stored = 0

        def hold(i: int, label: int, partial: Partial) -> None:
            if label in holders:
                holders[label].merge(partial)
                combined.add(i)
            else:
                partials[i] = holders[label] = owned(partial)

        for i, (task, label, source, raw) in enumerate(zip(tasks, region_labels(tasks), sources,
                                                           read_stored(sources))):
            if raw is None:
                if source.named is not None:
                    failed[i] = f"reference target {source.named!r} does not exist"
                continue
            stored += len(raw)
            if kernel.stacks(task.weights, task.labels):
                together.setdefault((label, task.selection), []).append((i, raw))
                continue
            hold(i, label, kernel.reduce(raw, task.selection, task.key, weights=task.weights,
                                         labels=task.labels, spans=task.spans))
        for (label, selection), chunks in together.items():
            for start in range(0, len(chunks), kernel.stack_chunks):
                group = chunks[start:start + kernel.stack_chunks]
                partial = kernel.reduce_together([raw for _, raw in group], selection,
                                                 [tasks[i].key for i, _ in group])
                hold(group[0][0], label, partial)
                combined.update(i for i, _ in group[1:])
        moved = sum(p.nbytes for p in holders.values())
        return BatchResult(partials, path=self.name, combined=combined, bytes_stored=stored,
                           bytes_from_storage=moved, requests=len(tasks) - len(failed),
                           failed=failed, links=Counter(disk_read=stored))

    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        if self.servers is None:
            return await self.in_pool(job, tasks, [
                StoredChunk(os.path.join(self.root, t.key), t.byte_range) for t in tasks])
        result = BatchResult([None] * len(tasks), path=self.name)
        targets = []
        for i, task in enumerate(tasks):
            path = os.path.abspath(os.path.join(self.root, task.key))
            if os.path.exists(path):  # else never written: the engine uses the fill value
                targets.append((i, "file", "file://" + quote(path), task.byte_range))
        await reduce_targets(self.servers, job, tasks, targets, {}, result)
        return result

    async def in_pool(self, job: ChunkJob, tasks: Sequence[ChunkTask],
                      sources: Sequence[StoredChunk]) -> BatchResult:
        """Partials of ``tasks``, stored where ``sources`` say, read and reduced in this
        process's worker pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self._reduce_batch, job, tasks, sources)

    async def close(self) -> None:
        if self.servers is not None:
            await self.servers.close()

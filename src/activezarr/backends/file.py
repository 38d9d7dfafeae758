"""The POSIX path: read exact byte ranges beside the files and reduce them in a worker pool,
or have active servers that see the same files (``--allow-root``) read and reduce them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any
from urllib.parse import quote

import zarr
from pydantic import Field
from zarr.abc.store import Store

from ..chunk.partial import Partial, owned
from ..chunk.spec import Selection
from ..errors import UnsupportedArrayError
from ..fileio import read_ranges
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


class OpenFiles(contextlib.AbstractContextManager["OpenFiles"]):
    """The files a batch reads, each opened once: a netCDF file holds every chunk of a batch,
    a directory store one per file."""

    def __init__(self) -> None:
        self._files: dict[str, tuple[int, int]] = {}  # path: (descriptor, size when opened)

    def read(self, path: str, byte_range: tuple[int, int] | None) -> bytes | None:
        """The bytes of ``byte_range`` (None: all) of ``path``; None if there is no such file."""
        opened = self._files.get(path)
        if opened is None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            opened = self._files[path] = (fd, os.fstat(fd).st_size)
        fd, size = opened
        [raw] = read_ranges(fd, [byte_range or (0, size)], path, size)
        return raw

    def __exit__(self, *exc: object) -> None:
        for fd, _ in self._files.values():
            os.close(fd)
        self._files.clear()


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

        with OpenFiles() as files:
            for i, (task, label, source) in enumerate(zip(tasks, region_labels(tasks), sources)):
                raw = source.data
                if raw is None:
                    raw = files.read(source.path, source.byte_range)
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

"""kerchunk references: each key names a byte range of another file, reduced beside that file.

Keys are resolved with fsspec's own reference semantics (templates, ``url=None``, a URL without
protocol going to the remote filesystem); each chunk then goes where its target lives: local
files are read and reduced here in the worker pool, ``s3://`` and ``http(s)://`` targets on the
active servers (all chunks of a batch in one ``/v2/batch``, whose ranges the server coalesces
into few reads of the target and whose partials it merges per output region).
"""

from __future__ import annotations

import asyncio
import dataclasses
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from fsspec.core import split_protocol
from zarr.abc.store import Store

from ..errors import StorageUnavailableError, UnsupportedArrayError
from ..planning.array_layout import ArrayLayout
from ..planning.chunks import ChunkTask
from ..planning.cost import Traits
from ..transport.traffic import protocols
from .base import BatchResult, ChunkJob, backends, plain_framing
from .credentials import S3Access, s3_access
from .file import FileBackend, StoredChunk
from .servers import reduce_targets, server_traits

_LOCAL = {"file", "local"}
_S3 = {"s3", "s3a"}
_HTTP = {"http", "https"}


def _has_remote_targets(fs: Any) -> bool:
    """Whether the references name targets on S3 or HTTP (fsspec opened a filesystem for them)."""
    return bool(protocols(fs) & (_S3 | _HTTP))


@backends.register("reference")
class ReferenceBackend(FileBackend):
    """Hands each chunk to the path of its target: this process's pool or an active server.

    Options: the file backend's (:class:`~.file.FileOptions`); those of the servers reach the
    targets on S3 or HTTP.
    """

    name = "reference"

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(store, options)
        fs = getattr(store, "fs", None)
        fs = getattr(fs, "sync_fs", fs)  # zarr wraps a synchronous reference filesystem
        if getattr(fs, "references", None) is None:
            raise UnsupportedArrayError("the reference backend needs a kerchunk reference store")
        self.fs: Any = fs
        self._access: dict[int, asyncio.Future[S3Access]] = {}
        self._filesystems: dict[str, Any] = {}
        self._paths: dict[str, str] = {}
        # Targets on S3 or HTTP go to the servers (few reads of each target, one answer per
        # region); local ones stay in this process's pool, in small batches over its workers.
        self.on_servers = self.servers is not None and _has_remote_targets(fs)

    async def traits(self, layout: ArrayLayout) -> Traits:
        """Targets on S3 or HTTP answer as the active servers do (labelled by output region,
        so that they combine); without a server their chunks come to the client. Local
        targets as the file backend's pool."""
        if not _has_remote_targets(self.fs):
            return await super().traits(layout)
        if self.servers is None:
            return Traits(combines=False, batch_chunks=self.batch_chunks(layout.chunk_nbytes),
                          plain_framing=plain_framing(self.store), moves_chunks=True)
        traits = server_traits(self.servers, self.batch_chunks(layout.chunk_nbytes))
        return dataclasses.replace(traits, probes=False, plain_framing=plain_framing(self.store))

    def _key(self, task: ChunkTask) -> str:
        return posixpath.join(self.root, task.key) if self.root else task.key

    def _target(self, task: ChunkTask) -> tuple[Any, int | None, int | None, Any]:
        """(bytes or URL, start, end, target filesystem) as fsspec resolves the reference.

        Raises FileNotFoundError when the references have no such key (never written).
        """
        start = end = None
        if task.byte_range is not None:
            start, end = task.byte_range[0], task.byte_range[0] + task.byte_range[1]
        url, start1, end1 = self.fs._cat_common(self._key(task), start, end)
        if isinstance(url, bytes):  # inlined data, base64 decoded by fsspec
            return url[start:end], None, None, None
        return url, start1, end1, self._filesystem(url)

    def _filesystem(self, url: str) -> Any:
        """The filesystem of a reference target, looked up once per URL (a netCDF file's
        references name that one file for each of its chunks)."""
        target = self._filesystems.get(url)
        if target is None:
            target = self.fs.fss.get(split_protocol(url)[0])
            if target is None:
                raise StorageUnavailableError(f"no filesystem for reference target {url!r}")
            target = self._filesystems[url] = getattr(target, "sync_fs", target)
        return target

    def _source(self, url: Any, start: int | None, end: int | None, target: Any) -> StoredChunk:
        """Where a local or inlined target's bytes are (the references name the file: if it
        is missing, that is an error, not a chunk never written)."""
        if target is None:
            return StoredChunk(data=url)
        byte_range = None if start is None or end is None else (start, end - start)
        path = self._paths.get(url)
        if path is None:
            path = self._paths[url] = target._strip_protocol(url)
        return StoredChunk(path, byte_range, named=url)

    async def _s3(self, fs: Any) -> S3Access:
        if id(fs) not in self._access:
            self._access[id(fs)] = asyncio.ensure_future(s3_access(fs))
        return await asyncio.shield(self._access[id(fs)])

    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        result = BatchResult([None] * len(tasks), path=self.name)
        here: dict[int, StoredChunk] = {}
        remote: dict[int, list[tuple[int, str, int | None, int | None, S3Access | None]]] = {}
        for i, task in enumerate(tasks):
            try:
                url, start, end, target = self._target(task)
            except FileNotFoundError:
                continue  # not in the references: never written, the fill value
            except StorageUnavailableError as exc:
                result.failed[i] = str(exc)
                continue
            kind = set() if target is None else protocols(target)
            if target is None or kind & _LOCAL:
                here[i] = self._source(url, start, end, target)
            elif not kind & (_S3 | _HTTP):
                result.failed[i] = (f"reference target {url!r} is on {min(kind)!r}, "
                                    "which has no active path")
            elif self.servers is None:
                result.failed[i] = (f"reference target {url!r} needs an active server: "
                                    "give active={'server': 'http://host:port'}")
            else:
                access = await self._s3(target) if kind & _S3 else None
                remote.setdefault(id(access), []).append((i, url, start, end, access))
        work = [self._on_servers(job, tasks, group, result) for group in remote.values()]
        if here:
            work.append(self._here(job, tasks, here, result))
        await asyncio.gather(*work)
        return result

    async def _here(self, job: ChunkJob, tasks: Sequence[ChunkTask], sources: dict[int, StoredChunk],
                    result: BatchResult) -> None:
        positions = list(sources)
        part = await self.in_pool(job, [tasks[i] for i in positions], list(sources.values()))
        for j, i in enumerate(positions):
            result.partials[i] = part.partials[j]
            if j in part.failed:
                result.failed[i] = part.failed[j]
            if j in part.combined:
                result.combined.add(i)
        result.bytes_stored += part.bytes_stored
        result.bytes_from_storage += part.bytes_from_storage
        result.bytes_to_storage += part.bytes_to_storage
        result.requests += part.requests
        result.links.update(part.links)

    async def _on_servers(self, job: ChunkJob, tasks: Sequence[ChunkTask],
                          group: list[tuple[int, str, int | None, int | None, S3Access | None]],
                          result: BatchResult) -> None:
        """The chunks of ``group`` (targets sharing credentials) on the servers."""
        assert self.servers is not None
        targets = []
        for i, url, start, end, access in group:
            if access is not None:
                interface, target = "s3", access.url(split_protocol(url)[1])
            else:
                interface, target = split_protocol(url)[0] or "https", url
            byte_range = None if start is None or end is None else (start, end - start)
            targets.append((i, interface, target, byte_range))
        access = group[0][4]
        await reduce_targets(self.servers, job, tasks, targets,
                             access.headers if access else {}, result)

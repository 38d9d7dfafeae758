"""kerchunk references: each key names a byte range of another file, reduced beside that file.

Keys are resolved with fsspec's own reference semantics (templates, ``url=None``, a URL without
protocol going to the remote filesystem); each chunk then goes where its target lives: local
files are read and reduced here in the worker pool, ``s3://`` and ``http(s)://`` targets on the
active servers (all chunks of a batch in one ``/v2/batch``, whose ranges the server coalesces).
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
from ..protocol import build_request
from .base import BatchResult, ChunkJob, backends, plain_framing
from .credentials import S3Access, s3_access
from .file import FileBackend, _read
from .servers import (
    CANNOT_EXPRESS,
    SERVER_OPTIONS,
    ActiveServers,
    collect,
    server_traits,
    server_urls,
)

_LOCAL = {"file", "local"}
_S3 = {"s3", "s3a"}
_HTTP = {"http", "https"}


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)


@backends.register("reference")
class ReferenceBackend(FileBackend):
    """Hands each chunk to the path of its target: this process's pool or an active server.

    Options: ``workers`` (as the file backend) and those of :class:`~.servers.ActiveServers`
    for targets on S3 or HTTP.
    """

    name = "reference"
    option_names = FileBackend.option_names | SERVER_OPTIONS

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(store, options)
        fs = getattr(store, "fs", None)
        fs = getattr(fs, "sync_fs", fs)  # zarr wraps a synchronous reference filesystem
        if getattr(fs, "references", None) is None:
            raise UnsupportedArrayError("the reference backend needs a kerchunk reference store")
        self.fs: Any = fs
        self.servers = ActiveServers(self.options) if self.options.get("server") else None
        self._access: dict[int, asyncio.Future[S3Access]] = {}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        super().check_options(options)
        server_urls(options.get("server"))

    async def traits(self, layout: ArrayLayout) -> Traits:
        """Targets on S3 or HTTP answer as the active servers do, one partial per chunk (these
        requests carry no region labels); without a server their chunks come to the client.
        Local targets as the file backend's pool."""
        remote = set().union(*(_protocols(fs) for fs in self.fs.fss.values())) & (_S3 | _HTTP)
        if not remote:
            return await super().traits(layout)
        if self.servers is None:
            return Traits(combines=False, batch_chunks=self.batch_chunks(layout.chunk_nbytes),
                          plain_framing=plain_framing(self.store), moves_chunks=True)
        traits = server_traits(self.servers, self.batch_chunks(layout.chunk_nbytes),
                               labelled=False)
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
        target = self.fs.fss.get(split_protocol(url)[0])
        if target is None:
            raise StorageUnavailableError(f"no filesystem for reference target {url!r}")
        return url, start1, end1, getattr(target, "sync_fs", target)

    def _read_task(self, task: ChunkTask) -> bytes | None:
        """Bytes of a local or inlined target (others never reach the pool)."""
        url, start, end, target = self._target(task)
        if target is None:
            return url
        byte_range = None if start is None or end is None else (start, end - start)
        raw = _read(target._strip_protocol(url), byte_range)
        if raw is None:  # a reference names this file: it is missing, not unwritten
            raise StorageUnavailableError(f"reference target {url!r} does not exist")
        return raw

    async def _s3(self, fs: Any) -> S3Access:
        if id(fs) not in self._access:
            self._access[id(fs)] = asyncio.ensure_future(s3_access(fs))
        return await asyncio.shield(self._access[id(fs)])

    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        result = BatchResult([None] * len(tasks), path=self.name)
        here: list[int] = []
        remote: dict[int, list[tuple[int, str, int | None, int | None, S3Access | None]]] = {}
        for i, task in enumerate(tasks):
            try:
                url, start, end, target = self._target(task)
            except FileNotFoundError:
                continue  # not in the references: never written, the fill value
            except StorageUnavailableError as exc:
                result.failed[i] = str(exc)
                continue
            kind = set() if target is None else _protocols(target)
            if target is None or kind & _LOCAL:
                here.append(i)
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

    async def _here(self, job: ChunkJob, tasks: Sequence[ChunkTask], positions: list[int],
                    result: BatchResult) -> None:
        part = await super().reduce(job, [tasks[i] for i in positions])
        for j, i in enumerate(positions):
            result.partials[i] = part.partials[j]
            if j in part.failed:
                result.failed[i] = part.failed[j]
            if j in part.combined:
                result.combined.add(i)
        result.bytes_stored += part.bytes_stored
        result.bytes_from_storage += part.bytes_from_storage
        result.requests += part.requests
        result.links.update(part.links)

    async def _on_servers(self, job: ChunkJob, tasks: Sequence[ChunkTask],
                          group: list[tuple[int, str, int | None, int | None, S3Access | None]],
                          result: BatchResult) -> None:
        """One request per chunk of ``group`` (targets sharing credentials), sent together."""
        assert self.servers is not None
        extensions = await self.servers.extensions(result)
        planned = []
        for i, url, start, end, access in group:
            if access is not None:
                interface, target = "s3", access.url(split_protocol(url)[1])
            else:
                interface, target = split_protocol(url)[0] or "https", url
            byte_range = None if start is None or end is None else (start, end - start)
            built = build_request(job.kernel.spec, tasks[i].selection, interface_type=interface,
                                  url=target, byte_range=byte_range, extensions=extensions,
                                  weights=tasks[i].weights, labels=tasks[i].labels)
            if built is None:
                result.failed[i] = CANNOT_EXPRESS
                continue
            planned.append((i, *built, byte_range[1] if byte_range else 0))
        access = group[0][4]
        answers = await self.servers.reduce([(op, body) for _, op, body, _ in planned],
                                            access.headers if access else {}, result)
        collect(job, planned, answers, result)

    async def close(self) -> None:
        if self.servers is not None:
            await self.servers.close()


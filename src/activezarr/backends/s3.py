"""The S3 path: chunk requests to active servers (PROTOCOL.md) in front of the object store."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import aiohttp
import cbor2
import zarr
from zarr.abc.store import Store

from ..errors import StorageUnavailableError
from ..planner import ChunkTask
from ..protocol import build_request, partial_from_result
from .base import Backend, BatchResult, ChunkJob, backends

DEFAULT_ENDPOINT = "https://s3.amazonaws.com"
SCHEMA_PATH = "/.well-known/reductionist-schema"
#: Server URL -> advertised extensions; the capability document is fetched once per process.
_capabilities: dict[str, tuple[str, ...]] = {}
#: Statuses worth retrying elsewhere or later; anything else is the server's final answer.
_RETRY_STATUSES = {502, 503, 504}
_LIST_PAGE = 1000


class _Failed(Exception):
    """A chunk the server refused for good (a 4xx): the client reduces it instead."""


@backends.register("s3")
class S3Backend(Backend):
    """Reduces chunks of an s3fs-backed store on one or more active servers.

    Options (``active={...}``): ``server`` (a URL or a list, used round-robin), ``concurrency``
    (HTTP requests at once; default zarr's ``async.concurrency``), ``retries`` (default 3),
    ``backoff`` (first retry delay in seconds, doubling; default 0.1), ``timeout`` (seconds).
    """

    name = "s3"

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(store, options)
        servers = self.options.get("server")
        servers = [servers] if isinstance(servers, str) else list(servers or ())
        self.servers = [s.rstrip("/") for s in servers]
        self._rotation = itertools.cycle(self.servers)
        fs = getattr(store, "fs", None)
        storage_options = getattr(store, "storage_options", {})
        self.fs = fs
        self.root = str(getattr(store, "root", "")).strip("/")
        self.endpoint = (getattr(fs, "endpoint_url", None)
                         or storage_options.get("endpoint_url")
                         or storage_options.get("client_kwargs", {}).get("endpoint_url")
                         or DEFAULT_ENDPOINT).rstrip("/")
        key = getattr(fs, "key", None) or storage_options.get("key")
        secret = getattr(fs, "secret", None) or storage_options.get("secret")
        self.headers = {"Authorization": aiohttp.encode_basic_auth(key, secret)} \
            if key and secret else {}
        self.concurrency = int(self.options.get("concurrency")
                               or zarr.config.get("async.concurrency"))
        self.retries = int(self.options.get("retries", 3))
        self.backoff = float(self.options.get("backoff", 0.1))
        self.timeout = aiohttp.ClientTimeout(total=float(self.options.get("timeout", 300)))
        self._session: aiohttp.ClientSession | None = None
        self._limit: asyncio.Semaphore | None = None
        self._sizes: asyncio.Future[dict[str, int]] | None = None

    @classmethod
    def configured(cls, options: Mapping[str, Any]) -> bool:
        return bool(options.get("server"))

    # --- HTTP ------------------------------------------------------------------------------

    def _http(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """The pooled session, made on first use so that it belongs to the running loop."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.concurrency)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
            self._limit = asyncio.Semaphore(self.concurrency)
        assert self._limit is not None
        return self._session, self._limit

    async def _call(self, method: str, path: str, tally: BatchResult, body: Any = None) -> bytes:
        """The body of a 200 from some server; retries 503s and connection errors with backoff.

        Every HTTP attempt is counted in ``tally.requests``.
        """
        session, limit = self._http()
        problem = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            server = next(self._rotation)
            tally.requests += 1
            try:
                async with limit, session.request(method, server + path, json=body,
                                                   headers=self.headers) as response:
                    answer = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{server}: {type(exc).__name__}: {exc}"
                continue
            if response.status == 200:
                return answer
            if response.status not in _RETRY_STATUSES:
                raise _Failed(f"{server}{path} answered {response.status}: {answer[:200]!r}")
            problem = f"{server} answered {response.status}"
        raise StorageUnavailableError(
            f"active servers {self.servers} unavailable after {self.retries + 1} attempts "
            f"({problem})"
        )

    async def _extensions(self, tally: BatchResult) -> tuple[str, ...]:
        """What the servers add to Reductionist v2 (none for a plain Reductionist)."""
        cached = _capabilities.get(self.servers[0])
        if cached is not None:
            return cached
        try:
            document = await self._call("GET", SCHEMA_PATH, tally)
            extensions = tuple(json.loads(document).get("extensions", ()))
        except (_Failed, ValueError):
            extensions = ()
        _capabilities[self.servers[0]] = extensions
        return extensions

    # --- what is stored --------------------------------------------------------------------

    def _url(self, key: str) -> str:
        return f"{self.endpoint}/{quote(f'{self.root}/{key}')}"

    async def _stored_sizes(self, job: ChunkJob, tally: BatchResult) -> dict[str, int]:
        """Size of every stored chunk of the array, by key: one listing, not one HEAD per chunk.

        Chunks missing from it were never written and reduce as the fill value.
        """
        if self._sizes is None:
            self._sizes = asyncio.ensure_future(self._list(job, tally))
        return await asyncio.shield(self._sizes)

    async def _list(self, job: ChunkJob, tally: BatchResult) -> dict[str, int]:
        ndim = len(job.layout.shape)
        keys = job.layout.chunk_key((0,) * ndim), job.layout.chunk_key((1,) * ndim)
        prefix = os.path.dirname(os.path.commonprefix(keys))
        base = f"{self.root}/{prefix}".rstrip("/")
        try:
            found = await self.fs._find(base, detail=True)
        except OSError as exc:
            raise StorageUnavailableError(f"cannot list {base}: {exc}") from exc
        tally.requests += max(1, math.ceil(len(found) / _LIST_PAGE))
        start = len(self.root) + 1
        return {path[start:]: info["size"] for path, info in found.items()}

    # --- reducing --------------------------------------------------------------------------

    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        result = BatchResult([None] * len(tasks), path=self.name)
        extensions = await self._extensions(result)
        whole = any(t.byte_range is None for t in tasks)
        sizes = await self._stored_sizes(job, result) if whole else {}
        planned = self._plan(job, tasks, sizes, extensions, result)
        answers = await self._send([(op, body) for _, op, body, _ in planned], extensions, result)
        for (i, op, _, stored), answer in zip(planned, answers):
            if answer is None:
                result.failed.append(i)
                continue
            result.partials[i] = partial_from_result(op, answer, job.kernel.spec)
            result.bytes_stored += stored
        result.failed.sort()
        return result

    def _plan(self, job: ChunkJob, tasks: Sequence[ChunkTask], sizes: Mapping[str, int],
              extensions: Sequence[str], result: BatchResult
              ) -> list[tuple[int, str, dict[str, Any], int]]:
        """(position, op, body, stored bytes) of each chunk the servers can reduce.

        Chunks never written stay None (the engine uses the fill value); chunks the servers
        cannot express go to ``result.failed`` for the client.
        """
        planned = []
        for i, task in enumerate(tasks):
            if task.byte_range is None and task.key not in sizes:
                continue
            built = build_request(job.kernel.spec, task.selection, interface_type="s3",
                                  url=self._url(task.key), byte_range=task.byte_range,
                                  extensions=extensions)
            if built is None:
                result.failed.append(i)
                continue
            stored = task.byte_range[1] if task.byte_range else sizes[task.key]
            planned.append((i, *built, stored))
        return planned

    async def _send(self, requests: list[tuple[str, dict[str, Any]]], extensions: Sequence[str],
                    result: BatchResult) -> list[Mapping[str, Any] | None]:
        """Response maps in order (None where the server refused); one batch when it can."""
        if len(requests) > 1 and "batch" in extensions:
            items = [{"op": op, **body} for op, body in requests]
            try:
                body = await self._call("POST", "/v2/batch", result, {"requests": items})
            except _Failed:
                return [None] * len(requests)
            result.bytes_from_storage += len(body)
            return [None if "error" in answer else answer for answer in cbor2.loads(body)]
        return list(await asyncio.gather(*(self._one(op, body, result) for op, body in requests)))

    async def _one(self, op: str, request: dict[str, Any],
                   result: BatchResult) -> Mapping[str, Any] | None:
        try:
            body = await self._call("POST", f"/v2/{op}", result, request)
        except _Failed:
            return None
        result.bytes_from_storage += len(body)
        return cbor2.loads(body)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

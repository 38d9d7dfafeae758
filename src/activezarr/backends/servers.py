"""Talking to active servers (PROTOCOL.md): rotation, failover, backoff, batching, byte counts.

A server that cannot be reached or times out is taken out of the rotation for the rest of the
reduction (one instance serves one reduction), so its chunks go to the live servers and a
stalled server costs one timeout, not one per batch. Overloaded answers (503) are retried after
a capped, jittered exponential backoff, or after the server's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import aiohttp
import cbor2
import numpy as np
import zarr
from pydantic import BeforeValidator, Field

from ..errors import StorageUnavailableError
from ..planning.chunks import ChunkTask
from ..planning.cost import CAPABILITIES, S3_FRAMING, Traits
from ..protocol import SCHEMA_PATH, V2_OPS, CannotExpress, build_request, share_weights
from ..transport.answers import error_message, excerpt
from ..transport.sessions import shared_session
from ..transport.traffic import framing
from .base import BatchResult, ChunkJob, Options, region_labels

#: Seconds a request may take, whole; the server's own request timeout is shorter (60 s by
#: default), so a slow object store comes back as the server's answer, not as a dead server.
DEFAULT_TIMEOUT = 120.0
#: Why a chunk goes to the client when the protocol the servers speak cannot describe it;
#: the field that decided it follows.
CANNOT_EXPRESS = "the active server cannot take this chunk"
#: Server URL -> capability document; fetched once per process.
_capabilities: dict[str, Mapping[str, Any]] = {}
#: Server URL -> what it answered instead of a capability document (perhaps no active server).
_not_documented: dict[str, str] = {}
#: Statuses worth retrying later; anything else is the server's final answer. A 504 is not
#: retried: the server (or a gateway before it) stopped the work at its deadline, and the same
#: work would meet the same deadline again; its chunks go to the fallback, the 504's message
#: (naming the server's ``--request-timeout``) the recorded reason.
_RETRY_STATUSES = {502, 503}
#: The rotation over the servers, shared by every reduction in the process and begun at random:
#: reductions of a batch or two each (dask leaves, one chunk apiece) would otherwise all send
#: their first request to the same server, and the others would idle.
_turns = itertools.count(random.randrange(2**16))


@dataclass(frozen=True)
class Spoken:
    """What a server's capability document says it takes."""

    extensions: tuple[str, ...]
    operations: tuple[str, ...]


def request_for(job: ChunkJob, task: ChunkTask, position: int, result: BatchResult,
                servers: ActiveServers, spoken: Spoken, *, interface_type: str, url: str,
                byte_range: tuple[int, int] | None) -> tuple[str, dict[str, Any]] | None:
    """(op, body) of ``task``'s request, or None with the reason its chunk goes to the client
    recorded in ``result``."""
    try:
        return build_request(job.kernel.spec, task.selection, interface_type=interface_type,
                             url=url, byte_range=byte_range, extensions=spoken.extensions,
                             operations=spoken.operations, weights=task.weights,
                             labels=task.labels, spans=task.spans)
    except CannotExpress as exc:
        result.failed[position] = servers.cannot_take(str(exc))
        return None


@dataclass(frozen=True)
class Refused:
    """A request the server answered with an error: the reason is its message."""

    reason: str


@dataclass(frozen=True)
class Combined:
    """A request whose partial the server merged into another request's answer."""

    stored_bytes: int | None = None


@dataclass(frozen=True)
class Absent:
    """A request for an object the store says does not exist: a chunk never written."""


Answer = Mapping[str, Any] | Refused | Combined | Absent


def _answer(item: Mapping[str, Any]) -> Answer:
    """One item of a batch's answer as the client handles it."""
    if "error" in item:
        return Refused(_item_message(item))
    if "combined" in item:
        return Combined(item.get("stored_bytes"))
    return Absent() if item.get("absent") is True else item


class _RefusedError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def server_urls(value: Any) -> tuple[str, ...]:
    """The ``server`` option as URLs; a URL without http(s):// is an error."""
    servers = [value] if isinstance(value, str) else list(value or ())
    for url in servers:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"active server {url!r} is not an http(s) URL; "
                             f"write it as e.g. 'http://{parts.path or url}'")
    return tuple(str(url).rstrip("/") for url in servers)


class ServerOptions(Options):
    """The ``active`` options of the backends that talk to active servers."""

    server: Annotated[tuple[str, ...], BeforeValidator(server_urls)] = Field(
        (), description="active server URL, or a list used round-robin")
    concurrency: int | None = Field(None, ge=1, description="requests at once (default: "
                                    "zarr's async.concurrency)")
    retries: int = Field(3, ge=0, description="attempts after the first, for a 502 or 503")
    backoff: float = Field(0.1, ge=0, description="first delay before a retry, in seconds, "
                           "doubling, with jitter")
    backoff_cap: float = Field(5.0, ge=0, description="longest delay before a retry, seconds")
    timeout: float = Field(DEFAULT_TIMEOUT, gt=0, description="seconds per request, whole")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to connect to a server")


def _message(body: bytes, status: int, url: str) -> str:
    """The server's error message (PROTOCOL.md's JSON error), or, from something that is no
    active server (an S3 endpoint, a web page), the URL and what it answered."""
    return error_message(body) or (f"{url} answered HTTP {status} ({excerpt(body)!r}), not an "
                                   "active server's JSON error")


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


class ActiveServers:
    """The HTTP client of one reduction to its active servers.

    Configured by :class:`ServerOptions`: requests rotate over its servers, and a batch is
    cut into a share per live server.
    """

    def __init__(self, options: ServerOptions) -> None:
        self.servers = list(options.server)
        self.live = list(self.servers)
        self.dropped: dict[str, str] = {}
        self.concurrency = options.concurrency or int(zarr.config.get("async.concurrency"))
        self.retries = options.retries
        self.backoff = options.backoff
        self.backoff_cap = options.backoff_cap
        self.timeout = aiohttp.ClientTimeout(total=options.timeout,
                                             sock_connect=options.connect_timeout)
        self._limit: asyncio.Semaphore | None = None

    def _http(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """The session shared with the other reductions on this loop (its connections stay
        open from one reduction to the next), and this reduction's request limit."""
        if self._limit is None:
            self._limit = asyncio.Semaphore(self.concurrency)
        return shared_session(self.concurrency, self.timeout), self._limit

    def _pick(self) -> str:
        if not self.live:
            problems = "; ".join(f"{s}: {p}" for s, p in self.dropped.items())
            raise StorageUnavailableError(f"no active server left ({problems})")
        return self.live[next(_turns) % len(self.live)]

    def _drop(self, server: str, problem: str) -> None:
        if server in self.live:
            self.live.remove(server)
            self.dropped[server] = problem

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.backoff_cap, retry_after)
        return random.uniform(0, min(self.backoff_cap, self.backoff * 2 ** (attempt - 1)))

    async def call(self, method: str, path: str, tally: BatchResult, body: Any = None,
                   headers: Mapping[str, str] | None = None) -> bytes:
        """The body of a 200 from some live server; counts every attempt and byte in ``tally``.

        Raises :class:`_RefusedError` for a final error answer, StorageUnavailableError when no
        server could answer.
        """
        session, limit = self._http()
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}
        problem = "no attempt"
        retry_after: float | None = None
        wait = False  # after a dropped server the next live one is asked at once
        for attempt in range(self.retries + 1):
            if wait:
                await asyncio.sleep(self._delay(attempt, retry_after))
            server = self._pick()
            tally.requests += 1
            tally.bytes_to_storage += len(data or b"")
            try:
                async with limit, session.request(method, server + path, data=data,
                                                   headers=headers) as response:
                    answer = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}".rstrip(": ")
                self._drop(server, problem)
                wait = False
                continue
            tally.bytes_from_storage += framing(response.status, response.reason,
                                                response.raw_headers) + len(answer)
            if response.status == 200:
                return answer
            message = _message(answer, response.status, server + path)
            if response.status not in _RETRY_STATUSES:
                raise _RefusedError(message)
            problem = f"{server} answered {response.status}: {message}"
            retry_after, wait = _retry_after(response), True
        raise StorageUnavailableError(
            f"active servers {self.servers} unavailable after {self.retries + 1} attempts "
            f"({problem})")

    async def capabilities(self, tally: BatchResult) -> Mapping[str, Any]:
        """The capability document of the first server (empty for a plain Reductionist)."""
        cached = _capabilities.get(self.servers[0])
        if cached is None:
            answer: Any = None
            try:
                answer = await self.call("GET", SCHEMA_PATH, tally)
                document = json.loads(answer)
            except _RefusedError as exc:
                document, answer = None, exc.reason
            except ValueError:
                document = None
                answer = f"GET {SCHEMA_PATH} answered {excerpt(answer)!r}, not JSON"
            cached = document if isinstance(document, dict) else {}
            if not cached and isinstance(answer, str):
                _not_documented[self.servers[0]] = answer
            _capabilities[self.servers[0]] = cached
        return cached

    def cannot_take(self, reason: str) -> str:
        """Why a chunk goes to the client when no request can describe it: ``reason`` (the
        field that decided it) and, where the server gave no capability document, its answer,
        for a URL that is no active server at all shows there."""
        server = self.servers[0]
        said = _not_documented.get(server)
        if said is None:
            return f"{CANNOT_EXPRESS}: {reason}"
        return (f"{CANNOT_EXPRESS}: is {server} an active server? Asked for its capabilities, "
                f"{said}; without them, {reason}")

    async def extensions(self, tally: BatchResult) -> tuple[str, ...]:
        """What the servers add to Reductionist v2 (none for a plain Reductionist)."""
        return tuple((await self.capabilities(tally)).get("extensions", ()))

    async def spoken(self, tally: BatchResult) -> Spoken:
        """The extensions and operations the servers advertise (the plugin reductions their
        operator loaded among the operations)."""
        capabilities = await self.capabilities(tally)
        return Spoken(tuple(capabilities.get("extensions", ())),
                      tuple(capabilities.get("operations", V2_OPS)))

    async def reduce(self, requests: Sequence[tuple[str, dict[str, Any]]],
                     headers: Mapping[str, str], tally: BatchResult,
                     labels: Sequence[int] | None = None, absent: bool = False
                     ) -> list[Answer]:
        """Response maps in order, or why the server refused; one ``/v2/batch`` when it can.

        Requests sharing a label in ``labels`` (their output region) are merged storage-side
        where the server can (``combine``): one answers for all, the others are Combined.
        With ``absent`` (the caller checks the server advertises it), objects the store says
        do not exist are answered Absent.
        """
        capabilities = await self.capabilities(tally)
        extensions = capabilities.get("extensions", ())
        if (len(requests) > 1 or absent) and "batch" in extensions:
            limits = capabilities.get("limits", {})
            items = [{"op": op, **body} for op, body in requests]
            # one batch per live server at least, so that a reduction of a single batch
            # (an array below the backend's batch bytes) is shared by all of them
            share = -(-len(items) // max(1, len(self.live)))
            groups = within_limits(items, min(int(limits.get("max_batch", 1024)), share),
                                   int(limits.get("max_body", 4 * 2**20)),
                                   limits.get("max_request_decoded_bytes"))
            extra: dict[str, Any] = {"lean": True} if "lean" in extensions else {}
            if absent:
                extra["absent"] = True
            combine = labels is not None and "combine" in extensions
            starts = list(itertools.accumulate((len(g) for g in groups), initial=0))
            answers = await asyncio.gather(*(
                self._batch(g, headers, tally, {
                    **extra, **({"combine": list(labels[i:i + len(g)])}  # type: ignore[index]
                                if combine else {})})
                for g, i in zip(groups, starts)))
            return [answer for group in answers for answer in group]
        return list(await asyncio.gather(*(self._one(op, body, headers, tally)
                                           for op, body in requests)))

    async def _batch(self, items: list[dict[str, Any]], headers: Mapping[str, str],
                     tally: BatchResult, extra: Mapping[str, Any]) -> list[Answer]:
        """Answers to ``items``; items the server could not serve for now (a 503 for an
        unreachable object store) are sent again after a backoff, up to ``retries`` times.
        ``extra`` are the batch-level extension fields (``lean``, ``combine``)."""
        answers: list[Answer] = [Refused("not sent")] * len(items)
        pending = list(range(len(items)))
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self._delay(attempt, None))
            fields = dict(extra)
            if "combine" in fields:
                fields["combine"] = [extra["combine"][i] for i in pending]
            try:
                body = await self.call("POST", "/v2/batch", tally,
                                       {"requests": share_weights([items[i] for i in pending]),
                                        **fields},
                                       headers)
            except _RefusedError as exc:
                for i in pending:
                    answers[i] = Refused(exc.reason)
                break
            again = []
            try:
                decoded = self._cbor(body, "/v2/batch")
            except _RefusedError as exc:
                for i in pending:
                    answers[i] = Refused(exc.reason)
                break
            for i, answer in zip(pending, decoded):
                answers[i] = _answer(answer)
                if "error" in answer and answer.get("status") in _RETRY_STATUSES:
                    again.append(i)
            pending = again
            if not pending:
                break
        return answers

    async def _one(self, op: str, body: dict[str, Any], headers: Mapping[str, str],
                   tally: BatchResult) -> Answer:
        try:
            answer = await self.call("POST", f"/v2/{op}", tally, body, headers)
            return self._cbor(answer, f"/v2/{op}")
        except _RefusedError as exc:
            return Refused(exc.reason)

    def _cbor(self, body: bytes, path: str) -> Any:
        """A 200's CBOR body; from something that is no active server (a web page answering
        every path), a refusal saying so."""
        try:
            return cbor2.loads(body)
        except (cbor2.CBORDecodeError, ValueError):
            raise _RefusedError(f"the answer to POST {path} is not CBOR ({excerpt(body)!r}): is "
                                f"{', '.join(self.servers)} an active server?") from None

    async def close(self) -> None:
        """Nothing to release: the session is shared, and closed at exit."""


def server_traits(servers: ActiveServers, batch_chunks: int, labelled: bool = True) -> Traits:
    """How ``servers`` answer, for the cost model: from their capability document once fetched
    (the first reduction fetches it: that read is counted), else as our server answers.
    ``labelled``: the backend labels requests by output region, so that the server combines."""
    cached = _capabilities.get(servers.servers[0])
    extensions = set(cached.get("extensions", ())) if cached is not None else {
        "batch", "combine", "lean", "absent", "weights-packed"}
    combines = labelled and {"batch", "combine"} <= extensions
    return Traits(combines=combines, batch_chunks=batch_chunks if "batch" in extensions else 1,
                  encoding="lean" if {"batch", "lean"} <= extensions else "cbor",
                  setup_bytes=CAPABILITIES if cached is None else 0,
                  probes=not {"absent", "lean", "batch"} <= extensions,
                  packs_weights="weights-packed" in extensions,
                  index_framing=S3_FRAMING)


def within_limits(items: list[dict[str, Any]], max_items: int, max_body: int,
                  max_decoded: int | None = None) -> list[list[dict[str, Any]]]:
    """``items`` in consecutive groups that fit the server's batch and body limits, and the
    bytes one request may decode (``max_decoded``, when the server publishes it)."""
    groups: list[list[dict[str, Any]]] = [[]]
    size, decoded, room = 0, 0, max_body - 64  # the envelope {"requests": [...]}
    for item in items:
        length = len(json.dumps(item)) + 2
        item_decoded = _decoded_nbytes(item)
        if groups[-1] and (len(groups[-1]) >= max_items or size + length > room or (
                max_decoded is not None and decoded + item_decoded > max_decoded)):
            groups.append([])
            size = decoded = 0
        groups[-1].append(item)
        size += length
        decoded += item_decoded
    return groups


def _decoded_nbytes(item: Mapping[str, Any]) -> int:
    """The bytes a request's chunk decodes to (0 when it names no shape: the server bounds it)."""
    shape = item.get("shape")
    return math.prod(shape) * np.dtype(item["dtype"]).itemsize if shape is not None else 0


def _item_message(answer: Mapping[str, Any]) -> str:
    error = answer.get("error") or {}
    return str(error.get("message") if isinstance(error, Mapping) else error)


def collect(job: ChunkJob, planned: Sequence[tuple[int, str, dict[str, Any], int]],
            answers: Sequence[Answer], result: BatchResult) -> None:
    """Put the servers' answers to ``planned`` (position, op, body, stored bytes) in ``result``."""
    for (i, _, _, stored), answer in zip(planned, answers):
        if isinstance(answer, Refused):
            result.failed[i] = answer.reason
            continue
        if isinstance(answer, Absent):
            continue  # never written: the engine uses the fill value
        if isinstance(answer, Combined):
            result.combined.add(i)
            told = answer.stored_bytes
        else:
            result.partials[i] = job.kernel.read(answer)
            told = answer.get("stored_bytes")
        result.bytes_stored += stored if told is None else int(told)



#: A chunk a server reads itself: (batch position, interface type, URL, byte range or None).
Target = tuple[int, str, str, tuple[int, int] | None]


async def reduce_targets(servers: ActiveServers, job: ChunkJob, tasks: Sequence[ChunkTask],
                         targets: Sequence[Target], headers: Mapping[str, str],
                         result: BatchResult) -> None:
    """One request per target, sent together (one ``/v2/batch`` where the servers take it);
    partials landing in one output region are merged by the server."""
    spoken = await servers.spoken(result)
    planned = []
    for i, interface, url, byte_range in targets:
        built = request_for(job, tasks[i], i, result, servers, spoken, interface_type=interface,
                            url=url, byte_range=byte_range)
        if built is None:
            continue
        planned.append((i, *built, byte_range[1] if byte_range else 0))
    labels = region_labels([tasks[i] for i, *_ in planned])
    answers = await servers.reduce([(op, body) for _, op, body, _ in planned], headers, result,
                                   labels)
    collect(job, planned, answers, result)

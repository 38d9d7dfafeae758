"""Talking to active servers (PROTOCOL.md): rotation, failover, batching, byte counts.

Requests go through :mod:`activezarr.transport.http`, whose rules they share with the ost
cluster's client: connections refused or reset and 502/503 answers are tried again (after the
server's ``Retry-After``, if it gave one), a server silent for ``read_timeout`` must answer its
``/healthz``. A server that cannot be reached, stalls or times out is taken out of the rotation
for the rest of the reduction (one instance serves one reduction), so its chunks go to the live
servers and a stalled server costs one wait, not one per batch; later reductions of the process
skip it for ``stall_memory`` seconds, so that a dask computation, one reduction per task, does
not pay that wait once per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

import cbor2
import numpy as np
import zarr
from pydantic import BeforeValidator, Field
from tenacity import retry_if_exception_type

from ..errors import StorageUnavailableError
from ..planning.chunks import ChunkTask
from ..planning.cost import CAPABILITIES, S3_FRAMING, Traits
from ..protocol import SCHEMA_PATH, V2_OPS, CannotExpress, build_request, share_weights
from ..transport.answers import error_message, excerpt
from ..transport.http import (
    RETRIED_STATUSES,
    HttpClient,
    Retries,
    ServerUnavailableError,
    StallMemory,
    Timeouts,
    remember_unavailable,
)
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
#: The rotation over the servers, shared by every reduction in the process and begun at random:
#: reductions of a batch or two each (dask leaves, one chunk apiece) would otherwise all send
#: their first request to the same server, and the others would idle.
_turns = itertools.count(random.randrange(2**16))
#: The servers found stalled or unreachable by any reduction of this process: each later one
#: skips them for its ``stall_memory``.
_stalled = StallMemory()


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


class _ItemsBusy(Exception):
    """Items of a batch answered 502 or 503: sent again."""


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
    retries: int = Field(Retries.retries, ge=0, description="attempts after the first, for a "
                         "connection refused or reset, a 502 or a 503")
    retry_within: float = Field(Retries.within, gt=0, description="seconds from a request's "
                                "first attempt after which no retry starts")
    backoff: float = Field(Retries.backoff, ge=0, description="first delay before a retry, in "
                           "seconds, doubling, with jitter")
    backoff_cap: float = Field(Retries.backoff_cap, ge=0, description="longest delay before a "
                               "retry, seconds (a server's Retry-After is followed as given)")
    timeout: float = Field(DEFAULT_TIMEOUT, gt=0, description="seconds per request, whole")
    connect_timeout: float = Field(10.0, gt=0, description="seconds to connect to a server")
    read_timeout: float = Field(Timeouts.read, gt=0, description="seconds a server may "
                                "keep silent before its /healthz must answer within as long; "
                                "a server that does not is dropped for the reduction")
    stall_memory: float = Field(30.0, ge=0, description="seconds a server found stalled or "
                                "unreachable is skipped by later reductions of this process "
                                "too, e.g. every dask task of a computation (0: only by the "
                                "reduction that found it)")

    def http(self, concurrency: int) -> HttpClient:
        """The HTTP client these options describe, ``concurrency`` requests at once."""
        return HttpClient(Timeouts(self.timeout, self.connect_timeout, self.read_timeout),
                          Retries(self.retries, self.retry_within, self.backoff,
                                  self.backoff_cap), concurrency, limit=concurrency)


def _message(body: bytes, status: int, url: str) -> str:
    """The server's error message (PROTOCOL.md's JSON error), or, from something that is no
    active server (an S3 endpoint, a web page), the URL and what it answered."""
    return error_message(body) or (f"{url} answered HTTP {status} ({excerpt(body)!r}), not an "
                                   "active server's JSON error")


class ActiveServers:
    """The HTTP client of one reduction to its active servers.

    Configured by :class:`ServerOptions`: requests rotate over its servers, and a batch is
    cut into a share per live server.
    """

    def __init__(self, options: ServerOptions) -> None:
        self.servers = list(options.server)
        # Made in its reduction's task: the servers it finds unavailable, its fallback too.
        self.dropped = remember_unavailable()
        self.stall_memory = options.stall_memory
        for server in self.servers:
            reason = _stalled.recall(server, self.stall_memory)
            if reason is not None:
                self.dropped[server] = reason
        self.concurrency = options.concurrency or int(zarr.config.get("async.concurrency"))
        self.http = options.http(self.concurrency)

    @property
    def live(self) -> list[str]:
        """The servers not dropped for this reduction."""
        return [s for s in self.servers if s not in self.dropped]

    def _pick(self) -> str:
        live = self.live
        if not live:
            problems = "; ".join(f"{s}: {p}" for s, p in self.dropped.items())
            raise StorageUnavailableError(f"no active server left ({problems})")
        return live[next(_turns) % len(live)]

    async def call(self, method: str, route: str, tally: BatchResult, body: Any = None,
                   headers: Mapping[str, str] | None = None) -> bytes:
        """The body of a 200 from some live server; counts every attempt and byte in ``tally``.

        A server that cannot be reached, stalls or times out is dropped, and the next live one
        asked. Raises :class:`_RefusedError` for a final error answer, StorageUnavailableError
        when no server could answer.
        """
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers = {**(headers or {}), "Content-Type": "application/json"}

        def count(nbytes: int) -> None:
            tally.requests += 1
            tally.bytes_to_storage += len(data or b"")
            tally.bytes_from_storage += nbytes

        while True:
            server = self._pick()
            try:
                reply = await self.http.send(method, server, route, down=self.dropped,
                                             counted=count, data=data, headers=headers)
            except ServerUnavailableError as exc:
                if not exc.known:
                    _stalled.remember(server, exc.reason)
                continue  # dropped: the next live server
            if reply.status == 200:
                return reply.body
            message = _message(reply.body, reply.status, server + route)
            if reply.status in RETRIED_STATUSES:
                raise StorageUnavailableError(
                    f"active server {server} still answered {reply.status} when its retries "
                    f"(the 'retries' and 'retry_within' options) were spent: {message}")
            raise _RefusedError(message)

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
        with contextlib.suppress(_ItemsBusy):  # when the retries are spent: their 503s
            async for attempt in self.http.retries.retrying(retry_if_exception_type(_ItemsBusy)):
                with attempt:
                    pending = await self._send_pending(items, pending, answers, headers, tally,
                                                       extra)
                    if pending:
                        raise _ItemsBusy
        return answers

    async def _send_pending(self, items: list[dict[str, Any]], pending: list[int],
                            answers: list[Answer], headers: Mapping[str, str],
                            tally: BatchResult, extra: Mapping[str, Any]) -> list[int]:
        """Send the ``pending`` items of ``items``, put their answers in ``answers``; the items
        to send again (answered 502 or 503)."""
        fields = dict(extra)
        if "combine" in fields:
            fields["combine"] = [extra["combine"][i] for i in pending]
        try:
            body = await self.call("POST", "/v2/batch", tally,
                                   {"requests": share_weights([items[i] for i in pending]),
                                    **fields}, headers)
            decoded = self._cbor(body, "/v2/batch")
        except _RefusedError as exc:
            for i in pending:
                answers[i] = Refused(exc.reason)
            return []
        again = []
        for i, answer in zip(pending, decoded):
            answers[i] = _answer(answer)
            if "error" in answer and answer.get("status") in RETRIED_STATUSES:
                again.append(i)
        return again

    async def _one(self, op: str, body: dict[str, Any], headers: Mapping[str, str],
                   tally: BatchResult) -> Answer:
        try:
            answer = await self.call("POST", f"/v2/{op}", tally, body, headers)
            return self._cbor(answer, f"/v2/{op}")
        except _RefusedError as exc:
            return Refused(exc.reason)

    def _cbor(self, body: bytes, route: str) -> Any:
        """A 200's CBOR body; from something that is no active server (a web page answering
        every route), a refusal saying so."""
        try:
            return cbor2.loads(body)
        except (cbor2.CBORDecodeError, ValueError):
            raise _RefusedError(f"the answer to POST {route} is not CBOR ({excerpt(body)!r}): is "
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

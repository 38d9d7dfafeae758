"""HTTP between the parts of the cluster, with errors that name the server that failed."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import cbor2

from ...errors import CredentialsError, StorageUnavailableError
from ...servers.errors import ServerError
from ...transport.answers import error_message, excerpt
from ...transport.http import (
    DEFAULT_READ_TIMEOUT,
    RETRIED_STATUSES,
    HttpClient,
    Retries,
    ServerUnavailableError,
    StallMemory,
    Timeouts,
    remembered,
)
from .layouts import CBOR, decode_layouts
from .messages import LINK_HEADER, TOKEN_HEADER, TOKEN_VARIABLE, ClusterMap, Entry
from .ratelimit import RateLimiter
from .striping import Extent, FileLayout, by_ost

#: Seconds a request may take, whole: a large batch on a slow disk takes a while.
DEFAULT_TIMEOUT = 30.0
#: Seconds to connect to a server.
DEFAULT_CONNECT_TIMEOUT = 3.0
#: Connections open at once to the cluster's servers, per event loop (aiohttp's default).
CONNECTIONS = 100
#: One LAN per cluster (keyed by MDS URL), shared by every client of this process.
_lans: dict[str, RateLimiter] = {}
#: Tokens of the clusters this process started, by MDS URL (see :func:`register_token`).
_tokens: dict[str, str] = {}


def register_token(mds: str, token: str) -> None:
    """Let clients in this process write to the cluster whose MDS is at ``mds``."""
    _tokens[mds.rstrip("/")] = token


def token_for(mds: str) -> str | None:
    """The token for the cluster at ``mds``: registered here, else ``$ACTIVEZARR_OST_TOKEN``."""
    return _tokens.get(mds.rstrip("/")) or os.environ.get(TOKEN_VARIABLE)


class OSTUnavailableError(StorageUnavailableError, ServerError):
    """An OST (or the MDS, or the OSS) could not be reached or failed to answer; a server
    relaying it answers 503: a server behind it is down, not the client's fault.

    ``server`` and ``reason`` name the server that could not be reached or stalled, and why
    (None when it answered, with a failure): the OSS tells the client, whose fallback then
    does not wait for that OST again.
    """

    status = 503

    def __init__(self, message: str, server: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.server = server
        self.reason = reason


class RemoteError(ServerError):
    """A server answered with an error status; a server relaying it answers the same."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]  # this error's own, not its class's


class TokenRefusedError(RemoteError, CredentialsError):
    """The cluster refused this client's token (or its lack of one): falling back to reading
    the data would be refused too."""


def _message(body: bytes) -> str:
    return error_message(body) or excerpt(body)


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``: the server it is on."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _place(out: bytearray, extents: Sequence[Extent], data: bytes) -> None:
    """Put ``data``, the bytes of ``extents`` read one after another, where they go in ``out``."""
    position = 0
    for extent in extents:
        out[extent.start:extent.start + extent.length] = data[position:position + extent.length]
        position += extent.length


class ClusterClient:
    """Talks to the MDS, the OSTs and the OSS of one cluster.

    Its requests go through the event loop's shared sessions (:mod:`activezarr.transport.sessions`,
    as the active servers' pool does), so a client used from several loops (fsspec's sync
    wrapper, zarr's loop) has one on each, closed when that loop ends or at exit.
    """

    def __init__(self, mds: str, timeout: float = DEFAULT_TIMEOUT,
                 token: str | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 read_timeout: float = DEFAULT_READ_TIMEOUT, retries: Retries | None = None,
                 stall_memory: float = 0.0) -> None:
        if not stall_memory >= 0:
            raise ValueError(f"stall_memory must be 0 or more seconds, got {stall_memory!r}")
        self.mds = mds.rstrip("/")
        self._token = token
        self.http = HttpClient(Timeouts(timeout, connect_timeout, read_timeout),
                               retries or Retries(), CONNECTIONS)
        #: Seconds a server found stalled or unreachable is not asked again, by every request
        #: of this client (a long-lived server's: the OSS); 0: only within a reduction.
        self.stall_memory = stall_memory
        self._stalls = StallMemory()
        self._cluster: ClusterMap | None = None

    @property
    def token(self) -> str | None:
        """The token given, else the one registered for this MDS now: a cluster started
        again at the same address has a new one, and a cached file system must not keep the
        old."""
        return self._token if self._token is not None else token_for(self.mds)

    def _name(self, url: str) -> str:
        """Which server ``url`` is on, for error messages."""
        if self._cluster is not None:
            for i, ost in enumerate(self._cluster.osts):
                if url.startswith(ost):
                    return f"OST {i} ({ost})"
            if self._cluster.oss and url.startswith(self._cluster.oss):
                return f"OSS ({self._cluster.oss})"
        return f"MDS ({self.mds})" if url.startswith(self.mds) else url

    async def request(self, method: str, url: str, *, json_body: Any = None,
                      data: bytes | None = None, headers: Mapping[str, str] | None = None,
                      missing_ok: bool = False) -> bytes | None:
        """The body of a 2xx answer; None for a 404 when ``missing_ok``.

        Raises :class:`OSTUnavailableError` naming the server when it cannot be reached, times
        out, stalls or fails (5xx; a 502 or 503 once the retries are spent, see
        :mod:`activezarr.transport.http`); within a reduction (a backend's
        :func:`~activezarr.transport.http.remember_unavailable`), at once for a server that
        could not be reached or stalled earlier in it. :class:`TokenRefusedError` for a 401,
        :class:`RemoteError` for other refusals.
        """
        server = _origin(url)
        reason = self._stalls.recall(server, self.stall_memory)
        if reason is not None:
            raise OSTUnavailableError(f"{self._name(url)} is unavailable: {reason}", server,
                                      reason)
        token = self.token
        if token is not None:
            headers = {**(headers or {}), TOKEN_HEADER: token}
        try:
            reply = await self.http.send(method, server, url[len(server):], down=remembered(),
                                         json=json_body, data=data, headers=headers)
        except ServerUnavailableError as exc:
            if not exc.known:
                self._stalls.remember(server, exc.reason)
            again = " (not asked again during this reduction)" if exc.known else ""
            raise OSTUnavailableError(f"{self._name(url)} is unavailable: {exc.reason}{again}",
                                      server, exc.reason) from exc
        status, body = reply.status, reply.body
        if status == 404 and missing_ok:
            return None
        if status >= 500:
            spent = " (its retries spent)" if status in RETRIED_STATUSES else ""
            raise OSTUnavailableError(f"{self._name(url)} failed{spent}: {_message(body)}")
        if status == 401:
            raise TokenRefusedError(
                f"{self._name(url)} refused this client's cluster token: give the ost "
                f"filesystem the token (storage option token=...) or set {TOKEN_VARIABLE} "
                f"(activezarr ost start prints where the token is kept)", status)
        if status >= 300:
            raise RemoteError(f"{self._name(url)}: {_message(body)}", status)
        return body

    async def mds_call(self, method: str, route: str, body: Any = None, *,
                       missing_ok: bool = False) -> Any:
        """A JSON call to the MDS; None for a missing path when ``missing_ok``."""
        answer = await self.request(method, f"{self.mds}{route}", json_body=body,
                                    missing_ok=missing_ok)
        return None if answer is None else json.loads(answer)

    async def cluster(self) -> ClusterMap:
        """Where the OSTs and the OSS are; asked once, the cluster does not move."""
        if self._cluster is None:
            self._cluster = ClusterMap.model_validate(await self.mds_call("GET", "/cluster"))
        return self._cluster

    async def lan(self) -> RateLimiter:
        """The client's LAN link to this cluster."""
        cluster = await self.cluster()
        return _lans.setdefault(self.mds, RateLimiter(cluster.lan_rate))

    async def stat(self, path: str) -> Entry | None:
        """The file or directory at ``path``, or None."""
        entry = await self.mds_call("POST", "/files/stat", {"path": path}, missing_ok=True)
        return None if entry is None else Entry.model_validate(entry)

    async def layouts(self, paths: Sequence[str], link: str = "lan"
                      ) -> tuple[list[FileLayout | None], int]:
        """The layouts of the files at ``paths`` (at most ``MAX_BATCH``), None where no file
        is, in one call to the MDS; and the size of its answer on ``link``."""
        url = f"{self.mds}/files/layouts"
        answer = await self.request("POST", url, json_body={"paths": list(paths)},
                                    headers={LINK_HEADER: link, "Accept": CBOR})
        assert answer is not None
        try:
            return decode_layouts(answer, len(paths)), len(answer)
        except ValueError as exc:
            raise OSTUnavailableError(f"{self._name(url)} failed: {exc}") from exc

    async def gather(self, layout: FileLayout, offset: int, size: int, link: str = "lan"
                     ) -> bytes:
        """Bytes ``[offset, offset + size)`` of a file: one read per OST, all at once."""
        [data] = await self.gather_many([(layout, offset, size)], link)
        return data

    async def gather_many(self, pieces: Sequence[tuple[FileLayout, int, int]],
                          link: str = "lan") -> list[bytes]:
        """Bytes ``[offset, offset + size)`` of each ``(layout, offset, size)``: one read per
        OST for all of them (``/objects/read-many``), all at once."""
        per_ost: dict[int, list[tuple[int, str, list[Extent]]]] = {}
        for index, (layout, offset, size) in enumerate(pieces):
            for ost, group in by_ost(layout.extents(offset, size)).items():
                per_ost.setdefault(ost, []).append((index, layout.fid, group))
        cluster = await self.cluster()

        async def read(ost: int, reads: list[tuple[int, str, list[Extent]]]) -> bytes:
            url = f"{cluster.osts[ost]}/objects/read-many"
            body = {"reads": [{"fid": fid, "ranges": [(e.offset, e.length) for e in group]}
                              for _, fid, group in reads]}
            data = await self.request("POST", url, json_body=body, headers={LINK_HEADER: link})
            assert data is not None
            expected = sum(e.length for _, _, group in reads for e in group)
            if len(data) != expected:
                raise OSTUnavailableError(f"{self._name(url)} returned {len(data)} bytes, "
                                          f"expected {expected}")
            if link == "lan":
                await (await self.lan()).take(len(data))
            return data

        outs = [bytearray(size) for _, _, size in pieces]
        answers = await asyncio.gather(*(read(ost, reads) for ost, reads in per_ost.items()))
        for reads, data in zip(per_ost.values(), answers):
            position = 0
            for index, _, group in reads:
                length = sum(e.length for e in group)
                _place(outs[index], group, data[position:position + length])
                position += length
        return [bytes(out) for out in outs]

    async def batch(self, server: str, body: Mapping[str, Any]
                    ) -> tuple[list[dict[str, Any]], int]:
        """(answers, their size on the LAN) of a PROTOCOL.md ``/v2/batch`` to an OST or the
        OSS."""
        answer = await self.request("POST", f"{server}/v2/batch", json_body=body)
        assert answer is not None
        await (await self.lan()).take(len(answer))
        replies = cbor2.loads(answer)
        self._told_unavailable(server, replies)
        return replies, len(answer)

    def _told_unavailable(self, server: str, replies: Any) -> None:
        """Within a reduction, remember the OSTs that ``server`` (the OSS) could not reach or
        found stalled, as its answers say (``unavailable``), so that the client's fallback
        does not wait for them again."""
        stalled = remembered()
        if stalled is None or self._cluster is None or not isinstance(replies, list):
            return
        for reply in replies:
            told = reply.get("unavailable") if isinstance(reply, dict) else None
            if isinstance(told, dict) and told.get("server") in self._cluster.osts:
                stalled.setdefault(str(told["server"]),
                                   f"{told.get('reason')} (found by {self._name(server)})")

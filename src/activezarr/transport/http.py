"""The one HTTP client every client here sends through: the active servers' pool and the ost
cluster's client, so that a server is treated alike whoever asks it.

Tried again, after a capped, jittered exponential backoff or the ``Retry-After`` the server
gave: a connection refused or reset (a server restarting, a kept-alive connection it closed),
and a 502 or 503 (busy, or its own upstream unreachable for now). Not tried again: a 4xx (the
request stays wrong), a 504 (the server stopped the work at its deadline, and the same work
meets the same deadline), a timeout or a stall. Attempts and the time they span are bounded
(:class:`Retries`). A server silent for ``read`` seconds must answer ``/healthz`` within as
long, or it has stalled: a stopped process is named within twice ``read``, one busy with a
large request is waited for. Within a reduction (:func:`remember_unavailable`), a server that
could not be reached or stalled is not asked again.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_base,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from ..protocol import HEALTH_PATH
from .sessions import shared_session
from .traffic import framing

#: Statuses tried again: the server is busy, or its upstream is unreachable for now.
RETRIED_STATUSES = frozenset({502, 503})
#: Seconds a server may keep silent before its ``/healthz`` must answer within as long.
DEFAULT_READ_TIMEOUT = 3.0
#: The servers found unreachable or stalled in the current reduction, and why.
_unavailable: ContextVar[dict[str, str] | None] = ContextVar("activezarr_unavailable",
                                                             default=None)


def remember_unavailable() -> dict[str, str]:
    """A fresh memory of the servers found unreachable or stalled, and why; from now on the
    memory of the running task (a reduction) and of the tasks it starts (see
    :func:`remembered`). Outside a task it is only returned: a thread's own context would keep
    the servers dropped for good."""
    memory: dict[str, str] = {}
    try:
        asyncio.current_task()
    except RuntimeError:
        return memory
    _unavailable.set(memory)
    return memory


def remembered() -> dict[str, str] | None:
    """The current reduction's memory of unavailable servers; None outside one."""
    return _unavailable.get()


class StallMemory:
    """When each server was last found stalled or unreachable, and why, for requests beyond
    one reduction (every dask task of a computation is one) to skip it for a while instead of
    each waiting for it again; after that while it is asked again (restarted, it rejoins)."""

    def __init__(self) -> None:
        self._found: dict[str, tuple[str, float]] = {}  # server: (why, monotonic time)

    def remember(self, server: str, reason: str) -> None:
        self._found[server] = (reason, time.monotonic())

    def recall(self, server: str, within: float) -> str | None:
        """Why ``server`` was found unavailable, if it was less than ``within`` seconds ago."""
        reason, found = self._found.get(server, ("", -math.inf))
        if time.monotonic() - found < within:
            return f"{reason} (not asked again for {within:g} s)"
        return None


@dataclass(frozen=True)
class Retries:
    """How often, and for how long, a request is tried again."""

    #: Attempts after the first.
    retries: int = 3
    #: Seconds from the first attempt after which no other starts (a longer ``Retry-After``
    #: ends the retries at once).
    within: float = 30.0
    #: Seconds of the first backoff, doubling, each drawn at random below its bound.
    backoff: float = 0.1
    #: Longest backoff of our own, in seconds; a server's ``Retry-After`` is followed as given.
    backoff_cap: float = 5.0

    def __post_init__(self) -> None:
        if not self.within > 0:
            raise ValueError(f"retry_within must be more than 0 seconds, got {self.within!r}")
        for name, value in (("retries", self.retries), ("backoff", self.backoff),
                            ("backoff_cap", self.backoff_cap)):
            if not value >= 0:
                raise ValueError(f"{name} must be 0 or more, got {value!r}")

    def retrying(self, retry: retry_base) -> AsyncRetrying:
        """A tenacity loop trying again on ``retry`` within these bounds; an exception that
        stays is raised as it is."""
        return AsyncRetrying(retry=retry, reraise=True, wait=self.wait,
                             stop=stop_after_attempt(self.retries + 1)
                             | stop_before_delay(self.within))

    def wait(self, state: RetryCallState) -> float:
        """The ``Retry-After`` of the answer that failed, else the jittered backoff."""
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _Busy) and failure.reply.retry_after is not None:
            return failure.reply.retry_after
        backoff = wait_random_exponential(multiplier=self.backoff, max=self.backoff_cap)
        return float(backoff(state))


@dataclass(frozen=True)
class Timeouts:
    """Seconds a request may take whole, to connect, and to keep silent (see the module)."""

    total: float
    connect: float
    read: float = DEFAULT_READ_TIMEOUT

    def __post_init__(self) -> None:
        for name, value in (("timeout", self.total), ("connect_timeout", self.connect),
                            ("read_timeout", self.read)):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True)
class Reply:
    """A server's answer, and its size on the wire (status line and headers included)."""

    server: str
    status: int
    body: bytes
    nbytes: int
    retry_after: float | None = None


class ServerUnavailableError(Exception):
    """``server`` could not be reached, stalled or timed out (``reason``). ``known``: found so
    earlier in the reduction, and not asked this time."""

    def __init__(self, server: str, reason: str, known: bool = False) -> None:
        super().__init__(f"{server} is unavailable: {reason}")
        self.server = server
        self.reason = reason
        self.known = known


class _Busy(Exception):
    """A 502 or 503: tried again."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class _Dropped(Exception):
    """A connection refused or reset: tried again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Connection failures tried again (refused, reset, closed mid-answer); a certificate refused
#: is not one of them, nor a connection or read that timed out (a TimeoutError).
_DROPPED = (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out" + (f": {exc}" if str(exc) else "")
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


class HttpClient:
    """Requests to servers with :class:`Timeouts`, :class:`Retries` and at most ``limit`` at
    once (None: the session's ``connections``), through the event loop's shared session."""

    def __init__(self, timeouts: Timeouts, retries: Retries, connections: int,
                 limit: int | None = None) -> None:
        self.timeouts = timeouts
        self.retries = retries
        self.connections = connections
        self._timeout = aiohttp.ClientTimeout(total=timeouts.total, sock_connect=timeouts.connect)
        self._limit = limit
        self._gate: asyncio.Semaphore | None = None

    def session(self) -> aiohttp.ClientSession:
        """This loop's session for these timeouts (connections stay open between requests)."""
        return shared_session(self.connections, self._timeout)

    async def send(self, method: str, server: str, route: str, *,
                   down: dict[str, str] | None = None,
                   counted: Callable[[int], object] | None = None, **request: Any) -> Reply:
        """The final answer of ``server`` (``scheme://host:port``) to ``method route``: one not
        tried again, or the last 502/503 when the retries are spent. ``counted`` is told each
        attempt's bytes received (0 without an answer). ``request``: aiohttp's arguments.

        Raises :class:`ServerUnavailableError` when ``server`` could not be reached (the
        retries spent), stalled or timed out, remembered in ``down``; at once for a server
        already in ``down``.
        """
        try:
            async for attempt in self.retries.retrying(retry_if_exception_type((_Busy, _Dropped))):
                with attempt:
                    return await self._attempt(method, server, route, down, counted, request)
        except _Busy as exc:
            return exc.reply
        except _Dropped as exc:
            raise self._unavailable(server, exc.reason, down) from exc
        raise AssertionError("tenacity stopped without an outcome")  # pragma: no cover

    async def _attempt(self, method: str, server: str, route: str, down: dict[str, str] | None,
                       counted: Callable[[int], object] | None, request: dict[str, Any]
                       ) -> Reply:
        if down is not None and server in down:
            raise ServerUnavailableError(server, down[server], known=True)
        if self._gate is None and self._limit is not None:
            self._gate = asyncio.Semaphore(self._limit)
        reply: Reply | None = None
        try:
            if self._gate is not None:
                async with self._gate:
                    reply = await self._watched(server, self._exchange(method, server, route,
                                                                       request))
            else:
                reply = await self._watched(server, self._exchange(method, server, route, request))
        except _DROPPED as exc:
            if isinstance(exc, aiohttp.ClientSSLError):
                raise self._unavailable(server, _reason(exc), down) from exc
            raise _Dropped(_reason(exc)) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._unavailable(server, _reason(exc), down) from exc
        finally:
            if counted is not None:
                counted(reply.nbytes if reply is not None else 0)
        if reply.status in RETRIED_STATUSES:
            raise _Busy(reply)
        return reply

    @staticmethod
    def _unavailable(server: str, reason: str, down: dict[str, str] | None
                     ) -> ServerUnavailableError:
        if down is not None:
            down.setdefault(server, reason)
        return ServerUnavailableError(server, reason)

    async def _exchange(self, method: str, server: str, route: str, request: dict[str, Any]
                        ) -> Reply:
        async with self.session().request(method, server + route, **request) as response:
            body = await response.read()
            try:
                retry_after: float | None = max(0.0, float(response.headers["Retry-After"]))
            except (KeyError, ValueError):
                retry_after = None  # absent, or an HTTP date: our own backoff then
            nbytes = framing(response.status, response.reason, response.raw_headers) + len(body)
            return Reply(server, response.status, body, nbytes, retry_after)

    async def _watched(self, server: str, answer: Awaitable[Reply]) -> Reply:
        """``answer``, unless ``server`` stalls: a TimeoutError as soon as neither it nor the
        server's ``/healthz`` answers within ``read`` seconds."""
        waiting = asyncio.ensure_future(answer)
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=self.timeouts.read)
                if done:
                    return waiting.result()
                if not await self._alive(server):
                    raise TimeoutError(f"no answer within {self.timeouts.read:g} s, "
                                       f"nor from {HEALTH_PATH}")
        finally:
            waiting.cancel()

    async def _alive(self, server: str) -> bool:
        """Whether ``server`` answers ``/healthz`` within ``read`` seconds: 200, or 503 from
        an active server saturated (PROTOCOL.md), which is busy, not stalled."""
        # A session of its own, without a connection limit: the probe must not wait for a
        # connection that the silent requests hold.
        probes = shared_session(0, aiohttp.ClientTimeout(total=self.timeouts.read))
        try:
            async with probes.get(server + HEALTH_PATH) as response:
                return response.status in (200, 503)
        except (aiohttp.ClientError, TimeoutError):
            return False

"""aiohttp sessions shared per event loop: one per connection limit and timeouts, closed on
their loop as it shuts down, or at exit for loops that run until then (zarr's, fsspec's)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import weakref
from dataclasses import dataclass

import aiohttp


@dataclass
class _LoopSessions:
    """The sessions shared on one event loop, by connection limit and timeouts, and the task
    that closes them when the loop shuts down."""

    sessions: dict[tuple[int, aiohttp.ClientTimeout], aiohttp.ClientSession]
    keeper: asyncio.Task[None] | None = None


#: Per event loop, weakly: a loop gone takes its entry with it.
_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSessions] = \
    weakref.WeakKeyDictionary()


def shared_session(limit: int, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
    """The session of this loop for ``limit`` and ``timeout``, made on first use.

    Each loop's sessions are closed on that loop as it shuts down: ``asyncio.run`` (and
    ``asyncio.Runner``) cancel the tasks left at the end, and the keeper task closes them in its
    ``finally``. zarr's loop runs until exit, so its sessions are closed at exit instead.
    """
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = _LoopSessions({})
        pool.keeper = loop.create_task(_keep(pool), name="activezarr-sessions")
    session = pool.sessions.get((limit, timeout))
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=limit)
        session = pool.sessions[limit, timeout] = aiohttp.ClientSession(connector=connector,
                                                                        timeout=timeout)
    return session


async def _keep(pool: _LoopSessions) -> None:
    """Wait until cancelled (the loop shuts down, or exit), then close ``pool``'s sessions."""
    try:
        await asyncio.Event().wait()
    finally:
        sessions = list(pool.sessions.values())
        pool.sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def close_sessions() -> None:
    """Close this loop's shared sessions now (a server's cleanup, before its loop ends)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await _stop(pool)


async def _stop(pool: _LoopSessions) -> None:
    if pool.keeper is not None:
        pool.keeper.cancel()
        await asyncio.gather(pool.keeper, return_exceptions=True)


@atexit.register
def _close_sessions() -> None:
    """Close the sessions of loops still running at exit (zarr's) on those loops."""
    for loop, pool in list(_pools.items()):
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_stop(pool), loop).result(5)
    _pools.clear()

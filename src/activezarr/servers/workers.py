"""Work in a thread pool that a cancelled request stops (its deadline passed, or its client left).

Work still queued never starts. Work already running cannot be interrupted: the request waits
for it to finish before it lets go, so that the memory the work holds stays counted in the
budget until it is really free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")


async def in_worker(executor: Executor, work: Callable[..., T], *args: Any,
                    discard: Callable[[T], object] | None = None,
                    unstarted: Callable[[], object] | None = None) -> T:
    """``work(*args)`` in ``executor``. Cancelled while queued, it never runs (``unstarted``
    then releases what it was given); cancelled while running, it is waited for (``discard``
    then releases what it returned) and the cancellation goes on."""
    future = executor.submit(work, *args)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        if future.cancel():
            if unstarted is not None:
                unstarted()
        else:  # running or done: let it finish before letting go
            result = await _finished(future)
            if result is not None and discard is not None:
                discard(result)
        raise


async def _finished(future: Future[T]) -> T | None:
    """The result of ``future`` once done (None if it failed), whatever cancels the caller
    meanwhile: the cancellation already under way is the one raised afterwards."""
    while not future.done():
        try:
            await asyncio.shield(asyncio.wrap_future(future))
        except asyncio.CancelledError:
            continue
        except Exception:  # noqa: BLE001 - the request is being cancelled: its error is moot
            return None
    return None if future.exception() is not None else future.result()

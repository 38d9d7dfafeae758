"""A link of limited bandwidth: transfers queue behind each other, as on a real wire or disk."""

from __future__ import annotations

import asyncio
import threading
import time

MB = 1_000_000


class RateLimiter:
    """Delays each transfer until the link, busy with earlier ones, would have carried it.

    Thread-safe and loop-agnostic, so one link can be shared by every event loop of a process.
    ``rate`` is in bytes per second; None or 0 is an unlimited link.
    """

    def __init__(self, rate: float | None) -> None:
        self.rate = rate or None
        self._lock = threading.Lock()
        self._free_at = 0.0

    async def take(self, nbytes: int) -> None:
        if self.rate is None or nbytes <= 0:
            return
        with self._lock:
            now = time.monotonic()
            self._free_at = max(now, self._free_at) + nbytes / self.rate
            delay = self._free_at - now
        await asyncio.sleep(delay)

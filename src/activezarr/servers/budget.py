"""Memory permits in bytes, as Reductionist's resource manager grants them.

Every request reserves the bytes it will hold (read, decoded, result) before it reads or
decodes; the total held never exceeds the server's budget. A request that would need more than
the whole budget is refused at once (413); one that waits too long for bytes others hold is
told to retry (503), so that every wait has a bound.
"""

from __future__ import annotations

import asyncio

from .errors import Overloaded, TooLarge


class MemoryBudget:
    """``total`` bytes shared by every request of one server; waits at most ``wait`` seconds."""

    def __init__(self, total: int, wait: float) -> None:
        self.total = total
        self.wait = wait
        self.available = total
        self.waiting = 0
        self._changed = asyncio.Condition()

    def reservation(self) -> Reservation:
        return Reservation(self)

    async def _take(self, nbytes: int, held: int) -> None:
        if held + nbytes > self.total:
            raise TooLarge(f"the request needs {held + nbytes} bytes of memory, more than the "
                           f"server's {self.total}")
        if not self.waiting and self.available >= nbytes:
            self.available -= nbytes  # free, and nobody ahead: no lock, no timer
            return
        async with self._changed:
            self.waiting += 1
            try:
                async with asyncio.timeout(self.wait):
                    await self._changed.wait_for(lambda: self.available >= nbytes)
            except TimeoutError:
                raise Overloaded(f"no memory for {nbytes} more bytes after {self.wait} s; "
                                 "retry later") from None
            finally:
                self.waiting -= 1
            self.available -= nbytes

    async def _give(self, nbytes: int) -> None:
        if not self.waiting:
            self.available += nbytes  # nobody to wake
            return
        async with self._changed:
            self.available += nbytes
            self._changed.notify_all()

    @property
    def saturated(self) -> bool:
        """Whether requests are waiting for memory."""
        return self.waiting > 0


class Reservation:
    """The bytes one request holds; grows as sizes become known, released on exit."""

    def __init__(self, budget: MemoryBudget) -> None:
        self.budget = budget
        self.held = 0

    async def grow(self, nbytes: int) -> None:
        """Hold ``nbytes`` more, waiting (bounded) for them to be free."""
        if nbytes > 0:
            await self.budget._take(nbytes, self.held)
            self.held += nbytes

    async def move(self, other: Reservation, nbytes: int) -> None:
        """Hand ``nbytes`` of this reservation to ``other`` (a result outliving its working
        memory), growing ``other`` only by what this one does not hold."""
        moved = min(nbytes, self.held)
        self.held -= moved
        other.held += moved
        await other.grow(nbytes - moved)

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(self, *exc: object) -> None:
        held, self.held = self.held, 0
        if held:
            await self.budget._give(held)

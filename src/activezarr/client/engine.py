"""Runs planned chunk tasks on a backend: batching, bounded concurrency, fallback, combining."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import ClassVar, TypeVar

from ..backends.base import Backend, BatchResult, ChunkJob
from ..chunk.partial import Partial
from ..errors import (
    ActiveZarrError,
    ChunkReadError,
    DeadlineExceededError,
    StorageUnavailableError,
)
from ..planning.chunks import ChunkTask
from ..planning.sharding import ShardIndexes, locate_inner_chunks
from ..transport import traffic
from .report import Report

Progress = Callable[[int], None]
T = TypeVar("T")
#: A batch being reduced: its tasks and, once done, what the backend answered.
InFlight = asyncio.Future[tuple[Sequence[ChunkTask], BatchResult]]


def _slices(items: Iterable[T], size: int, first: int | None = None) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the first of ``first``, the last may be shorter),
    consumed lazily."""
    iterator = iter(items)
    chunk = list(itertools.islice(iterator, first or size))
    while chunk:
        yield chunk
        chunk = list(itertools.islice(iterator, size))


async def _planned_ahead(windows: Iterator[list[T]]) -> AsyncIterator[list[T]]:
    """Each window, the next one planned in a thread meanwhile: planning is CPU work that the
    reduction of the window before (reads, decoding in other threads) can hide."""
    loop = asyncio.get_running_loop()
    following = loop.run_in_executor(None, next, windows, None)
    try:
        while (window := await following) is not None:
            following = loop.run_in_executor(None, next, windows, None)
            yield window
    finally:
        following.cancel()  # stopped early: that window is never reduced


class Engine:
    """Reduces ``tasks`` into one accumulator of the output shape, counting what it cost."""

    #: Tasks planned ahead at most: memory stays bounded whatever the number of chunks.
    window: ClassVar[int] = 8192

    def __init__(self, job: ChunkJob, backend: Backend, fallback: Backend | None,
                 concurrency: int, progress: Progress | None = None) -> None:
        self.job = job
        self.backend = backend
        self.fallback = fallback
        self.concurrency = max(1, concurrency)
        self.progress = progress
        self.report = Report(backend=backend.name)

    async def run(self, tasks: Iterable[ChunkTask], out_shape: tuple[int, ...]) -> Partial:
        """Reduce ``tasks`` into one accumulator, within the backend's ``deadline`` if it has one.

        Whatever the reduction pulls through a watched filesystem beyond the chunks the
        backends count (listings, shard indexes, metadata) is counted too.
        """
        start = time.perf_counter()
        deadline = self.backend.options.deadline
        timeout = asyncio.timeout(deadline)
        with traffic.metered() as meter:
            try:
                async with timeout:
                    await traffic.watch(getattr(self.job.store, "fs", None))
                    return await self._run(tasks, out_shape)
            except TimeoutError as exc:
                if timeout.expired():
                    raise DeadlineExceededError(
                        f"the reduction did not finish within its deadline of {deadline:g} s "
                        f"({self.report.chunks} chunks planned so far)") from exc
                raise
            finally:
                self.report.bytes_from_storage += meter.nbytes
                self.report.requests += meter.responses
                self.report.add(self.report.links, "lan", meter.nbytes)
                self.report.seconds = time.perf_counter() - start

    async def _run(self, tasks: Iterable[ChunkTask], out_shape: tuple[int, ...]) -> Partial:
        acc = self.job.kernel.empty(out_shape)
        size = self.backend.batch_chunks(self.job.layout.chunk_nbytes)
        indexes: ShardIndexes = {}
        # Batches of one window and the next flow without a pause: at most ``concurrency`` in
        # flight, each merged as it finishes, so the storage side never waits for a window's
        # slowest batch before the next window's first.
        pending: set[InFlight] = set()
        try:
            # A small first window: reducing starts after a few batches are planned, not
            # thousands.
            async for window in _planned_ahead(_slices(tasks, self.window,
                                                       min(self.window, 2 * size))):
                self.report.chunks += len(window)
                if self.job.layout.shard_index is not None:
                    # Shards come one after another, so only the last one can be split between
                    # windows: its index is carried over, not read twice.
                    window, unwritten, read = await locate_inner_chunks(
                        self.job.store, self.job.layout, window, self.concurrency, indexes)
                    self.report.requests += len(read.keys() - indexes.keys())
                    indexes = read
                    for task in unwritten:
                        self._merge_fill(acc, task)
                    # Found unwritten by the shard index the backend's path read: counted there.
                    self.report.add(self.report.paths, self.backend.name, len(unwritten))
                    if self.progress is not None and unwritten:
                        self.progress(len(unwritten))
                for batch in _slices(window, size):
                    while len(pending) >= self.concurrency:
                        await self._merge_finished(pending, acc)
                    pending.add(asyncio.ensure_future(self._reduced(batch)))
            while pending:
                await self._merge_finished(pending, acc)
        finally:
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return acc

    async def _reduced(self, batch: Sequence[ChunkTask]
                       ) -> tuple[Sequence[ChunkTask], BatchResult]:
        return batch, await self._reduce(batch)

    async def _merge_finished(self, pending: set[InFlight], acc: Partial) -> None:
        """Wait for at least one batch of ``pending`` to finish; merge each finished one."""
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for future in done:
            batch, result = future.result()  # a failure stays pending: the caller's finally
            pending.discard(future)          # retrieves it with the others
            for i, (task, partial) in enumerate(zip(batch, result.partials)):
                if i in result.combined:
                    continue  # merged storage-side into another position's partial
                if partial is None:
                    self._merge_fill(acc, task)
                else:
                    acc.merge(partial, task.region)
            if self.progress is not None:
                self.progress(len(batch))

    def _merge_fill(self, acc: Partial, task: ChunkTask) -> None:
        acc.merge(self.job.kernel.fill(self.job.layout.fill_value, task.selection,
                                       weights=task.weights, labels=task.labels,
                                       spans=task.spans), task.region)

    async def _reduce(self, batch: Sequence[ChunkTask]) -> BatchResult:
        try:
            result = await self.backend.reduce(self.job, batch)
        except StorageUnavailableError as exc:
            result = BatchResult([None] * len(batch), path=self.backend.name,
                                 failed=dict.fromkeys(range(len(batch)), str(exc)))
        self._count(result, len(batch))
        if result.failed:
            first, reason = min(result.failed.items())
            if self.fallback is None:
                more = len(result.failed) - 1
                raise StorageUnavailableError(
                    f"chunk {batch[first].key!r} could not be reduced by the "
                    f"{self.backend.name} backend: {reason}"
                    + (f" (and {more} more chunk(s))" if more else "")
                    + "; fallback is disabled")
            positions = sorted(result.failed)
            try:
                retry = await self.fallback.reduce(self.job, [batch[i] for i in positions])
            except ActiveZarrError:
                raise  # ours already say which server or chunk failed
            except (OSError, RuntimeError, ValueError) as exc:
                raise ChunkReadError(
                    f"chunk {batch[first].key!r}: the {self.backend.name} backend could not "
                    f"reduce it ({reason}) and the client could not read it: {exc}") from exc
            for i, partial in zip(positions, retry.partials):
                result.partials[i] = partial
            self._count(retry, len(positions))
            self.report.fallbacks += len(positions)
            for why in result.failed.values():
                self.report.add(self.report.fallback_reasons, why, 1)
        return result

    def _count(self, result: BatchResult, size: int) -> None:
        """Add what ``result`` (of a batch of ``size`` chunks) cost; each chunk served counts on
        the path it took."""
        self.report.requests += result.requests
        self.report.bytes_stored += result.bytes_stored
        self.report.bytes_from_storage += result.bytes_from_storage
        self.report.bytes_to_storage += result.bytes_to_storage
        for link, nbytes in result.links.items():
            self.report.add(self.report.links, link, nbytes)
        self.report.add(self.report.links, "lan", result.bytes_from_storage)
        for path, chunks in result.path_counts(size).items():
            self.report.add(self.report.paths, path, chunks)


def fallback_warning(report: Report) -> str | None:
    """What to tell the user when some chunks were reduced on the client, or None."""
    if not report.fallbacks:
        return None
    why, n = max(report.fallback_reasons.items(), key=lambda item: item[1])
    others = len(report.fallback_reasons) - 1
    return (f"{report.fallbacks} of {report.chunks} chunk(s) were read and reduced on the "
            f"client because the {report.backend} backend could not: {why} ({n} chunk(s))"
            + (f"; {others} other reason(s) in the report's fallback_reasons" if others else ""))

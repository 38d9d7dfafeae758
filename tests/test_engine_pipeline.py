"""The engine keeps the storage side busy across planning windows: no window waits for the
slowest batch of the one before."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import activezarr
from activezarr.backends.base import BatchResult, ChunkJob
from activezarr.backends.file import FileBackend
from activezarr.client.engine import Engine
from activezarr.planning.chunks import ChunkTask
from arrays import create


def test_a_slow_batch_does_not_hold_back_the_next_window(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = np.arange(64, dtype="f4")
    array = create(tmp_path / "a.zarr", data, codec="none", chunks=(4,), fill_value=0)
    # Windows of 8 chunks, batches of 2: the first window is 2 batches, then 8 more windows.
    monkeypatch.setattr(Engine, "window", 8)
    monkeypatch.setattr(FileBackend, "batch_chunks", lambda self, nbytes: 2)
    later_window_started = asyncio.Event()
    reduce = FileBackend.reduce

    async def first_batch_waits(self: FileBackend, job: ChunkJob,
                                tasks: Sequence[ChunkTask]) -> BatchResult:
        # The fault a real disk cannot be made to produce on cue: the first batch is slow,
        # and finishes only once a batch of a later window has started.
        if tasks[0].coords == (0,):
            await asyncio.wait_for(later_window_started.wait(), 10)
        elif tasks[0].coords[0] >= 4:
            later_window_started.set()
        return await reduce(self, job, tasks)

    monkeypatch.setattr(FileBackend, "reduce", first_batch_waits)
    red = activezarr.ActiveReduction(array,
                                     plain_when_cheaper=False, max_concurrency=4)
    assert red.sum() == data.sum()  # a barrier between windows times out instead
    assert red.last_report.chunks == 16 and red.last_report.fallbacks == 0

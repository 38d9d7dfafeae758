"""Reading byte ranges of open files: into a reused buffer as into bytes of their own, and
never past what the file holds."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activezarr.backends.file import KEPT_BUFFER_BYTES, StoredChunk, read_stored
from activezarr.errors import ChunkDecodeError
from activezarr.fileio import read_ranges, read_ranges_into

DATA = bytes(range(256)) * 40  # 10,240 bytes, each position telling where it is


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fileio") / "data.bin"
    path.write_bytes(DATA)
    return path


def _ranges(size: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """Ranges within ``size`` bytes, many of them following one another (read by one call)."""
    def within(start: int) -> st.SearchStrategy[tuple[int, int]]:
        return st.integers(0, size - start).map(lambda length: (start, length))
    return st.lists(st.integers(0, size).flatmap(within), max_size=20).map(
        lambda ranges: sorted(ranges) if len(ranges) % 2 else ranges)


@settings(max_examples=200, deadline=None)
@given(ranges=_ranges(len(DATA)), adjacent=st.booleans())
def test_ranges_read_into_a_buffer_are_the_ranges_read_one_by_one(
        stored: Path, ranges: list[tuple[int, int]], adjacent: bool) -> None:
    if adjacent:  # each range starting where the one before ends: one read for all of them
        ranges = [(sum(n for _, n in ranges[:i]) % len(DATA), n) for i, (_, n) in enumerate(ranges)]
        ranges = [(start, min(n, len(DATA) - start)) for start, n in ranges]
    fd = os.open(stored, os.O_RDONLY)
    try:
        buffer = memoryview(bytearray(sum(n for _, n in ranges)))
        into = read_ranges_into(fd, ranges, "data.bin", len(DATA), buffer)
        assert [bytes(piece) for piece in into] == read_ranges(fd, ranges, "data.bin")
    finally:
        os.close(fd)


@pytest.mark.parametrize("bad", [(-1, 4), (0, len(DATA) + 1), (len(DATA), 1), (8, 2**50)])
def test_a_range_outside_the_file_is_refused_before_anything_is_read(stored: Path,
                                                                     bad: tuple[int, int]) -> None:
    # (8, 2**50): a reference's length sizes no buffer before it is checked.
    source = StoredChunk(str(stored), bad, named="file://data.bin")
    with pytest.raises(ChunkDecodeError, match="is outside the 10240 bytes stored"):
        read_stored([StoredChunk(str(stored), (0, 16)), source])


def test_a_file_that_shrank_while_it_was_read_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "shrinking.bin"
    path.write_bytes(DATA)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.truncate(path, 100)  # after the size was taken, before the read
        with pytest.raises(ChunkDecodeError, match="the file changed while it was read"):
            read_ranges_into(fd, [(0, 50), (50, 200)], "shrinking.bin", len(DATA),
                             memoryview(bytearray(250)))
    finally:
        os.close(fd)


def test_stored_chunks_are_read_per_file_missing_files_are_none(stored: Path,
                                                                tmp_path: Path) -> None:
    other = tmp_path / "other.bin"
    other.write_bytes(b"whole file")
    sources = [StoredChunk(str(stored), (10, 5)), StoredChunk(str(tmp_path / "absent")),
               StoredChunk(data=b"inlined"), StoredChunk(str(other)),
               StoredChunk(str(stored), (15, 3))]
    got = read_stored(sources)
    assert [None if g is None else bytes(g) for g in got] == [
        DATA[10:15], None, b"inlined", b"whole file", DATA[15:18]]


def test_a_batch_larger_than_the_kept_buffer_gets_its_own(stored: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(np.arange(KEPT_BUFFER_BYTES // 4 + 1, dtype="<u4").tobytes())
    results: list[object] = []

    def in_a_thread() -> None:
        [small] = read_stored([StoredChunk(str(stored), (0, 8))])
        [large] = read_stored([StoredChunk(str(big))])
        # the small batch's piece is this thread's kept buffer, which the large batch left be
        results.extend([bytes(small), np.frombuffer(large, "<u4")[-1]])

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    thread.join()
    assert results == [DATA[:8], KEPT_BUFFER_BYTES // 4]

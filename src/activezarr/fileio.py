"""Exact reads of byte ranges from open files: the one pread of every side that reads disks
(the file backend, the active server's ``file`` interface, the OSTs)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .errors import ChunkDecodeError


def check_ranges(ranges: Sequence[tuple[int, int]], name: str, size: int) -> None:
    """A :class:`ChunkDecodeError` naming ``name`` unless every ``(offset, length)`` lies
    within the ``size`` bytes of a file."""
    for offset, length in ranges:
        if offset < 0 or length < 0 or offset + length > size:
            raise ChunkDecodeError(f"byte range ({offset}, {length}) is outside the "
                                   f"{size} bytes stored", name)


def read_ranges(fd: int, ranges: Sequence[tuple[int, int]], name: str,
                size: int | None = None) -> list[bytes]:
    """Each ``(offset, length)`` of the open file ``fd``, checked against its size (``size``
    if the caller stat'ed it already) before any buffer is allocated; a range outside the file,
    or a file that shrank while it was read, is a :class:`ChunkDecodeError` naming ``name`` (a
    chunk key, path or object)."""
    if size is None:
        size = os.fstat(fd).st_size
    check_ranges(ranges, name, size)
    pieces = [os.pread(fd, length, offset) for offset, length in ranges]
    if any(len(piece) != length for (_, length), piece in zip(ranges, pieces)):
        raise ChunkDecodeError("the file changed while it was read", name)
    return pieces


def read_ranges_into(fd: int, ranges: Sequence[tuple[int, int]], name: str, size: int,
                     buffer: memoryview) -> list[memoryview]:
    """As :func:`read_ranges`, into consecutive pieces of ``buffer`` (as long as the ranges
    together); ranges that follow one another in the file are read by one call.

    For a reader that reuses its buffer: nothing is allocated, and the buffer stays in the
    CPU's cache between reads, where hundreds of small chunks each in bytes of their own
    would cost a fresh, cold allocation apiece.
    """
    check_ranges(ranges, name, size)
    if sum(length for _, length in ranges) != len(buffer):
        raise ValueError(f"a buffer of {len(buffer)} bytes for ranges of "
                         f"{sum(length for _, length in ranges)}")
    pieces: list[memoryview] = []
    runs: list[list[int]] = []  # [offset in the file, length, offset in the buffer]
    at = 0
    for offset, length in ranges:
        if runs and runs[-1][0] + runs[-1][1] == offset:
            runs[-1][1] += length
        else:
            runs.append([offset, length, at])
        pieces.append(buffer[at:at + length])
        at += length
    for offset, length, at in runs:
        view = buffer[at:at + length]
        while view:
            n = os.preadv(fd, [view], offset)
            if not n:
                raise ChunkDecodeError("the file changed while it was read", name)
            view, offset = view[n:], offset + n
    return pieces

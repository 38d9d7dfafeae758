"""Exact reads of byte ranges from open files: the one pread of every side that reads disks
(the file backend, the active server's ``file`` interface, the OSTs)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .errors import ChunkDecodeError


def read_ranges(fd: int, ranges: Sequence[tuple[int, int]], name: str,
                size: int | None = None) -> list[bytes]:
    """Each ``(offset, length)`` of the open file ``fd``, checked against its size (``size``
    if the caller stat'ed it already) before any buffer is allocated; a range outside the file,
    or a file that shrank while it was read, is a :class:`ChunkDecodeError` naming ``name`` (a
    chunk key, path or object)."""
    if size is None:
        size = os.fstat(fd).st_size
    for offset, length in ranges:
        if offset < 0 or length < 0 or offset + length > size:
            raise ChunkDecodeError(f"byte range ({offset}, {length}) is outside the "
                                   f"{size} bytes stored", name)
    pieces = [os.pread(fd, length, offset) for offset, length in ranges]
    if any(len(piece) != length for (_, length), piece in zip(ranges, pieces)):
        raise ChunkDecodeError("the file changed while it was read", name)
    return pieces

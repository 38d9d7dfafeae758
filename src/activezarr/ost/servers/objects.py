"""An OST's objects: one file per object in the OST's own directory, behind a rate-limited disk."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path

from ...fileio import read_ranges
from ...servers.errors import BadRequest
from ..wire.ratelimit import RateLimiter

_FID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")


class ObjectStore:
    """Reads byte ranges of, writes and deletes the objects kept in ``root``."""

    def __init__(self, root: str | os.PathLike[str], disk: RateLimiter) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.disk = disk

    def _path(self, fid: str) -> Path:
        if not _FID.fullmatch(fid):
            raise BadRequest(f"bad object id {fid!r}")
        return self.root / fid

    async def read(self, fid: str, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Each ``(offset, length)`` of object ``fid``; FileNotFoundError if it does not exist."""
        path = self._path(fid)

        def read_all() -> list[bytes]:
            fd = os.open(path, os.O_RDONLY)
            try:
                return read_ranges(fd, ranges, f"object {fid}")
            finally:
                os.close(fd)

        pieces = await asyncio.to_thread(read_all)
        await self.disk.take(sum(len(p) for p in pieces))
        return pieces

    async def write(self, fid: str, data: bytes) -> None:
        path = self._path(fid)
        temporary = path.with_name(f".{fid}.tmp")

        def write_all() -> None:
            temporary.write_bytes(data)
            os.replace(temporary, path)

        await asyncio.to_thread(write_all)
        await self.disk.take(len(data))

    async def delete(self, fid: str) -> None:
        self._path(fid).unlink(missing_ok=True)

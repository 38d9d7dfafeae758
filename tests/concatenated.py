"""Chunks of one small compressed stream followed by streams of zeros (issue 19).

numcodecs' Zstd, GZip, BZ2 and LZMA decode every frame, member or stream of a buffer, each to
its full size: a 64 KiB object of eight zstd frames of 256 MiB of zeros behind a small first
one took a server's RSS past 2 GiB before the decoded size was checked.
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any

import numcodecs
import numpy as np

MiB = 2**20
#: Compressors that take zeros a block at a time, so that no test holds their whole length.
_STREAMING: dict[str, Callable[[], Any]] = {
    "gzip": lambda: zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS),
    "zlib": lambda: zlib.compressobj(9),
    "bz2": lambda: bz2.BZ2Compressor(9),
    "lzma": lambda: lzma.LZMACompressor(lzma.FORMAT_XZ, preset=0),
}


@cache
def zeros_stream(codec: str, nbytes: int) -> bytes:
    """``nbytes`` zeros as one stream (frame, member) of the numcodecs codec ``codec``."""
    if codec not in _STREAMING:
        return bytes(numcodecs.get_codec({"id": codec}).encode(bytes(nbytes)))
    compressor, block = _STREAMING[codec](), bytes(MiB)
    parts = [compressor.compress(block) for _ in range(nbytes // MiB)]
    return b"".join([*parts, compressor.compress(bytes(nbytes % MiB)), compressor.flush()])


def concatenated(codec: str, first: np.ndarray, member_bytes: int, members: int = 8) -> bytes:
    """``first`` encoded by ``codec`` as numcodecs does, then ``members`` streams of
    ``member_bytes`` zeros."""
    head = bytes(numcodecs.get_codec({"id": codec}).encode(first))
    return head + zeros_stream(codec, member_bytes) * members

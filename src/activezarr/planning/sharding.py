"""Sharded arrays: read each touched shard's index once and address its inner chunks by range."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from zarr.abc.store import RangeByteRequest, Store, SuffixByteRequest
from zarr.buffer import default_buffer_prototype

from ..chunk.codecs import CodecChain
from ..errors import ChunkDecodeError
from .array_layout import ArrayLayout, ShardIndex
from .chunks import ChunkTask

_EMPTY = np.uint64(2**64 - 1)


async def read_shard_index(store: Store, key: str, index: ShardIndex) -> np.ndarray | None:
    """The ``(*chunks_per_shard, 2)`` array of (offset, nbytes), or None if the shard is absent."""
    request = SuffixByteRequest(index.nbytes) if index.at_end else RangeByteRequest(0, index.nbytes)
    buffer = await store.get(key, prototype=default_buffer_prototype(), byte_range=request)
    if buffer is None:
        return None
    flat = CodecChain(index.codecs).decode(buffer.to_bytes(), 16 * index.entries, key)
    return flat.view("<u8").reshape(*index.chunks_per_shard, 2)


ShardIndexes = dict[str, "np.ndarray | None"]


async def locate_inner_chunks(
    store: Store, layout: ArrayLayout, tasks: Sequence[ChunkTask], concurrency: int,
    known: ShardIndexes | None = None,
) -> tuple[list[ChunkTask], list[ChunkTask], ShardIndexes]:
    """Rewrite inner-chunk tasks to (shard key, byte range).

    Returns (stored tasks, never-written tasks, the indexes of the shards involved). Indexes in
    ``known`` (e.g. of a shard split between two windows of tasks) are not read again.
    """
    index = layout.shard_index
    assert index is not None
    known = known or {}
    by_shard: dict[str, list[ChunkTask]] = defaultdict(list)
    for task in tasks:
        by_shard[task.key].append(task)
    limit = asyncio.Semaphore(concurrency)

    async def resolve(key: str) -> tuple[str, np.ndarray | None]:
        if key in known:
            return key, known[key]
        async with limit:
            return key, await read_shard_index(store, key, index)

    stored: list[ChunkTask] = []
    empty: list[ChunkTask] = []
    indexes = dict(await asyncio.gather(*(resolve(k) for k in by_shard)))
    for key, offsets in indexes.items():
        for task in by_shard[key]:
            inner = tuple(c % n for c, n in zip(task.coords, index.chunks_per_shard))
            if offsets is None or offsets[inner][0] == _EMPTY:
                empty.append(task)
                continue
            offset, nbytes = (int(v) for v in offsets[inner])
            if nbytes > 2**40 or offset > 2**62:
                raise ChunkDecodeError(f"shard index entry {inner} is corrupt", key)
            task.byte_range = (offset, nbytes)
            stored.append(task)
    return stored, empty, indexes


"""An icechunk repository's snapshot as kerchunk references, so that its chunks reduce beside them.

icechunk 2.1 and later tell, through ``IcechunkStore.array_chunk_iterator``, where each chunk's
bytes are: a native chunk is a byte range of an object under the repository's ``chunks/``
folder, a virtual chunk a byte range of a source file (a netCDF file, say), an inline chunk
bytes in the manifest. That is what kerchunk references say, and the ``reference`` backend
already sends each range to the storage side of its target. A snapshot is immutable, and so are
its chunk objects, so references taken once stay true for the session they came from.
"""

from __future__ import annotations

import base64
from typing import Any

import zarr.api.asynchronous
from zarr import AsyncArray, AsyncGroup
from zarr.core.buffer import default_buffer_prototype

from ..errors import UnsupportedArrayError

#: ``icechunk.ChunkType`` values, as ``array_chunk_iterator`` gives them (native is 1).
_VIRTUAL, _INLINE = 2, 3

#: Chunk locations read per call of icechunk's iterator.
_BATCH = 10_000


def locates_chunks(store: Any) -> bool:
    """Whether this icechunk store tells where chunk bytes are (icechunk >= 2.1)."""
    return hasattr(store, "array_chunk_iterator")


async def references(store: Any, repository_url: str) -> dict[str, Any]:
    """Kerchunk references (version 1) to every node and written chunk of ``store``'s snapshot.

    ``repository_url`` is where the repository lives (``s3://bucket/prefix``, ``file:///path``);
    native chunks are objects under its ``chunks/`` folder.
    """
    if not locates_chunks(store):
        raise UnsupportedArrayError(
            "this icechunk does not say where a chunk's bytes are; icechunk 2.1 or later does "
            "(it needs Python 3.12 or later): upgrade it, or reduce on the client")
    refs: dict[str, Any] = {}
    root = await zarr.api.asynchronous.open(store=store, mode="r")
    nodes: list[tuple[str, Any]] = [("", root)]
    if isinstance(root, AsyncGroup):
        nodes += [member async for member in root.members(max_depth=None)]
    for path, node in nodes:
        prefix = f"{path}/" if path else ""
        document = await store.get(f"{prefix}zarr.json", default_buffer_prototype())
        refs[f"{prefix}zarr.json"] = document.to_bytes().decode()
        if isinstance(node, AsyncArray):
            async for batch in store.array_chunk_iterator(path, batch_size=_BATCH):
                refs.update(_chunk_references(node, prefix, repository_url.rstrip("/"), batch))
    return {"version": 1, "refs": refs}


def _chunk_references(array: AsyncArray[Any], prefix: str, repository_url: str,
                      batch: tuple[Any, ...]) -> dict[str, Any]:
    """One batch of ``array_chunk_iterator``'s columns as references keyed by chunk key."""
    coords, kinds, paths, offsets, lengths, inlined = batch
    refs: dict[str, Any] = {}
    for i, (grid, kind, path) in enumerate(zip(coords.tolist(), kinds.tolist(), paths)):
        key = prefix + array.metadata.encode_chunk_key(tuple(grid))
        if kind == _INLINE:
            refs[key] = "base64:" + base64.b64encode(inlined[i]).decode()
        else:
            url = path if kind == _VIRTUAL else f"{repository_url}/chunks/{path}"
            refs[key] = [url, int(offsets[i]), int(lengths[i])]
    return refs

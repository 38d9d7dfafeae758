"""The OSS server: gathers whole chunks from the OSTs over the storage network and reduces them.

It speaks PROTOCOL.md with ``interface_type: "ost"`` and ``url`` the file's ``ost://`` URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from ...chunk.partial import Partial
from ...protocol import ChunkRequest
from ..errors import BadRequest
from ..operations import chunk_partial, execute
from .batches import ItemServer, add_batch_routes
from .messages import EXTENSIONS, WholeItem
from .serving import add_schema, cbor_response, create_base_app, operation
from .target import MAX_DECODED
from .transport import ClusterClient

CLIENT = web.AppKey("client", ClusterClient)


async def _gather(request: web.Request, chunk: ChunkRequest) -> bytes:
    """The chunk's bytes, gathered from the OSTs over the storage network."""
    client = request.app[CLIENT]
    path = urlsplit(chunk.url).path.lstrip("/")
    entry = await client.stat(path)
    if entry is None or entry.layout is None:
        raise BadRequest(f"no file {path!r}")
    offset = chunk.offset or 0
    size = entry.size - offset if chunk.size is None else chunk.size
    if size < 0 or offset + size > entry.size:
        raise BadRequest(f"bytes {offset} to {offset + size} are outside {path!r} of "
                         f"{entry.size} bytes")
    return await client.gather(entry.layout, offset, size, link="storage")  # counted by the OSTs


async def reduce(request: web.Request) -> web.Response:
    op = operation(request)
    chunk = ChunkRequest.model_validate_json(await request.read())
    if chunk.interface_type != "ost":
        raise BadRequest(f"interface_type {chunk.interface_type!r} is not served here")
    raw = await _gather(request, chunk)
    result = await asyncio.to_thread(execute, op, chunk, raw, MAX_DECODED)
    return cbor_response(request, result)


def _whole_partial(item: WholeItem, raw: bytes) -> tuple[Partial, dict[str, Any]]:
    return chunk_partial(item.op, item, raw, MAX_DECODED), {}


#: Whole chunks, each gathered from its OSTs; a batch's spread chunks combine here.
WHOLE = ItemServer(WholeItem, stored=lambda item: item.size, read=_gather,
                   reduce=_whole_partial)


def create_oss_app(mds: str, token: str) -> web.Application:
    """The OSS of the cluster whose MDS is at ``mds``."""
    app = create_base_app(token)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        app[CLIENT] = ClusterClient(mds, token=token)
        yield
        await app[CLIENT].close()

    app.cleanup_ctx.append(lifecycle)
    add_schema(app, EXTENSIONS)
    add_batch_routes(app, WHOLE)
    app.router.add_post("/v2/{op}", reduce)
    app.router.add_post("/v2/{op}/", reduce)
    return app

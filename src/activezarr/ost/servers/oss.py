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
from ...servers.errors import BadRequest
from ...servers.operations import chunk_partial, execute
from ...transport.sessions import close_sessions
from ..wire.messages import EXTENSIONS, MAX_BATCH, WholeItem
from ..wire.striping import FileLayout
from ..wire.transport import ClusterClient
from .batches import ItemServer, add_batch_routes
from .serving import add_schema, cbor_response, create_base_app, operation
from .target import MAX_DECODED

CLIENT = web.AppKey("client", ClusterClient)


class Gathering:
    """Gathers the chunks asked for in one turn of the event loop (the items of a batch) with
    one MDS call and one read per OST, not a call and a read per chunk and OST."""

    def __init__(self, client: ClusterClient) -> None:
        self.client = client
        self._asked: list[tuple[ChunkRequest, asyncio.Future[bytes]]] = []
        self._running: set[asyncio.Task[None]] = set()

    async def chunk(self, chunk: ChunkRequest) -> bytes:
        """The bytes of the chunk ``chunk`` names, from the OSTs over the storage network."""
        loop = asyncio.get_running_loop()
        if not self._asked:
            loop.call_soon(self._start)
        future: asyncio.Future[bytes] = loop.create_future()
        self._asked.append((chunk, future))
        return await future

    def _start(self) -> None:
        asked, self._asked = self._asked, []
        for start in range(0, len(asked), MAX_BATCH):  # what one MDS call and read may hold
            task = asyncio.ensure_future(self._gather(asked[start:start + MAX_BATCH]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _gather(self, asked: list[tuple[ChunkRequest, asyncio.Future[bytes]]]) -> None:
        try:
            paths = [urlsplit(chunk.url).path.lstrip("/") for chunk, _ in asked]
            layouts, _ = await self.client.layouts(paths, link="storage")
            found = []
            for (chunk, future), path, layout in zip(asked, paths, layouts):
                try:
                    found.append((_stored(chunk, path, layout), future))
                except BadRequest as exc:
                    _settle(future, exception=exc)
            # Counted on the storage link by the OSTs.
            data = await self.client.gather_many([piece for piece, _ in found], link="storage")
        except Exception as exc:
            for _, future in asked:
                _settle(future, exception=exc)
            return
        for (_, future), raw in zip(found, data):
            _settle(future, raw)


def _settle(future: asyncio.Future[bytes], raw: bytes = b"",
            exception: BaseException | None = None) -> None:
    """Answer one waiting item, unless it went away meanwhile (its batch was cancelled)."""
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(raw)


GATHERING = web.AppKey("gathering", Gathering)


def _stored(chunk: ChunkRequest, path: str, layout: FileLayout | None
            ) -> tuple[FileLayout, int, int]:
    """(layout, offset, size) of the chunk's bytes in its file, checked against its size."""
    if layout is None:
        raise BadRequest(f"no file {path!r}")
    offset = chunk.offset or 0
    size = layout.size - offset if chunk.size is None else chunk.size
    if size < 0 or offset + size > layout.size:
        raise BadRequest(f"bytes {offset} to {offset + size} are outside {path!r} of "
                         f"{layout.size} bytes")
    return layout, offset, size


async def _gather(request: web.Request, chunk: ChunkRequest) -> bytes:
    """The chunk's bytes, gathered with the other chunks asked for meanwhile."""
    return await request.app[GATHERING].chunk(chunk)


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


def create_oss_app(mds: str, token: str, reductions: tuple[str, ...] = (),
                   stall_memory: float = 0.0) -> web.Application:
    """The OSS of the cluster whose MDS is at ``mds``, serving the plugin reductions
    ``reductions`` besides the built-ins; an OST that stalled or could not be reached is not
    asked again for ``stall_memory`` seconds, by any request."""
    app = create_base_app(token, reductions)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        app[CLIENT] = ClusterClient(mds, token=token, stall_memory=stall_memory)
        app[GATHERING] = Gathering(app[CLIENT])
        yield
        await close_sessions()

    app.cleanup_ctx.append(lifecycle)
    add_schema(app, EXTENSIONS)
    add_batch_routes(app, WHOLE)
    app.router.add_post("/v2/{op}", reduce)
    app.router.add_post("/v2/{op}/", reduce)
    return app

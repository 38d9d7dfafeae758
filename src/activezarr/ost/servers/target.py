"""The OST server: keeps objects in its own directory and reduces the chunk bytes it holds."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ...chunk.partial import Partial
from ...chunk.parts import Piece, reduce_pieces, trim
from ...servers.combine import encode_answer
from ...servers.errors import BadRequest
from ...servers.operations import chunk_partial
from ..wire.messages import (
    EXTENSIONS,
    LINK_HEADER,
    PartItem,
    PartRequest,
    ReadManyRequest,
    ReadRequest,
)
from ..wire.ratelimit import RateLimiter
from .batches import ItemServer, add_batch_routes
from .objects import ObjectStore
from .serving import LINKS, add_schema, cbor_response, create_base_app, operation

OBJECTS = web.AppKey("objects", ObjectStore)
MAX_DECODED = 1 << 30


def part_partial(op: str, request: PartRequest, pieces: list[Piece]
                 ) -> tuple[Partial, dict[str, Any]]:
    """The partial of the pieces of one chunk this OST holds, and the ``loose`` bytes of the
    elements its extents cut (uncompressed chunks only; left out when there are none)."""
    if request.shape is None:
        raise BadRequest("requests with extents need the chunk's shape")
    if request.codec_configs() or request.weights is not None or request.groups is not None:
        # Decoded, weighted or grouped whole: the pieces must make up the chunk.
        return chunk_partial(op, request, _whole(pieces), MAX_DECODED), {}
    partial, loose = reduce_pieces(request.chunk_reduction(op, request.shape, ()), pieces)
    return partial, {"loose": [[start, data] for start, data in loose]} if loose else {}


def encode_part(op: str, request: Any, partial: Partial, lean: bool) -> dict[str, Any]:
    """The response map of a part's (or a group of parts') partial, cut to the output cells
    it counted; ``region`` says which, when that is not all of them."""
    cut, region = trim(partial)
    answer = encode_answer(op, request, cut, lean)
    return answer if region is None else {**answer, "region": region}


def reduce_part(op: str, request: PartRequest, pieces: list[Piece]) -> dict[str, Any]:
    """The response map for the pieces of one chunk this OST holds."""
    partial, loose = part_partial(op, request, pieces)
    return {**encode_part(op, request, partial, False), **loose}


def _whole(pieces: list[Piece]) -> bytes:
    """The chunk the pieces make up, or BadRequest if they leave a gap."""
    ordered = sorted(pieces, key=lambda p: p[0])
    position = 0
    for start, data in ordered:
        if start != position:
            raise BadRequest("a chunk reduced whole (compressed, weighted or grouped) must be "
                             "wholly in one OST's extents")
        position += len(data)
    return b"".join(data for _, data in ordered)


def _fid(url: str) -> str:
    head, _, fid = url.rstrip("/").rpartition("/objects/")
    if not head or not fid:
        raise BadRequest(f"url {url!r} does not name an object (.../objects/ID)")
    return fid


async def _read_or_404(request: web.Request, fid: str, ranges: list[tuple[int, int]]
                       ) -> list[bytes]:
    try:
        return await request.app[OBJECTS].read(fid, ranges)
    except FileNotFoundError:
        raise web.HTTPNotFound(text=f"no object {fid}") from None


async def put_object(request: web.Request) -> web.Response:
    data = await request.read()
    await request.app[OBJECTS].write(request.match_info["fid"], data)
    request.app[LINKS]["disk_write"] += len(data)
    return web.json_response({"size": len(data)})


async def _read_part(request: web.Request, item: PartItem) -> list[Piece]:
    """The pieces of a batch item's chunk this OST holds; a missing object is the item's 400."""
    fid = _fid(item.url)
    try:
        raw = await request.app[OBJECTS].read(fid, [(o, n) for o, n, _ in item.extents])
    except FileNotFoundError:
        raise BadRequest(f"no object {fid} on this OST") from None
    request.app[LINKS]["disk_read"] += sum(len(r) for r in raw)
    return [(start, data) for (_, _, start), data in zip(item.extents, raw)]


PARTS = ItemServer(PartItem, stored=lambda item: sum(n for _, n, _ in item.extents),
                   read=_read_part, reduce=lambda item, pieces: part_partial(item.op, item, pieces),
                   encode=encode_part)


async def read_object(request: web.Request) -> web.Response:
    ranges = ReadRequest.model_validate_json(await request.read()).ranges
    pieces = await _read_or_404(request, request.match_info["fid"], ranges)
    return _sent(request, b"".join(pieces))


async def read_objects(request: web.Request) -> web.Response:
    """Ranges of many objects, concatenated in order (``/objects/read-many``)."""
    reads = ReadManyRequest.model_validate_json(await request.read()).reads
    pieces = await asyncio.gather(*(_read_or_404(request, read.fid, read.ranges)
                                    for read in reads))
    return _sent(request, b"".join(piece for read in pieces for piece in read))


def _sent(request: web.Request, body: bytes) -> web.Response:
    """``body``, read from disk, counted on the link the ``X-Link`` header names."""
    links = request.app[LINKS]
    links["disk_read"] += len(body)
    links["storage" if request.headers.get(LINK_HEADER) == "storage" else "lan"] += len(body)
    return web.Response(body=body, content_type="application/octet-stream")


async def delete_object(request: web.Request) -> web.Response:
    await request.app[OBJECTS].delete(request.match_info["fid"])
    return web.json_response({})


async def reduce(request: web.Request) -> web.Response:
    op = operation(request)
    part = PartRequest.model_validate_json(await request.read())
    extents = part.extents
    raw = await _read_or_404(request, _fid(part.url), [(o, n) for o, n, _ in extents])
    request.app[LINKS]["disk_read"] += sum(len(r) for r in raw)
    pieces = [(start, data) for (_, _, start), data in zip(extents, raw)]
    result = await asyncio.to_thread(reduce_part, op, part, pieces)
    return cbor_response(request, result)


def create_target_app(root: str, token: str, disk_rate: float | None = None,
                      reductions: tuple[str, ...] = ()) -> web.Application:
    """The OST serving the objects under ``root``; ``disk_rate`` in bytes per second; the
    plugin reductions ``reductions`` besides the built-ins."""
    app = create_base_app(token, reductions)
    app[OBJECTS] = ObjectStore(root, RateLimiter(disk_rate))
    add_schema(app, (*EXTENSIONS, "extents"))
    app.router.add_put("/objects/{fid}", put_object)
    app.router.add_post("/objects/read-many", read_objects)
    app.router.add_post("/objects/{fid}/read", read_object)
    app.router.add_delete("/objects/{fid}", delete_object)
    add_batch_routes(app, PARTS)
    app.router.add_post("/v2/{op}", reduce)
    app.router.add_post("/v2/{op}/", reduce)
    return app

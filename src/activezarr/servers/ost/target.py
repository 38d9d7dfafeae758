"""The OST server: keeps objects in its own directory and reduces the chunk bytes it holds."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from ...chunk.parts import Piece
from ..errors import BadRequest
from ..operations import execute
from .messages import EXTENSIONS, LINK_HEADER, PartRequest, ReadRequest
from .objects import ObjectStore
from .ratelimit import RateLimiter
from .serving import LINKS, add_schema, cbor_response, create_base_app, operation, require_token

OBJECTS = web.AppKey("objects", ObjectStore)
MAX_DECODED = 1 << 30


def reduce_part(op: str, request: PartRequest, pieces: list[Piece]) -> dict[str, Any]:
    """The response map for the pieces of one chunk this OST holds."""
    codecs = request.codec_configs()
    if request.shape is None:
        raise BadRequest("requests with extents need the chunk's shape")
    if codecs:
        return execute(op, request, _whole(pieces), MAX_DECODED)
    reduction = request.chunk_reduction(op, request.shape, ())
    partial, loose = reduction.reduce_pieces(pieces)
    return {**reduction.result_of(partial), "loose": [[start, data] for start, data in loose]}


def _whole(pieces: list[Piece]) -> bytes:
    """The chunk the pieces make up, or BadRequest if they leave a gap."""
    ordered = sorted(pieces, key=lambda p: p[0])
    position = 0
    for start, data in ordered:
        if start != position:
            raise BadRequest("a compressed chunk must be wholly in one OST's extents")
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
    require_token(request)
    data = await request.read()
    await request.app[OBJECTS].write(request.match_info["fid"], data)
    request.app[LINKS]["disk_write"] += len(data)
    return web.json_response({"size": len(data)})


async def read_object(request: web.Request) -> web.Response:
    ranges = ReadRequest.model_validate_json(await request.read()).ranges
    pieces = await _read_or_404(request, request.match_info["fid"], ranges)
    body = b"".join(pieces)
    links = request.app[LINKS]
    links["disk_read"] += len(body)
    links["storage" if request.headers.get(LINK_HEADER) == "storage" else "lan"] += len(body)
    return web.Response(body=body, content_type="application/octet-stream")


async def delete_object(request: web.Request) -> web.Response:
    require_token(request)
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


def create_target_app(root: str, token: str, disk_rate: float | None = None
                      ) -> web.Application:
    """The OST serving the objects under ``root``; ``disk_rate`` in bytes per second."""
    app = create_base_app(token)
    app[OBJECTS] = ObjectStore(root, RateLimiter(disk_rate))
    add_schema(app, (*EXTENSIONS, "extents"))
    app.router.add_put("/objects/{fid}", put_object)
    app.router.add_post("/objects/{fid}/read", read_object)
    app.router.add_delete("/objects/{fid}", delete_object)
    app.router.add_post("/v2/{op}", reduce)
    app.router.add_post("/v2/{op}/", reduce)
    return app

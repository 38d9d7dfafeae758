"""The MDS server: the cluster map and every file's layout; it never touches file data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import hdrs, web

from ...servers.errors import BadRequest
from ..wire.layouts import CBOR, encode_layouts
from ..wire.messages import (
    LINK_HEADER,
    TOKEN_HEADER,
    ClusterMap,
    CommitRequest,
    CreateRequest,
    PathRequest,
    PathsRequest,
)
from ..wire.namespace import Namespace, normalize
from ..wire.striping import FileLayout
from .serving import LINKS, TOKEN, create_base_app, log

CLUSTER = web.AppKey("cluster", ClusterMap)
NAMESPACE = web.AppKey("namespace", Namespace)
SESSION = web.AppKey("session", aiohttp.ClientSession)
#: Deletions of replaced objects still running, kept so that they are not garbage collected.
PENDING = web.AppKey("pending", set)


def _json(value: Any) -> web.Response:
    dump = getattr(value, "model_dump", None)
    return web.json_response(dump() if dump else value)


def _destroy(app: web.Application, layout: FileLayout | None) -> None:
    """Delete a replaced or removed file's objects from its OSTs, in the background."""
    if layout is None:
        return
    osts = app[CLUSTER].osts

    async def destroy() -> None:
        for ost in layout.osts:
            try:
                async with app[SESSION].delete(f"{osts[ost]}/objects/{layout.fid}",
                                               headers={TOKEN_HEADER: app[TOKEN]}):
                    pass
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("object %s on OST %d left behind: %s", layout.fid, ost, exc)

    task = asyncio.ensure_future(destroy())
    app[PENDING].add(task)
    task.add_done_callback(app[PENDING].discard)


async def cluster(request: web.Request) -> web.Response:
    return _json(request.app[CLUSTER])


async def create(request: web.Request) -> web.Response:
    body = CreateRequest.model_validate_json(await request.read())
    return _json(request.app[NAMESPACE].create(body))


async def commit(request: web.Request) -> web.Response:
    body = CommitRequest.model_validate_json(await request.read())
    if any(ost >= len(request.app[CLUSTER].osts) for ost in body.layout.osts):
        raise BadRequest(f"layout {body.layout.fid} names OSTs beyond the cluster's")
    _destroy(request.app, request.app[NAMESPACE].commit(body.path, body.layout))
    return _json({})


async def stat(request: web.Request) -> web.Response:
    path = PathRequest.model_validate_json(await request.read()).path
    entry = request.app[NAMESPACE].stat(path)
    if entry is None:
        raise web.HTTPNotFound(text=f"no such file or directory: {path!r}")
    return _json(entry)


async def layouts(request: web.Request) -> web.Response:
    """The layouts of many files at once (null where no file is): one call per batch of
    chunks, not one per chunk. This is most of what a reduction's layout lookups cost on the
    LAN: CBOR columns for callers that accept them (:mod:`.layouts`), else compact JSON."""
    files = request.app[NAMESPACE].files
    paths = PathsRequest.model_validate_json(await request.read()).paths
    found = [files.get(normalize(path)) for path in paths]
    if CBOR in request.headers.get(hdrs.ACCEPT, ""):
        body, content_type = encode_layouts(found), CBOR
    else:
        body = json.dumps([None if layout is None else layout.model_dump() for layout in found],
                          separators=(",", ":")).encode()
        content_type = "application/json"
    if request.headers.get(LINK_HEADER) != "storage":  # a client's reduction: its LAN bytes
        request.app[LINKS]["lan"] += len(body)
    return web.Response(body=body, content_type=content_type)


async def listing(request: web.Request) -> web.Response:
    path = PathRequest.model_validate_json(await request.read()).path
    entries = request.app[NAMESPACE].list(path)
    if entries is None:
        raise web.HTTPNotFound(text=f"no such file or directory: {path!r}")
    return _json([e.model_dump() for e in entries])


async def remove(request: web.Request) -> web.Response:
    path = PathRequest.model_validate_json(await request.read()).path
    layout = request.app[NAMESPACE].remove(path)
    if layout is None:
        raise web.HTTPNotFound(text=f"no such file: {path!r}")
    _destroy(request.app, layout)
    return _json({})


def create_mds_app(state: str, cluster_map: ClusterMap, token: str) -> web.Application:
    """The MDS of ``cluster_map``, keeping its namespace in the JSON file ``state``."""
    app = create_base_app(token)
    app[CLUSTER] = cluster_map
    app[NAMESPACE] = Namespace(state, len(cluster_map.osts), cluster_map.stripe_size,
                               cluster_map.stripe_count)
    app[PENDING] = set()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            app[SESSION] = session
            yield
            await asyncio.gather(*app[PENDING], return_exceptions=True)

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/cluster", cluster)
    for name, handler in (("create", create), ("commit", commit), ("stat", stat),
                          ("layouts", layouts), ("list", listing), ("remove", remove)):
        app.router.add_post(f"/files/{name}", handler)
    return app

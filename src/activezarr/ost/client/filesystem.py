"""The ``ost`` fsspec protocol: files striped round-robin over the OSTs of a cluster.

URL: ``ost://HOST:PORT/path`` with the MDS's address. Storage options ``stripe_size`` and
``stripe_count`` (-1: all OSTs) set how new files are striped, as ``lfs setstripe`` does;
``timeout`` bounds every request in seconds (30), ``connect_timeout`` a connection (3), and
``read_timeout`` (3) how long a server may keep silent before its ``/healthz`` must answer
within as long: a stopped or hung server is named after at most twice ``read_timeout``, and
during a reduction it is not asked again. A connection refused or reset and a 502 or 503 are
tried again ``retries`` times (3) within ``retry_within`` seconds (30) of the first attempt,
as the active servers' pool does (:mod:`activezarr.transport.http`). ``token`` is the
cluster's token, which every call needs (default: the one this process's cluster registered,
else ``$ACTIVEZARR_OST_TOKEN``).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

from fsspec.asyn import AsyncFileSystem
from fsspec.spec import AbstractBufferedFile

from ...transport.http import DEFAULT_READ_TIMEOUT, Retries
from ..wire.messages import CreateRequest, Entry
from ..wire.namespace import normalize
from ..wire.striping import FileLayout
from ..wire.transport import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    ClusterClient,
    RemoteError,
)


class OSTFileSystem(AsyncFileSystem):
    """Create, write (striped), read (ranges gathered from the OSTs), list, info and delete."""

    protocol = "ost"
    root_marker = ""

    def __init__(self, host: str, stripe_size: int | None = None,
                 stripe_count: int | None = None, timeout: float = DEFAULT_TIMEOUT,
                 token: str | None = None, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 read_timeout: float = DEFAULT_READ_TIMEOUT, retries: int = Retries.retries,
                 retry_within: float = Retries.within, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host
        self.stripe_size = stripe_size
        self.stripe_count = stripe_count
        self.client = ClusterClient(f"http://{host}", timeout, token, connect_timeout,
                                    read_timeout, Retries(retries, retry_within))

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("ost://"):
            path = urlsplit(path).path
        return normalize(path)

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        host = urlsplit(path).netloc if path.startswith("ost://") else ""
        return {"host": host} if host else {}

    def unstrip_protocol(self, name: str) -> str:
        return name if name.startswith("ost://") else f"ost://{self.host}/{normalize(name)}"

    async def _entry(self, path: str) -> Entry:
        entry = await self.client.stat(self._strip_protocol(path))
        if entry is None:
            raise FileNotFoundError(path)
        return entry

    async def layout(self, path: str) -> FileLayout:
        """The striping of the file at ``path``."""
        entry = await self._entry(path)
        if entry.layout is None:
            raise IsADirectoryError(path)
        return entry.layout

    @staticmethod
    def _info_of(entry: Entry) -> dict[str, Any]:
        info: dict[str, Any] = {"name": entry.name, "size": entry.size, "type": entry.type}
        if entry.layout is not None:
            info["layout"] = entry.layout.model_dump()
        return info

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._info_of(await self._entry(path))

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        listed = await self.client.mds_call("POST", "/files/list", {"path": path},
                                            missing_ok=True)
        if listed is None:
            raise FileNotFoundError(path)
        infos = [self._info_of(Entry.model_validate(e)) for e in listed]
        return infos if detail else [i["name"] for i in infos]

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None,
                        **kwargs: Any) -> bytes:
        layout = await self.layout(path)
        begin, stop, _ = slice(start, end).indices(layout.size)
        return await self.client.gather(layout, begin, max(0, stop - begin))

    async def _pipe_file(self, path: str, value: bytes, mode: str = "overwrite",
                         stripe_size: int | None = None, stripe_count: int | None = None,
                         **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        if mode == "create" and await self._exists(path):
            raise FileExistsError(path)
        data = bytes(value)
        create = CreateRequest(path=path, size=len(data),
                               stripe_size=stripe_size or self.stripe_size,
                               stripe_count=self.stripe_count if stripe_count is None
                               else stripe_count)
        layout = FileLayout.model_validate(
            await self.client.mds_call("POST", "/files/create", create.model_dump()))
        osts = (await self.client.cluster()).osts
        await asyncio.gather(*(
            self.client.request("PUT", f"{osts[ost]}/objects/{layout.fid}", data=part)
            for ost, part in layout.objects(data).items()
        ))
        await self.client.mds_call("POST", "/files/commit",
                                   {"path": path, "layout": layout.model_dump()})

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        try:
            await self.client.mds_call("POST", "/files/remove", {"path": path})
        except RemoteError as exc:
            raise FileNotFoundError(path) if exc.status == 404 else exc from None

    async def _rm(self, path: Any, recursive: bool = False, **kwargs: Any) -> None:
        # Directories are implied by file names: removing a directory's files removes it.
        paths = await self._expand_path(path, recursive=recursive)
        files = [p for p in paths if (await self._info(p))["type"] == "file"]
        await asyncio.gather(*(self._rm_file(p) for p in files))

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict[str, Any] | None = None,
              **kwargs: Any) -> OSTFile:
        return OSTFile(self, path, mode, block_size or "default", autocommit,
                       cache_options=cache_options, **kwargs)

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Nothing to do: directories exist while files are in them."""

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Nothing to do: directories exist while files are in them."""


class OSTFile(AbstractBufferedFile):
    """Reads ranges on demand; a written file is striped in one go when it is closed."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs.cat_file(self.path, start=start, end=end)

    def _initiate_upload(self) -> None:
        self._parts: list[bytes] = []

    def _upload_chunk(self, final: bool = False) -> bool:
        self._parts.append(self.buffer.getvalue())
        if final:
            self.fs.pipe_file(self.path, b"".join(self._parts))
        return True

"""The ``active`` fsspec protocol: ``active::s3://bucket/x.zarr`` opens any URL for reductions.

It wraps the target filesystem and passes every operation through, so zarr reads and writes
as usual; it only carries the backend options (``storage_options={"active": {...}}``) for
:class:`~activezarr.ActiveReduction` to find.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.core import split_protocol
from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper
from fsspec.implementations.chained import ChainedFileSystem

from ..backends.base import check_active_options

#: The primitives fsspec builds everything else on; each goes straight to the target.
_PASSED_THROUGH = ("_cat_file", "_pipe_file", "_info", "_ls", "_rm_file", "_mkdir",
                   "_makedirs", "_put_file", "_get_file", "_exists")


class ActiveFileSystem(AsyncFileSystem, ChainedFileSystem):
    """A pass-through filesystem over ``target_protocol`` that remembers the active options.

    ``fo`` (the target path, passed by fsspec's URL chaining) is not needed: paths go through.
    """

    protocol = "active"

    def __init__(self, target_protocol: str | None = None,
                 target_options: dict[str, Any] | None = None,
                 fs: fsspec.AbstractFileSystem | None = None, fo: str | None = None,
                 asynchronous: bool = False, loop: Any = None, **active: Any) -> None:
        super().__init__(asynchronous=asynchronous, loop=loop)
        if fs is None:
            if target_protocol is None:
                raise ValueError("active:: needs a target URL, e.g. 'active::s3://bucket/x.zarr'")
            options = with_async_references(target_protocol, target_options or {},
                                            asynchronous)
            target_class = fsspec.get_filesystem_class(target_protocol)
            if target_class.async_impl:
                options.setdefault("asynchronous", asynchronous)
            if target_protocol in ("file", "local"):
                options.setdefault("auto_mkdir", True)  # writing a store creates its folders
            fs = target_class(**options)
        self.target_protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.target_options = dict(target_options or {})
        self.target = fs if fs.async_impl else AsyncFileSystemWrapper(fs, asynchronous=asynchronous)
        check_active_options(self.target_protocol, active)
        self.active = active


def with_async_references(protocol: str, options: Mapping[str, Any],
                          asynchronous: bool) -> dict[str, Any]:
    """``options`` for a ``protocol`` filesystem, with a reference filesystem's remote one made
    as (a)synchronous as itself: fsspec refuses a mismatch, and zarr opens references
    asynchronously whatever ``remote_options`` said."""
    options = dict(options)
    if protocol != "reference":
        return options
    remote = options.get("remote_protocol") or _first_protocol(options.get("fo"))
    if remote and fsspec.get_filesystem_class(remote).async_impl:
        options["remote_options"] = {**(options.get("remote_options") or {}),
                                     "asynchronous": asynchronous}
    return options


def _first_protocol(references: Any) -> str | None:
    """The protocol fsspec would pick for references without ``remote_protocol``."""
    if not isinstance(references, Mapping):
        return None  # a URL of a JSON or parquet file: fsspec reads it itself
    candidates = [*(references.get("templates") or {}).values(),
                  *((ref[0] if isinstance(ref, list) and ref else None)
                    for ref in (references.get("refs") or references).values())]
    for url in candidates:
        protocol = split_protocol(url)[0] if isinstance(url, str) and "{{" not in url else None
        if protocol:
            return protocol
    return None


def _pass_through(name: str) -> Any:
    async def method(self: ActiveFileSystem, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.target, name)(*args, **kwargs)

    method.__name__ = name
    return method


for _name in _PASSED_THROUGH:
    setattr(ActiveFileSystem, _name, _pass_through(_name))

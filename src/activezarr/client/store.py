"""``ActiveStore``: a zarr store that also knows how to reach its storage side."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.utils import get_protocol
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from ..backends.base import check_active_options
from ..errors import UnsupportedArrayError
from ..transport.sync import run_sync
from .filesystem import ActiveFileSystem, with_async_references
from .icechunk_references import references

#: What works for icechunk data: icechunk >= 2.1 tells where each chunk's bytes are, so an
#: ActiveStore on its references reduces them beside their objects and source files.
ICECHUNK_ADVICE = (
    "to reduce storage-side, open the repository with activezarr.ActiveStore.from_icechunk("
    "store, '<repository URL>') or, for a local one, ActiveStore.from_url('<its folder>') "
    "(icechunk 2.1 or later, which tells where each chunk's bytes are)")


def is_icechunk(store: Store) -> bool:
    """Whether ``store`` is an icechunk store (told by its class, without importing icechunk)."""
    return type(store).__module__.partition(".")[0] == "icechunk"


def client_only_reason(store: Store) -> str:
    """Why a store that is not an :class:`ActiveStore` is reduced on the client, and what works."""
    if is_icechunk(store):
        return ICECHUNK_ADVICE
    return (f"{type(store).__name__} is not opened through activezarr "
            "(use activezarr.ActiveStore.from_url or an active:: URL)")


def _is_icechunk_repository(fs: fsspec.AbstractFileSystem, root: str) -> bool:
    """Whether the folder ``root`` holds an icechunk repository rather than a zarr group, whose
    members could bear the same names: a ``snapshots`` folder beside the ``refs`` folder of
    icechunk 1's format or the ``repo`` file of icechunk 2's."""
    return (fs.isdir(f"{root}/snapshots")
            and (fs.isdir(f"{root}/refs") or fs.isfile(f"{root}/repo"))
            and not any(fs.exists(f"{root}/{name}") for name in ("zarr.json", ".zgroup")))


class ActiveStore(WrapperStore[Store]):
    """Wraps any zarr store; plain reads and writes pass through unchanged.

    It adds what a backend needs: the fsspec ``protocol`` that picks the backend, the
    filesystem and ``root`` path, the ``storage_options`` and the ``active`` backend options.
    """

    def __init__(self, store: Store, *, protocol: str, root: str = "",
                 fs: fsspec.AbstractFileSystem | None = None,
                 storage_options: Mapping[str, Any] | None = None,
                 active: Mapping[str, Any] | None = None) -> None:
        super().__init__(store)
        self.protocol = protocol
        self.root = root
        self.fs = fs
        self.storage_options = dict(storage_options or {})
        self.active = dict(active or {})
        check_active_options(protocol, self.active)

    @classmethod
    def from_url(cls, url: str, storage_options: Mapping[str, Any] | None = None,
                 active: Mapping[str, Any] | None = None, read_only: bool = False) -> ActiveStore:
        """A store for any fsspec URL: a local path, ``s3://``, ``reference://``..."""
        if not isinstance(url, str):
            raise TypeError(f"ActiveStore.from_url takes a URL, not an IcechunkStore: "
                            f"{ICECHUNK_ADVICE}" if is_icechunk(url) else
                            f"ActiveStore.from_url takes a URL, not {type(url).__name__}; "
                            "wrap a zarr store with ActiveStore.of or open it by URL")
        options = dict(storage_options or {})
        if url.removeprefix("active::").startswith("icechunk://"):  # not an fsspec protocol
            url = url.removeprefix("active::").removeprefix("icechunk://")
            if get_protocol(url) not in ("file", "local"):
                raise UnsupportedArrayError(
                    f"icechunk://{url}: from_url opens local icechunk repositories; for one "
                    "elsewhere use activezarr.ActiveStore.from_icechunk(store, '<repository URL>')")
        if get_protocol(url) in ("file", "local"):
            fs, root = fsspec.core.url_to_fs(url, **options)
            if _is_icechunk_repository(fs, root):
                return cls._from_local_icechunk(root, active)
            return cls(LocalStore(root, read_only=read_only), protocol="file", root=root, fs=fs,
                       storage_options=options, active=active)
        # zarr opens filesystems asynchronously; a reference one's remote must match.
        options = with_async_references(get_protocol(url), options, asynchronous=True)
        inner = FsspecStore.from_url(url, storage_options=options, read_only=read_only)
        store = cls.of(inner, active)
        if store is not None:  # active::...: the options given with the URL count too
            return store
        fs = inner.fs
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        return cls(inner, protocol=protocol, root=inner.path, fs=fs, storage_options=options,
                   active=active)

    @classmethod
    def from_icechunk(cls, store: Store, url: str,
                      storage_options: Mapping[str, Any] | None = None,
                      active: Mapping[str, Any] | None = None) -> ActiveStore:
        """A read-only store on an icechunk session's snapshot, reduced where its bytes are.

        ``url`` is where the repository lives (``s3://bucket/prefix``, a local folder): native
        chunks are objects under it; ``storage_options`` reach it (and, with ``active``, the
        sources of virtual chunks). Needs icechunk 2.1 or later.
        """
        if not is_icechunk(store):
            raise TypeError(f"ActiveStore.from_icechunk takes an IcechunkStore, not "
                            f"{type(store).__name__}; open other stores with from_url")
        protocol = get_protocol(url)
        if protocol in ("file", "local"):
            url = "file://" + os.path.abspath(fsspec.core.strip_protocol(url))
        refs = run_sync(references(store, url))
        options = {"fo": refs, "remote_protocol": protocol,
                   "remote_options": dict(storage_options or {})}
        return cls.from_url("reference://", storage_options=options, active=active,
                            read_only=True)

    @classmethod
    def _from_local_icechunk(cls, root: str, active: Mapping[str, Any] | None) -> ActiveStore:
        """The main branch of the icechunk repository in the folder ``root``."""
        import icechunk

        repository = icechunk.Repository.open(icechunk.local_filesystem_storage(root))
        return cls.from_icechunk(repository.readonly_session("main").store, root, active=active)

    @classmethod
    def of(cls, store: Store, active: Mapping[str, Any] | None = None) -> ActiveStore | None:
        """The active view of any zarr store: itself, one opened via ``active::``, or None.

        ``active`` options add to those an ``active::`` URL carried.
        """
        if isinstance(store, ActiveStore):
            return store
        fs = getattr(store, "fs", None)
        if isinstance(fs, ActiveFileSystem) and isinstance(store, FsspecStore):
            return cls(store, protocol=fs.target_protocol, root=store.path, fs=fs.target,
                       storage_options=fs.target_options, active={**fs.active, **(active or {})})
        return None

    def _with_store(self, store: Store) -> ActiveStore:
        # zarr copies stores (with_read_only); the copy keeps the backend options.
        return type(self)(store, protocol=self.protocol, root=self.root, fs=self.fs,
                          storage_options=self.storage_options, active=self.active)

    def __repr__(self) -> str:
        return f"ActiveStore({self.protocol}://{self.root}, active={self.active})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, ActiveStore) and self._store == other._store
                and self.active == other.active)

    __hash__ = None  # type: ignore[assignment]

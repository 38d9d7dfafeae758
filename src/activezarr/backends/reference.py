"""kerchunk references: each key names a byte range of another file; local ones reduce here."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from fsspec.core import split_protocol
from zarr.abc.store import Store

from ..errors import StorageUnavailableError, UnsupportedArrayError
from ..planner import ChunkTask
from .base import backends
from .file import FileBackend, _read


@backends.register("reference")
class ReferenceBackend(FileBackend):
    """Resolves each chunk key to (url, offset, size) and reduces local targets in the pool.

    Chunks whose target is not a local file are left to the client path (counted as fallbacks)
    until their protocol's backend can take byte ranges of arbitrary objects.
    """

    name = "reference"

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(store, options)
        fs = getattr(store, "fs", None)
        fs = getattr(fs, "sync_fs", fs)  # zarr wraps the synchronous reference filesystem
        references = getattr(fs, "references", None)
        if references is None:
            raise UnsupportedArrayError("the reference backend needs a kerchunk reference store")
        self.fs = fs
        self.references = references

    def _read_task(self, task: ChunkTask) -> bytes | None:
        key = posixpath.join(self.root, task.key) if self.root else task.key
        ref = self.references.get(key)
        if ref is None:
            return None
        if not isinstance(ref, list):  # inlined data, possibly base64: fsspec decodes it
            raw = self.fs.cat_file(key)
            if task.byte_range is not None:
                offset, length = task.byte_range
                raw = raw[offset:offset + length]
            return raw
        url = ref[0]
        protocol, path = split_protocol(url)
        if protocol not in (None, "file", "local"):
            raise StorageUnavailableError(f"reference target {url!r} is not a local file")
        if len(ref) == 1:
            return _read(path, task.byte_range)
        offset, size = int(ref[1]), int(ref[2])
        if task.byte_range is not None:
            offset, size = offset + task.byte_range[0], task.byte_range[1]
        return _read(path, (offset, size))

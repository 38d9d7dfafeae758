"""``ChunkReduction``: "decode this chunk and reduce it" as a numcodecs codec.

Its JSON config is the whole request, so any storage-side process rebuilds it with
``numcodecs.get_codec(config)`` and runs ``decode(raw)``, which returns the encoded partial.
"""

from __future__ import annotations

from typing import Any

from numcodecs.abc import Codec

from .kernel import ChunkKernel
from .partial import encode_partial
from .spec import ChunkSpec, check_selection


class ChunkReduction(Codec):
    """Decode one stored chunk with the inner codecs, then reduce a selection of it."""

    codec_id = "activezarr.chunk_reduction"

    def __init__(self, selection: Any = None, **spec: Any) -> None:
        self.spec = ChunkSpec(**spec)
        ndim = len(self.spec.shape)
        if selection is None:
            selection = [[0, n, 1] for n in self.spec.shape]
        self.selection = check_selection(selection, ndim)
        self._kernel = ChunkKernel(self.spec)

    def encode(self, buf: Any) -> bytes:
        raise NotImplementedError(
            "ChunkReduction only decodes: it reduces stored chunks and cannot produce them"
        )

    def decode(self, buf: Any, out: Any = None) -> bytes:
        """CBOR-encoded :class:`~activezarr.chunk.partial.Partial` of the selection of ``buf``."""
        if out is not None:
            raise ValueError("ChunkReduction returns a new partial; 'out' is not supported")
        return encode_partial(self._kernel.reduce(buf, self.selection))

    def get_config(self) -> dict[str, Any]:
        return {
            "id": self.codec_id,
            **self.spec.model_dump(mode="json"),
            "selection": [list(s) for s in self.selection],
        }

    def __repr__(self) -> str:
        return f"ChunkReduction(dtype={self.spec.dtype!r}, shape={self.spec.shape}, fields={self.spec.fields})"

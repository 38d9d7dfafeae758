"""The codec allow-list and the decode chain that turns stored chunk bytes into raw elements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numcodecs
import numpy as np
from numcodecs.compat import ensure_contiguous_ndarray

from .errors import ChunkDecodeError, CodecNotAllowedError

#: Codecs a storage side may run: pure byte/number transforms. Pickle, JSON and the object
#: codecs (vlen-*, categorize) are absent on purpose: they can execute or allocate arbitrarily.
ALLOWED_CODECS = frozenset({
    "zlib", "gzip", "zstd", "blosc", "lz4", "bz2", "lzma",
    "shuffle", "delta", "fixedscaleoffset", "quantize", "bitround", "astype",
    "crc32", "crc32c", "adler32", "fletcher32", "jenkins_lookup3",
})


def check_codec_allowed(config: Mapping[str, Any]) -> None:
    """Raise :class:`CodecNotAllowedError` unless ``config`` names an allow-listed codec."""
    codec_id = config.get("id") if isinstance(config, Mapping) else None
    if codec_id not in ALLOWED_CODECS:
        raise CodecNotAllowedError(
            f"codec {codec_id!r} is not allowed; allowed codecs: {', '.join(sorted(ALLOWED_CODECS))}"
        )


class CodecChain:
    """Numcodecs codecs in encode order; ``decode`` undoes them and checks the decoded size."""

    def __init__(self, configs: Iterable[Mapping[str, Any]]) -> None:
        self.configs = tuple(dict(c) for c in configs)
        for config in self.configs:
            check_codec_allowed(config)
        self._codecs = tuple(numcodecs.get_codec(dict(c)) for c in self.configs)

    def decode(self, raw: Any, nbytes: int, key: str | None = None) -> np.ndarray:
        """The decoded bytes as a flat uint8 array of exactly ``nbytes`` bytes."""
        buf = raw
        try:
            for codec in reversed(self._codecs):
                buf = codec.decode(buf)
            flat = ensure_contiguous_ndarray(buf).reshape(-1).view(np.uint8)
        except ChunkDecodeError:
            raise
        except Exception as exc:  # codecs raise anything from zlib.error to RuntimeError
            raise ChunkDecodeError(f"cannot decode: {exc}", key) from exc
        if flat.nbytes != nbytes:
            raise ChunkDecodeError(f"decoded to {flat.nbytes} bytes, expected {nbytes}", key)
        return flat

"""The codec allow-list and the decode chain that turns stored chunk bytes into raw elements."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numcodecs
import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_contiguous_ndarray, ndarray_copy

from .errors import ChunkDecodeError, CodecNotAllowedError

#: Codecs a storage side may run: pure byte/number transforms. Pickle, JSON and the object
#: codecs (vlen-*, categorize) are absent on purpose: they can execute or allocate arbitrarily.
ALLOWED_CODECS = frozenset({
    "zlib", "gzip", "zstd", "blosc", "blosc2", "lz4", "bz2", "lzma",
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


#: Streaming decompressors for the outermost codec, so that a bomb stops at the expected size.
_STREAMING: dict[str, Callable[[], Any]] = {
    "zlib": zlib.decompressobj,
    "gzip": lambda: zlib.decompressobj(16 + zlib.MAX_WBITS),
}
#: Inner filters may widen the stored elements (astype to 8 bytes) or add checksums, so the
#: outermost codec may legitimately produce more than the decoded size, never this much more.
_MAX_WIDENING = 8
_SLACK = 1024


def _decoded_bound(configs: tuple[dict[str, Any], ...], nbytes: int) -> int:
    return nbytes if len(configs) == 1 else _MAX_WIDENING * nbytes + _SLACK


def _bounded_decode(config: Mapping[str, Any], raw: Any, limit: int) -> Any:
    """Undo the outermost codec without producing more than ``limit`` bytes, or None to defer."""
    codec_id = config["id"]
    if codec_id in _STREAMING:
        stream = _STREAMING[codec_id]()
        out = stream.decompress(memoryview(ensure_contiguous_ndarray(raw)).cast("B"), limit + 1)
        if len(out) > limit:
            raise ValueError(f"{codec_id} stream inflates past {limit} bytes")
        if not stream.eof:
            raise ValueError(f"{codec_id} stream is truncated")
        return out
    if codec_id in ("blosc", "blosc2"):
        header = memoryview(ensure_contiguous_ndarray(raw)).cast("B")[:16]
        # A Blosc (1 or 2) chunk header states the decompressed size (bytes 4-8, little-endian)
        # before anything is allocated.
        if len(header) == 16 and int.from_bytes(header[4:8], "little") > limit:
            raise ValueError(f"{codec_id} header announces more than {limit} bytes")
    return None


class Blosc2(Codec):
    """Blosc2 chunks, Reductionist's ``blosc2`` compression; numcodecs has no Blosc2 codec."""

    codec_id = "blosc2"

    def __init__(self, typesize: int = 1, clevel: int = 5) -> None:
        if typesize < 1 or not 0 <= clevel <= 9:
            raise ValueError(f"blosc2 needs typesize >= 1 and clevel 0-9, got {typesize}, {clevel}")
        self.typesize = typesize
        self.clevel = clevel

    def encode(self, buf: Any) -> bytes:
        import blosc2

        return blosc2.compress(ensure_contiguous_ndarray(buf), typesize=self.typesize,
                               clevel=self.clevel)

    def decode(self, buf: Any, out: Any = None) -> Any:
        import blosc2

        return ndarray_copy(blosc2.decompress(ensure_bytes(buf)), out)


numcodecs.register_codec(Blosc2)


class CodecChain:
    """Numcodecs codecs in encode order; ``decode`` undoes them and checks the decoded size."""

    def __init__(self, configs: Iterable[Mapping[str, Any]]) -> None:
        self.configs = tuple(dict(c) for c in configs)
        for config in self.configs:
            check_codec_allowed(config)
        self._codecs = tuple(numcodecs.get_codec(dict(c)) for c in self.configs)

    def decode(self, raw: Any, nbytes: int, key: str | None = None) -> np.ndarray:
        """The decoded bytes as a flat uint8 array of exactly ``nbytes`` bytes."""
        flat = self.decode_within(raw, nbytes, key)
        if flat.nbytes != nbytes:
            raise ChunkDecodeError(f"decoded to {flat.nbytes} bytes, expected {nbytes}", key)
        return flat

    def decode_within(self, raw: Any, limit: int, key: str | None = None) -> np.ndarray:
        """The decoded bytes as a flat uint8 array, stopping a stream that inflates past ``limit``.

        For callers that do not know the decoded size in advance (a 1-D chunk of any length).
        """
        buf = raw
        codecs = self._codecs
        try:
            if codecs:
                outer = _bounded_decode(self.configs[-1], raw, _decoded_bound(self.configs, limit))
                if outer is not None:
                    buf, codecs = outer, codecs[:-1]
            for codec in reversed(codecs):
                buf = codec.decode(buf)
            flat = ensure_contiguous_ndarray(buf).reshape(-1).view(np.uint8)
        except ChunkDecodeError:
            raise
        except Exception as exc:  # codecs raise anything from zlib.error to RuntimeError
            raise ChunkDecodeError(f"cannot decode: {exc}", key) from exc
        if flat.nbytes > limit:
            raise ChunkDecodeError(f"decoded to {flat.nbytes} bytes, more than {limit}", key)
        return flat

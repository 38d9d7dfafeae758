"""The codec allow-list and the decode chain that turns stored chunk bytes into raw elements."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numcodecs
import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_bytes, ensure_contiguous_ndarray, ndarray_copy

from ..errors import ChunkDecodeError, CodecNotAllowedError
from .codec_bounds import (
    DecodeBoundError,
    bounded_decode,
    check_config,
    output_bounds,
    unshuffle_rows,
)

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
    if not isinstance(codec_id, str) or codec_id not in ALLOWED_CODECS:
        raise CodecNotAllowedError(
            f"codec {codec_id!r} is not allowed; allowed codecs: {', '.join(sorted(ALLOWED_CODECS))}"
        )


class Blosc2(Codec):  # type: ignore[misc]  # numcodecs has no type information
    """Blosc2 chunks, Reductionist's ``blosc2`` compression; numcodecs has no Blosc2 codec."""

    codec_id = "blosc2"

    def __init__(self, typesize: int = 1, clevel: int = 5) -> None:
        if typesize < 1 or not 0 <= clevel <= 9:
            raise ValueError(f"blosc2 needs typesize >= 1 and clevel 0-9, got {typesize}, {clevel}")
        self.typesize = typesize
        self.clevel = clevel

    def encode(self, buf: Any) -> bytes:
        import blosc2

        compressed: bytes = blosc2.compress(ensure_contiguous_ndarray(buf),
                                            typesize=self.typesize, clevel=self.clevel)
        return compressed

    def decode(self, buf: Any, out: Any = None) -> Any:
        import blosc2

        if out is not None:  # straight into the caller's buffer, its size already checked
            blosc2.decompress(ensure_bytes(buf), dst=ensure_contiguous_ndarray(out))
            return out
        return ndarray_copy(blosc2.decompress(ensure_bytes(buf)), out)


numcodecs.register_codec(Blosc2)


def byte_view(buf: Any) -> memoryview:
    """``buf``'s bytes as a flat memoryview, without a copy.

    Each codec's output goes through this, once per codec and chunk: the buffer protocol
    directly, numcodecs' slower conversion only for what does not export a buffer.
    """
    try:
        view = memoryview(buf)
    except TypeError:
        view = memoryview(ensure_contiguous_ndarray(buf))
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


class CodecChain:
    """Numcodecs codecs in encode order; ``decode`` undoes them and checks the decoded size.

    Each codec is undone with a bound on what it may produce (:mod:`.codec_bounds`), so that no
    stored chunk, however crafted, makes a decoder allocate past the expected size.
    """

    def __init__(self, configs: Iterable[Mapping[str, Any]]) -> None:
        self.configs = tuple(dict(c) for c in configs)
        for config in self.configs:
            check_codec_allowed(config)
        try:
            for config in self.configs:
                check_config(config)
            self._codecs = tuple(numcodecs.get_codec(dict(c)) for c in self.configs)
        except Exception as exc:  # numcodecs constructors raise anything on bad parameters
            raise CodecNotAllowedError(f"codec configs {list(self.configs)} are not valid: "
                                       f"{exc}") from exc

    def decode(self, raw: Any, nbytes: int, key: str | None = None) -> np.ndarray:
        """The decoded bytes as a flat uint8 array of exactly ``nbytes`` bytes."""
        return self._exactly(self.decode_within(raw, nbytes, key), nbytes, key)

    def decode_stack(self, raws: Sequence[Any], nbytes: int, keys: Sequence[str | None]
                     ) -> np.ndarray:
        """Each of ``raws`` decoded to exactly ``nbytes`` bytes, a row each of a uint8 array.

        A byte shuffle undone last (the first filter) is undone once for all the rows: its
        copies then span every chunk, few and long, instead of a few short ones per chunk,
        each of which passes the GIL between threads.
        """
        out = np.empty((len(raws), nbytes), np.uint8)
        elementsize = self._last_shuffle(nbytes)
        steps = self._steps(nbytes, skip=1 if elementsize else 0)
        for i, (raw, key) in enumerate(zip(raws, keys)):
            out[i] = self._exactly(self._undo(steps, raw, nbytes, key), nbytes, key)
        if elementsize:
            out = unshuffle_rows(out, elementsize)
        return out

    def _last_shuffle(self, nbytes: int) -> int:
        """The element size of a byte shuffle undone last, if :meth:`decode_stack` may undo it
        on a whole stack (whole elements), else 0."""
        if not self.configs or self.configs[0]["id"] != "shuffle":
            return 0
        size = int(self._codecs[0].elementsize)
        return size if size > 1 and nbytes % size == 0 else 0

    @staticmethod
    def _exactly(flat: np.ndarray, nbytes: int, key: str | None) -> np.ndarray:
        if flat.nbytes != nbytes:
            raise ChunkDecodeError(f"decoded to {flat.nbytes} bytes, expected {nbytes}", key)
        return flat

    def decode_within(self, raw: Any, limit: int, key: str | None = None) -> np.ndarray:
        """The decoded bytes as a flat uint8 array of at most ``limit`` bytes.

        For callers that do not know the decoded size in advance (a 1-D chunk of any length).
        """
        return self._undo(self._steps(limit), raw, limit, key)

    def _steps(self, limit: int, skip: int = 0) -> list[tuple[dict[str, Any], Codec, int]]:
        """Each codec to undo, last first, with the most it may produce for a chunk of at most
        ``limit`` bytes; ``skip``: how many of the first filters (undone last) to leave out."""
        bounds = output_bounds(self.configs, limit)
        return list(zip(self.configs, self._codecs, bounds))[skip:][::-1]

    @staticmethod
    def _undo(steps: list[tuple[dict[str, Any], Codec, int]], raw: Any, limit: int,
              key: str | None) -> np.ndarray:
        """``raw`` with ``steps`` undone, as a flat uint8 array of at most ``limit`` bytes."""
        try:
            data = byte_view(raw)
            for config, codec, bound in steps:
                data = byte_view(bounded_decode(config, codec, data, bound))
                if len(data) > bound:
                    raise DecodeBoundError(f"{config['id']} decoded past {bound} bytes")
            flat = np.frombuffer(data, np.uint8)
        except ChunkDecodeError:
            raise
        except Exception as exc:  # codecs raise anything from zlib.error to RuntimeError
            raise ChunkDecodeError(f"cannot decode: {exc}", key) from exc
        if flat.nbytes > limit:
            raise ChunkDecodeError(f"decoded to {flat.nbytes} bytes, more than {limit}", key)
        return flat

"""How big each allow-listed codec's output may be, and decoding that never exceeds it.

Every codec undone on a storage side is given the most bytes it may produce before it allocates
anything: compressors through streaming decompressors with a maximum length or through headers
checked against the bytes actually read; filters through their fixed size ratios. A compressed
chunk is one stream (frame, member), as numcodecs writes it. A C decoder never sees a length
field that was not checked against the buffer it is handed.
"""

from __future__ import annotations

import bz2
import lzma
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# libdeflate inflates a whole zlib stream into a buffer of a given size, GIL released, in
# about 75% of zlib-ng's CPU time (a 64 KiB netCDF chunk, loaded machine: 108 against 141 us).
from deflate import DeflateError, zlib_decompress
from numcodecs.abc import Codec

# zlib-ng inflates the same streams as CPython's zlib (same API and errors' messages) in about
# 60% of the time: deflate is netCDF4/HDF5's usual compressor, so chunk decoding is mostly this.
from zlib_ng import zlib_ng as zlib

COMPRESSORS = frozenset({"zlib", "gzip", "zstd", "blosc", "blosc2", "lz4", "bz2", "lzma"})
CHECKSUMS = frozenset({"crc32", "crc32c", "adler32", "fletcher32", "jenkins_lookup3"})
#: Filters that change the element dtype: (config key of the decoded dtype, of the stored dtype).
_DTYPE_FILTERS = {
    "astype": ("decode_dtype", "encode_dtype"),
    "fixedscaleoffset": ("dtype", "astype"),
    "quantize": ("dtype", "astype"),
    "delta": ("dtype", "astype"),
}
#: Memory an LZMA decoder may take for its dictionary (a header may ask for 4 GiB).
LZMA_MEMORY = 128 * 2**20


class DecodeBoundError(ValueError):
    """Stored bytes that would decode to more than allowed, or whose headers disagree with them."""


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse codec parameters no bound holds for: non-numeric dtypes, empty shuffles."""
    for key in _DTYPE_FILTERS.get(config["id"], ()):
        value = config.get(key)
        if value is not None and np.dtype(value).kind not in "biuf":
            raise ValueError(f"{config['id']} {key} {value!r} is not a numeric dtype")
    if config["id"] == "shuffle" and not 1 <= int(config.get("elementsize", 4)) <= 2**16:
        raise ValueError(f"shuffle elementsize {config.get('elementsize')!r} is not 1-65536")
    if config["id"] == "lzma" and config.get("filters"):
        for f in config["filters"]:
            if int(f.get("dict_size", 0)) > LZMA_MEMORY:
                raise ValueError(f"lzma dict_size {f['dict_size']} is over {LZMA_MEMORY}")


def _ratio(config: Mapping[str, Any]) -> tuple[int, int]:
    """(stored itemsize, decoded itemsize) of a dtype-changing filter."""
    decoded, stored = _DTYPE_FILTERS[config["id"]]
    decoded_dtype = np.dtype(config[decoded])
    stored_dtype = np.dtype(config.get(stored) or decoded_dtype)
    return stored_dtype.itemsize, decoded_dtype.itemsize


def encoded_bound(config: Mapping[str, Any], decoded: int) -> int:
    """The most bytes ``config`` may store for ``decoded`` bytes (what its decoder is handed)."""
    codec_id = config["id"]
    if codec_id in COMPRESSORS:  # every compressor's worst case, headers included
        return decoded + decoded // 16 + 4096
    if codec_id in CHECKSUMS:
        return decoded + 4
    if codec_id in _DTYPE_FILTERS:
        stored, native = _ratio(config)
        return -(-decoded // native) * stored
    return decoded


def output_bounds(configs: tuple[Mapping[str, Any], ...], limit: int) -> list[int]:
    """Per codec (encode order), the most bytes undoing it may produce, the innermost ``limit``."""
    bounds = [limit]
    for config in configs[:-1]:
        bounds.append(encoded_bound(config, bounds[-1]))
    return bounds


# --- compressors: streams with a maximum length ---------------------------------------------


def _stream(decompressor: Any, data: memoryview, limit: int, name: str,
            one_stream: bool = True) -> bytes:
    """The one stream ``data`` holds, at most ``limit`` bytes.

    A gzip, bz2 or xz/lzma chunk is one stream, as numcodecs writes it, and bytes after it are
    refused: numcodecs' readers (the standard library's) would decode every further stream
    too, without a bound, and skipping them would reduce part of the chunk. ``one_stream=False``
    skips them, as every zlib reader does (numcodecs' Zlib, HDF5's deflate filter).
    """
    out: bytes = decompressor.decompress(data, limit + 1)
    if len(out) > limit:
        raise DecodeBoundError(f"{name} stream inflates past {limit} bytes")
    if not decompressor.eof:
        raise DecodeBoundError(f"{name} stream is truncated")
    if one_stream and decompressor.unused_data:
        raise DecodeBoundError(f"{name} stream is followed by {len(decompressor.unused_data)} "
                               "more bytes; a chunk is one stream")
    return out


#: The largest bound libdeflate is given: it allocates its whole output buffer first, which a
#: server decoding a chunk of unknown length under a large limit should not do.
LIBDEFLATE_MAX = 16 * 2**20


def _zlib(codec: Codec, data: memoryview, limit: int) -> Any:
    """libdeflate into a buffer of ``limit`` bytes; a stream it refuses (past the limit,
    truncated, corrupt) goes through zlib-ng's stream, which says why, or decodes it."""
    if 0 < limit <= LIBDEFLATE_MAX:
        try:
            return zlib_decompress(data, limit)
        except DeflateError:
            pass
    return _stream(zlib.decompressobj(), data, limit, "zlib", one_stream=False)


def _gzip(codec: Codec, data: memoryview, limit: int) -> bytes:
    return _stream(zlib.decompressobj(16 + zlib.MAX_WBITS), data, limit, "gzip")


def _bz2(codec: Codec, data: memoryview, limit: int) -> bytes:
    return _stream(bz2.BZ2Decompressor(), data, limit, "bz2")


def _lzma(codec: Codec, data: memoryview, limit: int) -> bytes:
    if codec.format == lzma.FORMAT_RAW:  # dictionary sizes come from the checked config
        decompressor = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=codec.filters)
    else:
        decompressor = lzma.LZMADecompressor(codec.format, memlimit=LZMA_MEMORY)
    return _stream(decompressor, data, limit, "lzma")


# --- compressors: headers checked, then the library's own decoder ---------------------------


def _lz4(codec: Codec, data: memoryview, limit: int) -> Any:
    # numcodecs' LZ4 stores the decoded size in 4 little-endian bytes before a bounded block.
    if len(data) < 4:
        raise DecodeBoundError("lz4 chunk is shorter than its 4-byte size header")
    size = int.from_bytes(data[:4], "little", signed=True)
    if not 0 < size <= limit:
        raise DecodeBoundError(f"lz4 header announces {size} bytes, allowed 1 to {limit}")
    return codec.decode(data)


_ZSTD_MAGIC = 0xFD2FB528


def zstd_content_size(data: memoryview) -> int:
    """The decoded size a Zstandard frame header states (RFC 8878, 3.1.1.1); it must state one."""
    if len(data) < 5 or int.from_bytes(data[:4], "little") != _ZSTD_MAGIC:
        raise DecodeBoundError("not a Zstandard frame")
    descriptor = data[4]
    size_flag, single_segment, dict_flag = descriptor >> 6, descriptor >> 5 & 1, descriptor & 3
    if descriptor & 0x08:
        raise DecodeBoundError("Zstandard frame header sets its reserved bit")
    field_size = (1 if single_segment else 0, 2, 4, 8)[size_flag]
    if field_size == 0:
        raise DecodeBoundError("Zstandard frame does not state its decoded size")
    start = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[dict_flag]
    if len(data) < start + field_size:
        raise DecodeBoundError("Zstandard frame header is truncated")
    size = int.from_bytes(data[start:start + field_size], "little")
    return size + 256 if field_size == 2 else size


def _zstd(codec: Codec, data: memoryview, limit: int) -> Any:
    """Decoded into exactly the first frame's stated size, whatever follows it.

    numcodecs 0.16 decodes the frames after the first too, into one buffer of all their stated
    sizes: handed ``out``, it refuses frames that state more than ``out`` holds before decoding
    any, and decodes frames that state no size only into ``out`` (0.15 decodes into ``out``).
    """
    size = zstd_content_size(data)
    if size > limit:
        raise DecodeBoundError(f"Zstandard frame announces {size} bytes, more than {limit}")
    out = np.empty(size, np.uint8)
    try:
        return codec.decode(data, out)
    except ValueError as exc:  # "destination buffer too small": more frames, stating more
        raise DecodeBoundError(f"Zstandard chunk has more frames after its first (of {size} "
                               "bytes); a chunk is one frame") from exc


_BLOSC_MEMCPYED = 0x02
_BLOSC_HEADER = 16
_BLOSC2_HEADER = 32


def check_blosc_header(data: memoryview, limit: int, blosc2: bool = False) -> int:
    """The decoded size of a Blosc 1 or 2 chunk, after checking every header field against the
    bytes read: compressed size, decoded size, block size and the table of block starts.

    Blosc's decoders trust these fields: a forged compressed size makes them read (and return)
    memory past the buffer, or crash.
    """
    if len(data) < _BLOSC_HEADER:
        raise DecodeBoundError(f"blosc chunk of {len(data)} bytes is shorter than its header")
    flags, typesize = data[2], data[3]
    nbytes: int
    nbytes, blocksize, cbytes = struct.unpack_from("<iii", data, 4)
    if cbytes != len(data):
        raise DecodeBoundError(f"blosc header says {cbytes} stored bytes, {len(data)} were read")
    if not 0 <= nbytes <= limit:
        raise DecodeBoundError(f"blosc header announces {nbytes} bytes, allowed 0 to {limit}")
    if typesize == 0:
        raise DecodeBoundError("blosc header has a zero typesize")
    extended = blosc2 and flags & 0x05 == 0x05
    header = _BLOSC2_HEADER if extended else _BLOSC_HEADER
    if cbytes < header:
        raise DecodeBoundError(f"blosc chunk of {cbytes} bytes is shorter than its header")
    if extended and data[31] & 0x08:
        raise DecodeBoundError("lazy blosc2 chunks are not accepted")
    if extended and data[31] & 0x70:  # a special chunk (zeros, NaN, a value): nothing stored
        if cbytes > header + typesize:
            raise DecodeBoundError(f"special blosc2 chunk of {cbytes} bytes is too long")
        return nbytes
    if nbytes == 0:
        return 0
    if flags & _BLOSC_MEMCPYED:
        if cbytes != header + nbytes:
            raise DecodeBoundError(f"uncompressed blosc chunk of {cbytes} bytes holds "
                                   f"{cbytes - header}, header says {nbytes}")
        return nbytes
    if not 0 < blocksize <= nbytes:
        raise DecodeBoundError(f"blosc block size {blocksize} is not 1 to {nbytes}")
    blocks = math.ceil(nbytes / blocksize)
    first = header + 4 * blocks
    if first > cbytes:
        raise DecodeBoundError(f"blosc chunk of {cbytes} bytes cannot hold {blocks} blocks")
    starts = np.frombuffer(data, "<i4", blocks, header)
    if starts.size and (starts.min() < first or starts.max() >= cbytes):
        raise DecodeBoundError("blosc block starts point outside the chunk")
    return nbytes


def _blosc(codec: Codec, data: memoryview, limit: int) -> Any:
    check_blosc_header(data, limit)
    return codec.decode(data)


def _blosc2(codec: Codec, data: memoryview, limit: int) -> Any:
    out = bytearray(check_blosc_header(data, limit, blosc2=True))
    codec.decode(data, out)
    return out


# --- filters undone here ----------------------------------------------------------------------


def _shuffle(codec: Codec, data: memoryview, limit: int) -> Any:
    """numcodecs' byte shuffle undone by numpy's strided copies: no conversion of the buffer
    first, and a little faster than numcodecs' loop (19 against 23 us for 64 KiB here)."""
    size = int(codec.elementsize)
    if len(data) > limit:
        raise DecodeBoundError(f"shuffle would decode {len(data)} bytes, more than {limit}")
    if size <= 1:
        return data
    if len(data) % size:
        raise DecodeBoundError(f"{len(data)} shuffled bytes are not whole {size}-byte elements")
    return unshuffle_rows(np.frombuffer(data, np.uint8).reshape(1, -1), size).reshape(-1)


def unshuffle_rows(rows: np.ndarray, size: int) -> np.ndarray:
    """Each row of ``rows`` (uint8, a whole number of ``size``-byte elements each) with its
    byte shuffle undone: the rows' byte planes interleaved back into elements."""
    planes = rows.reshape(rows.shape[0], size, -1)
    out = np.empty((rows.shape[0], planes.shape[2], size), np.uint8)
    if size <= 16:  # one contiguous read per byte plane: faster than a transposing copy
        for i in range(size):
            out[:, :, i] = planes[:, i]
    else:
        out[...] = planes.transpose(0, 2, 1)
    return out.reshape(rows.shape[0], -1)


_BOUNDED: dict[str, Callable[[Codec, memoryview, int], Any]] = {
    "zlib": _zlib, "gzip": _gzip, "bz2": _bz2, "lzma": _lzma, "lz4": _lz4, "zstd": _zstd,
    "blosc": _blosc, "blosc2": _blosc2, "shuffle": _shuffle,
}


def decoded_size(config: Mapping[str, Any], stored: int) -> int:
    """What a filter decodes ``stored`` bytes to, known before it runs."""
    codec_id = config["id"]
    if codec_id in CHECKSUMS:
        return stored - 4
    if codec_id in _DTYPE_FILTERS:
        stored_size, native = _ratio(config)
        if stored % stored_size:
            raise DecodeBoundError(f"{stored} bytes are not whole {codec_id} elements")
        return stored // stored_size * native
    return stored


def bounded_decode(config: Mapping[str, Any], codec: Codec, data: memoryview, limit: int
                   ) -> Any:
    """Undo ``codec`` on ``data``, producing at most ``limit`` bytes (checked before allocating)."""
    decode = _BOUNDED.get(config["id"])
    if decode is not None:
        return decode(codec, data, limit)
    size = decoded_size(config, len(data))
    if size > limit:
        raise DecodeBoundError(f"{config['id']} would decode {len(data)} bytes to {size}, "
                               f"more than {limit}")
    return codec.decode(data)

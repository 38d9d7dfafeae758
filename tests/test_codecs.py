"""The decode chain shared by the client and every server: each allow-listed codec decodes what
it encoded, and stops at the expected size, or with ChunkDecodeError, whatever it is handed."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable
from typing import Any

import numcodecs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activezarr.chunk.codec_bounds import zstd_content_size
from activezarr.chunk.codecs import CodecChain
from activezarr.chunk.kernel import ChunkKernel
from activezarr.chunk.spec import ChunkSpec
from activezarr.errors import ChunkDecodeError, CodecNotAllowedError
from concatenated import MiB, concatenated

DATA = np.arange(1000, dtype="<f8")
CHAINS: list[list[dict[str, Any]]] = [
    [{"id": "zlib"}], [{"id": "gzip"}], [{"id": "zstd"}], [{"id": "lz4"}], [{"id": "bz2"}],
    [{"id": "lzma"}], [{"id": "blosc", "cname": "lz4", "shuffle": 1}],
    [{"id": "blosc", "cname": "zstd", "shuffle": 2, "blocksize": 256}],
    [{"id": "blosc2", "typesize": 8}], [{"id": "shuffle", "elementsize": 8}, {"id": "zlib"}],
    [{"id": "astype", "encode_dtype": "<f4", "decode_dtype": "<f8"}, {"id": "zstd"}],
    [{"id": "fixedscaleoffset", "offset": 0, "scale": 10, "dtype": "<f8", "astype": "<i4"},
     {"id": "blosc2"}],
    [{"id": "delta", "dtype": "<f8"}, {"id": "crc32c"}], [{"id": "zlib"}, {"id": "gzip"}],
    [{"id": "crc32"}], [{"id": "adler32"}], [{"id": "fletcher32"}], [{"id": "jenkins_lookup3"}],
    [{"id": "lzma", "format": 3, "filters": [{"id": 33, "dict_size": 1 << 20}]}],
]


def encode(chain: list[dict[str, Any]], data: Any = DATA) -> bytes:
    for config in chain:
        data = numcodecs.get_codec(dict(config)).encode(data)
    return bytes(np.asarray(data)) if not isinstance(data, bytes) else data


@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: "+".join(x["id"] for x in c))
def test_every_codec_decodes_what_it_encoded(chain: list[dict[str, Any]]) -> None:
    decoded = CodecChain(chain).decode(encode(chain), DATA.nbytes).view("<f8")
    np.testing.assert_allclose(decoded, DATA, atol=0.1)


@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: "+".join(x["id"] for x in c))
def test_a_truncated_chunk_is_a_decode_error(chain: list[dict[str, Any]]) -> None:
    stored = encode(chain)
    with pytest.raises(ChunkDecodeError):
        CodecChain(chain).decode(stored[:len(stored) // 2], DATA.nbytes)


@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: "+".join(x["id"] for x in c))
def test_a_chunk_decoding_past_its_size_stops_before_allocating(
        chain: list[dict[str, Any]]) -> None:
    stored = encode(chain, np.zeros(2**20))  # 8 MiB decoded, 1 KiB expected
    with pytest.raises(ChunkDecodeError):
        CodecChain(chain).decode(stored, 1024)


@pytest.mark.parametrize("codec", ["blosc", "blosc2"])
def test_a_blosc_header_that_disagrees_with_the_bytes_is_a_decode_error_on_the_client(
        codec: str) -> None:
    stored = bytearray(encode([{"id": codec}]))
    struct.pack_into("<i", stored, 12, len(stored) + 4096)  # cbytes past the end
    kernel = ChunkKernel(ChunkSpec(dtype="<f8", shape=(1000,), codecs=({"id": codec},)))
    with pytest.raises(ChunkDecodeError, match="stored bytes"):
        kernel.decode(bytes(stored[:20]), "c/0")


def test_a_zstd_frame_must_state_its_size() -> None:
    frame = encode([{"id": "zstd"}])
    assert zstd_content_size(memoryview(frame)) == DATA.nbytes
    unsized = bytearray(frame)
    unsized[4] &= 0x1F  # no content size, not single-segment: a window descriptor follows
    with pytest.raises(ChunkDecodeError, match="does not state its decoded size"):
        CodecChain([{"id": "zstd"}]).decode(bytes(unsized[:5]) + b"\x00" + frame[5:], 8000)


@pytest.mark.parametrize("config", [
    {"id": "astype", "encode_dtype": "O", "decode_dtype": "<f8"},
    {"id": "fixedscaleoffset", "offset": 0, "scale": 1, "dtype": "U10"},
    {"id": "shuffle", "elementsize": 0},
    {"id": "lzma", "format": 3, "filters": [{"id": 33, "dict_size": 2**31}]},
    {"id": "zlib", "level": 1, "bogus": True},
    {"id": "pickle"}, {"id": ["zlib"]},
])
def test_configs_without_a_bound_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(CodecNotAllowedError):
        CodecChain([config])


@settings(max_examples=150, deadline=None)
@given(elementsize=st.integers(1, 40), count=st.integers(0, 300), data=st.data())
def test_unshuffling_matches_numcodecs_byte_for_byte(elementsize: int, count: int,
                                                     data: st.DataObject) -> None:
    """The shuffle filter is undone by numpy (to release the GIL), not numcodecs: same bytes."""
    raw = data.draw(st.binary(min_size=count * elementsize, max_size=count * elementsize))
    chain = [{"id": "shuffle", "elementsize": elementsize}]
    expected = np.frombuffer(numcodecs.Shuffle(elementsize).decode(raw), np.uint8)
    assert bytes(CodecChain(chain).decode(raw, len(raw))) == bytes(expected)


@settings(max_examples=100, deadline=None)
@given(elementsize=st.integers(1, 40), count=st.integers(1, 50), rows=st.integers(1, 5),
       data=st.data())
def test_a_stack_decodes_as_each_of_its_chunks(elementsize: int, count: int, rows: int,
                                               data: st.DataObject) -> None:
    """decode_stack undoes a last byte shuffle on all rows at once: the bytes decode gives."""
    nbytes = count * elementsize
    chain = CodecChain([{"id": "shuffle", "elementsize": elementsize}, {"id": "zlib"}])
    raws = [numcodecs.Zlib().encode(data.draw(st.binary(min_size=nbytes, max_size=nbytes)))
            for _ in range(rows)]
    stack = chain.decode_stack(raws, nbytes, [None] * rows)
    assert stack.shape == (rows, nbytes)
    for row, raw in zip(stack, raws):
        assert bytes(row) == bytes(chain.decode(raw, nbytes))


def test_a_stack_with_a_chunk_of_the_wrong_size_names_it() -> None:
    chain = CodecChain([{"id": "shuffle", "elementsize": 4}, {"id": "zlib"}])
    raws = [numcodecs.Zlib().encode(b"\0" * 16), numcodecs.Zlib().encode(b"\0" * 12)]
    with pytest.raises(ChunkDecodeError, match="expected 16") as caught:
        chain.decode_stack(raws, 16, ["c/0", "c/1"])
    assert "c/1" in str(caught.value)


def test_a_shuffled_chunk_of_partial_elements_is_a_decode_error() -> None:
    with pytest.raises(ChunkDecodeError, match="whole 4-byte elements"):
        CodecChain([{"id": "shuffle", "elementsize": 4}]).decode(b"\0" * 10, 10)


# --- issue 19: a chunk is one compressed stream; what follows it is never decoded ------------

#: Codecs whose format or numcodecs reader can run several streams (frames, members) together.
CONCATENATING = ["zstd", "lz4", "gzip", "bz2", "lzma"]
FIRST = np.arange(1024, dtype="<u4")


def traced_peak(decode: Callable[[], Any]) -> int:
    """The most bytes Python, numpy and the decoders' allocators held at once in ``decode``."""
    tracemalloc.start()
    try:
        decode()
        return tracemalloc.get_traced_memory()[1]
    except ChunkDecodeError:
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("codec", CONCATENATING)
def test_streams_after_the_first_are_refused_before_decoding(codec: str) -> None:
    """No more memory than the first stream alone takes (lzma's includes an 8 MiB dictionary),
    and refused, shaped or not."""
    alone = concatenated(codec, FIRST, 0, members=0)
    stored = concatenated(codec, FIRST, 8 * MiB)  # 64 MiB of zeros after 4 KiB
    kernel = ChunkKernel(ChunkSpec(dtype="<u4", shape=FIRST.shape, codecs=({"id": codec},)))
    chain = CodecChain([{"id": codec}])
    first_alone = traced_peak(lambda: kernel.decode(alone, "c/0"))
    for decode in (lambda: kernel.decode(stored, "c/0"),
                   lambda: chain.decode_within(stored, 2**30)):
        with pytest.raises(ChunkDecodeError):
            decode()
        assert traced_peak(decode) < first_alone + MiB


@pytest.mark.parametrize("codec", ["gzip", "bz2", "lzma", "zstd"])
def test_the_refusal_says_a_chunk_is_one_stream(codec: str) -> None:
    stored = concatenated(codec, FIRST, 1024, members=1)
    # numcodecs 0.15 decodes every frame into the first's size: zstd says the buffer is short.
    with pytest.raises(ChunkDecodeError,
                       match="a chunk is one (stream|frame)|Destination buffer is too small"):
        CodecChain([{"id": codec}]).decode(stored, FIRST.nbytes + 1024)


def test_a_zlib_chunk_is_its_first_stream_as_numcodecs_and_hdf5_read_it() -> None:
    stored = concatenated("zlib", FIRST, 8 * MiB)
    tracemalloc.start()
    try:
        decoded = CodecChain([{"id": "zlib"}]).decode(stored, FIRST.nbytes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert bytes(decoded) == FIRST.tobytes() == bytes(numcodecs.Zlib().decode(stored))
    assert peak < MiB


@settings(max_examples=300, deadline=None)
@given(codec=st.sampled_from([*CONCATENATING, "zlib"]),
       payloads=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=3),
       tail=st.sampled_from([b"", b"\0" * 4, b"junk!"]), level=st.integers(1, 5))
def test_a_chunk_decodes_as_numcodecs_decodes_it_or_is_refused(
        codec: str, payloads: list[bytes], tail: bytes, level: int) -> None:
    """Bit for bit what numcodecs decodes; only what numcodecs does not write (streams after
    the first, bytes after a stream) may be refused instead."""
    config = {"id": codec} if codec == "lz4" else {"id": codec, "level": level}
    if codec == "lzma":
        config = {"id": codec, "preset": level}
    numcodec = numcodecs.get_codec(config)
    stored = b"".join(bytes(numcodec.encode(p)) for p in payloads) + tail
    try:
        expected: bytes | None = bytes(numcodec.decode(stored))
    except Exception:  # numcodecs' readers raise anything
        expected = None
    try:
        decoded = bytes(CodecChain([config]).decode_within(stored, 2**20))
    except ChunkDecodeError:
        assert len(payloads) > 1 or tail, "a chunk numcodecs wrote was refused"
        return
    assert decoded == expected


@pytest.mark.parametrize("limit", [FIRST.nbytes, FIRST.nbytes + 100, 32 * MiB])
def test_a_zlib_chunk_decodes_alike_below_and_above_the_whole_buffer_bound(limit: int) -> None:
    """libdeflate inflates chunks up to its bound, zlib-ng's stream the larger: same bytes."""
    stored = bytes(numcodecs.Zlib(level=3).encode(FIRST)) + b"junk"
    assert bytes(CodecChain([{"id": "zlib"}]).decode_within(stored, limit)) == FIRST.tobytes()


@pytest.mark.parametrize(("stored", "limit", "why"), [
    (bytes(numcodecs.Zlib().encode(FIRST)), FIRST.nbytes - 4, "inflates past"),
    (bytes(numcodecs.Zlib().encode(FIRST))[:-9], FIRST.nbytes, "truncated"),
])
def test_a_zlib_chunk_libdeflate_refuses_is_refused_with_the_reason(stored: bytes, limit: int,
                                                                    why: str) -> None:
    with pytest.raises(ChunkDecodeError, match=why):
        CodecChain([{"id": "zlib"}]).decode_within(stored, limit)

"""Fuzzing the active server: every request field and codec config, stored chunks with forged
blosc / blosc2 / zstd / lz4 headers, truncations and bombs, single requests and batches.

What must hold, on one real server process with small limits: no answer is a 5xx, the process
never dies, and its resident memory never grows by more than :data:`RSS_BOUND` over its idle
size, whatever kind of request (operation and codec) came.
"""

from __future__ import annotations

import bz2
import functools
import json
import lzma
import struct
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import numcodecs
import numpy as np
import psutil
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activezarr.chunk.codecs import ALLOWED_CODECS, Blosc2
from s3_servers import ActiveServer, start_active_server

MiB = 2**20
#: The server's memory budget (--max-memory) and what its RSS may grow by over its idle size:
#: the budget, plus the interpreter's own working set for a few concurrent requests.
MAX_MEMORY = 32 * MiB
RSS_BOUND = MAX_MEMORY + 64 * MiB
_INTERESTING = [0, 1, 2, 15, 16, 17, 31, 32, 33, 255, 256, 4096, 2**16, 2**20, 2**24,
                2**31 - 1, 2**31, 2**32 - 1, -1, -(2**31)]
_SAMPLE = np.arange(512, dtype="<i4") % 37


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-root")


@pytest.fixture(scope="module")
def fuzz_server(fuzz_root: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[ActiveServer]:
    for kind in _ENCODERS:  # encoded once, outside the strategies (imports draw randomness)
        _encoded(kind)
    _bombs()
    with start_active_server(tmp_path_factory.mktemp("fuzz"), "--allow-root", str(fuzz_root),
                             "--max-memory", str(MAX_MEMORY), "--max-chunk-bytes", str(MiB),
                             "--max-decoded-bytes", str(4 * MiB), "--max-inflight", "16",
                             "--workers", "2", "--memory-wait", "5") as server:
        yield server


# --- stored chunks --------------------------------------------------------------------------


@functools.cache
def _encoded(codec: str) -> bytes:
    return bytes(_ENCODERS[codec](_SAMPLE.tobytes()))


_ENCODERS: dict[str, Callable[[bytes], Any]] = {
    "blosc": numcodecs.Blosc(cname="lz4", shuffle=1).encode,
    "blosc-zstd": numcodecs.Blosc(cname="zstd", shuffle=2, blocksize=256).encode,
    "blosc2": Blosc2(typesize=4).encode,
    "zstd": numcodecs.Zstd().encode,
    "lz4": numcodecs.LZ4().encode,
    "zlib": zlib.compress,
    "bz2": bz2.compress,
    "lzma": lzma.compress,
    "raw": bytes,
}


@functools.cache
def _bombs() -> dict[str, bytes]:
    return {"zlib-bomb": zlib.compress(bytes(64 * MiB), 9),
            "zstd-bomb": numcodecs.Zstd(level=1).encode(bytes(64 * MiB)),
            "lz4-bomb": numcodecs.LZ4().encode(bytes(64 * MiB)),
            "bz2-bomb": bz2.compress(bytes(16 * MiB), 9)}


@st.composite
def stored(draw: st.DrawFn) -> tuple[str, bytes]:
    """(kind, bytes) of an object: a valid chunk forged in its header, truncated, extended,
    random bytes or a bomb."""
    kind = draw(st.sampled_from(["blosc", "blosc-zstd", "blosc2", "zstd", "lz4", "zlib", "bz2",
                                 "lzma", "raw", "random", "bomb"]))
    if kind == "random":
        return kind, draw(st.binary(max_size=300))
    if kind == "bomb":
        return draw(st.sampled_from(sorted(_bombs().items())))
    chunk = bytearray(_encoded(kind))
    for _ in range(draw(st.integers(0, 4))):  # forge header fields
        offset = draw(st.integers(0, 31))
        value = draw(st.sampled_from([*_INTERESTING, len(chunk), len(chunk) - 1, 2 * len(chunk)]))
        if draw(st.booleans()):
            fmt = "<i" if value < 0 else "<I"
            if offset + 4 <= len(chunk):
                struct.pack_into(fmt, chunk, offset, value)
        else:
            chunk[offset] = draw(st.integers(0, 255))
    cut = draw(st.sampled_from([None, 0, 4, 16, 20, 32, len(chunk) // 2, len(chunk) - 1]))
    if cut is not None:
        chunk = chunk[:cut]
    if draw(st.booleans()):
        chunk += draw(st.binary(max_size=64))
    return kind, bytes(chunk)


# --- requests ------------------------------------------------------------------------------

_JUNK = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                  st.floats(allow_nan=True), st.text(max_size=20),
                  st.lists(st.integers(-5, 5), max_size=4), st.just({}))
_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
           "float32", "float64"]


def codec_configs() -> st.SearchStrategy[dict[str, Any]]:
    numeric = st.sampled_from(["<i1", "<i2", "<i4", "<i8", "<u1", "<u4", "<f4", "<f8", ">f8",
                               "O", "U100", "S1000000", "M8", "bogus"])
    configs = [
        st.fixed_dictionaries({"id": st.sampled_from(["zlib", "gzip", "bz2", "zstd", "lz4",
                                                      "blosc", "blosc2", "crc32", "crc32c",
                                                      "adler32", "fletcher32",
                                                      "jenkins_lookup3"])}),
        st.fixed_dictionaries({"id": st.just("lzma"), "format": st.sampled_from([1, 2, 3, 4]),
                               "filters": st.sampled_from([None, [{"id": 33}],
                                                           [{"id": 33, "dict_size": 2**31}]])}),
        st.fixed_dictionaries({"id": st.just("shuffle"),
                               "elementsize": st.sampled_from([0, 1, 4, 8, 2**20, -1])}),
        st.fixed_dictionaries({"id": st.just("astype"), "encode_dtype": numeric,
                               "decode_dtype": numeric}),
        st.fixed_dictionaries({"id": st.just("fixedscaleoffset"), "offset": st.integers(-5, 5),
                               "scale": st.sampled_from([1, 10, 1e300, 0]), "dtype": numeric,
                               "astype": numeric}),
        st.fixed_dictionaries({"id": st.just("quantize"), "digits": st.integers(-2, 20),
                               "dtype": numeric}),
        st.fixed_dictionaries({"id": st.just("delta"), "dtype": numeric}),
        st.fixed_dictionaries({"id": st.just("bitround"), "keepbits": st.integers(-2, 60)}),
        st.fixed_dictionaries({"id": st.sampled_from(["pickle", "json2", "vlen-utf8",
                                                      "categorize", 5, None])}),
        st.dictionaries(st.sampled_from(["id", "level", "cname", "typesize", "clevel",
                                         "blocksize"]),
                        st.one_of(st.sampled_from(sorted(ALLOWED_CODECS)), _JUNK), max_size=4),
    ]
    return st.one_of(configs)


_CODEC_OF = {"blosc": "blosc", "blosc-zstd": "blosc", "blosc2": "blosc2", "zstd": "zstd",
             "lz4": "lz4", "zlib": "zlib", "bz2": "bz2", "lzma": "lzma", "zlib-bomb": "zlib",
             "zstd-bomb": "zstd", "lz4-bomb": "lz4", "bz2-bomb": "bz2"}


@st.composite
def requests_(draw: st.DrawFn, url: str, kind: str) -> dict[str, Any]:
    """A valid request for a stored chunk of ``kind`` (decoding reaches the codec), with up to
    four fields replaced by values drawn from valid ones and junk, or removed."""
    codec = _CODEC_OF.get(kind) or draw(st.sampled_from([None, *_CODEC_OF.values()]))
    request: dict[str, Any] = {
        "interface_type": "file", "url": url, "dtype": "int32",
        "shape": draw(st.sampled_from([[512], [16, 32], None])),
        **({"codecs": [{"id": codec}]} if codec else {}),
    }
    fields = {
        "interface_type": st.sampled_from(["file", "s3", "http", "ost", "gopher"]),
        "url": st.sampled_from(["file:///etc/passwd", url + "/../x", "x", "",
                                "http://127.0.0.1:9/bucket/k", "http://[::1",
                                "http://169.254.169.254/latest/meta-data"]),
        "dtype": st.sampled_from([*_DTYPES, "complex128", "object"]),
        "byte_order": st.sampled_from(["little", "big", "middle"]),
        "offset": st.sampled_from([0, 4, 2**62, -1]),
        "size": st.sampled_from([1, 4, 64, 2048, 2**40, 0, -4]),
        "shape": st.one_of(st.lists(st.integers(-1, 300), max_size=3),
                           st.just([2**40, 2**40]), st.just([2**31, 2**31, 2**31])),
        "order": st.sampled_from(["C", "F", "K"]),
        "selection": st.lists(st.lists(st.integers(-(2**63), 2**63), min_size=3, max_size=3),
                              max_size=3),
        "axis": st.one_of(st.none(), st.integers(-4, 4),
                          st.lists(st.integers(-4, 4), max_size=3)),
        "compression": st.sampled_from([{"id": "zlib"}, {"id": "gzip"}, {"id": "blosc2"},
                                        {"id": "pickle"}]),
        "filters": st.lists(st.fixed_dictionaries(
            {"id": st.just("shuffle"), "element_size": st.sampled_from([1, 4, 0, 2**31])}),
            max_size=2),
        "missing": st.dictionaries(
            st.sampled_from(["missing_value", "missing_values", "valid_min", "valid_max",
                             "valid_range", "bogus"]),
            st.one_of(st.integers(-(2**65), 2**65), st.floats(),
                      st.lists(st.integers(), max_size=3)), max_size=2),
        "codecs": st.lists(codec_configs(), max_size=3),
        "accumulate": st.sampled_from(["native", "wide", "sideways"]),
        "option_count_as_bytes": st.sampled_from([True, False, "yes"]),
        "colour": _JUNK,
    }
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(sorted(fields)))
        if draw(st.integers(0, 5)) == 0:
            request.pop(name, None)
        else:
            request[name] = draw(fields[name])
    return request


class Memory:
    """The server's RSS growth over its idle size, the largest seen per kind of request."""

    def __init__(self, server: ActiveServer) -> None:
        self.process = psutil.Process(server.process.pid)
        self.idle = self.process.memory_info().rss
        self.growth: dict[str, int] = defaultdict(int)

    def record(self, kind: str) -> None:
        self.growth[kind] = max(self.growth[kind], self.process.memory_info().rss - self.idle)


@pytest.fixture(scope="module")
def memory(fuzz_server: ActiveServer) -> Memory:
    return Memory(fuzz_server)


_SETTINGS = settings(max_examples=300, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow, HealthCheck.data_too_large])


def _check(response: requests.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["message"]
    elif response.headers["Content-Type"] == "application/cbor":
        answer = cbor2.loads(response.content)
        for item in answer if isinstance(answer, list) else []:  # a batch: every item too
            assert item.get("status", 200) < 500, item


@_SETTINGS
@given(data=st.data())
def test_single_requests_never_5xx_crash_or_grow(fuzz_server: ActiveServer, fuzz_root: Path,
                                                 memory: Memory, data: st.DataObject) -> None:
    kind, body = data.draw(stored())
    path = fuzz_root / f"{kind}.bin"
    path.write_bytes(body)
    request = data.draw(requests_(f"file://{path}", kind))
    op = data.draw(st.sampled_from(["count", "sum", "min", "max", "select", "stats", "mean"]))
    response = requests.post(f"{fuzz_server.url}/v2/{op}", data=json.dumps(request),
                             timeout=60)
    _check(response)
    codecs = [c.get("id") for c in request.get("codecs", []) if isinstance(c, dict)]
    memory.record(f"{op} {kind} {codecs[-1] if codecs else ''}")
    assert fuzz_server.process.poll() is None, fuzz_server.output()[-3000:]


@settings(_SETTINGS, max_examples=40)
@given(data=st.data())
def test_batches_never_5xx_crash_or_grow(fuzz_server: ActiveServer, fuzz_root: Path,
                                         memory: Memory, data: st.DataObject) -> None:
    items = []
    for i in range(data.draw(st.integers(1, 12))):
        kind, body = data.draw(stored())
        path = fuzz_root / f"batch-{i}.bin"
        path.write_bytes(body)
        items.append({"op": data.draw(st.sampled_from(["sum", "select", "bogus"])),
                      **data.draw(requests_(f"file://{path}", kind))})
    response = requests.post(f"{fuzz_server.url}/v2/batch",
                             data=json.dumps({"requests": items}), timeout=60)
    _check(response)
    memory.record("batch")
    assert fuzz_server.process.poll() is None, fuzz_server.output()[-3000:]


def test_memory_stayed_within_the_bound_for_every_kind(fuzz_server: ActiveServer,
                                                       memory: Memory) -> None:
    assert memory.growth, "the fuzz tests above record what they saw"
    worst = max(memory.growth.items(), key=lambda item: item[1])
    print(f"largest RSS growth over {len(memory.growth)} request kinds: {worst[0]!r} "
          f"{worst[1] / MiB:.1f} MiB (bound {RSS_BOUND / MiB:.0f} MiB)")
    assert worst[1] < RSS_BOUND, worst
    assert "server bug" not in fuzz_server.output()

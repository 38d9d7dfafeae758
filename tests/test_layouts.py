"""Decode chains beyond the property matrix: numcodecs wrappers, checksums, index placement."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec

import activezarr
from arrays import assert_matches, reference

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import zarr.codecs.numcodecs as zn

DATA = np.random.default_rng(7).integers(-500, 500, size=(10, 12)).astype("i4")


def _check(array: zarr.Array, data: np.ndarray = DATA) -> None:
    red = activezarr.ActiveReduction(array, missing=None)
    for op in ("sum", "min", "max", "mean", "var"):
        for selection, axis in [((...,), None), ((slice(1, None, 3), slice(None, None, -1)), 1)]:
            assert_matches(red[selection].reduce(op, axis=axis),
                           reference(data[selection], None, op, axis), data.dtype, op)
    assert red.last_report.backend == "file"


def _store(tmp_path: Path) -> activezarr.ActiveStore:
    return activezarr.ActiveStore.from_url(str(tmp_path / "a.zarr"))


def _write(tmp_path: Path, data: np.ndarray = DATA, **kwargs: Any) -> zarr.Array:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        array = zarr.create_array(_store(tmp_path), shape=data.shape, dtype=data.dtype,
                                  chunks=kwargs.pop("chunks", (4, 5)), **kwargs)
    array[:] = data
    return zarr.open_array(_store(tmp_path), mode="r")


def test_v3_numcodecs_wrappers(tmp_path: Path) -> None:
    _check(_write(tmp_path, filters=[zn.Delta(dtype="i4")], compressors=[zn.Zlib(level=1)]))


def test_v3_numcodecs_filter_with_big_endian_bytes(tmp_path: Path) -> None:
    _check(_write(tmp_path, filters=[zn.Delta(dtype="i4")], serializer=BytesCodec(endian="big"),
                  compressors=[zn.Zstd(level=1)]))


def test_v3_crc32c_checksum(tmp_path: Path) -> None:
    _check(_write(tmp_path, compressors=[ZstdCodec(level=1), Crc32cCodec()]))


def test_v3_shard_index_at_start(tmp_path: Path) -> None:
    sharding = ShardingCodec(chunk_shape=(2, 3), codecs=[BytesCodec(), ZstdCodec()],
                             index_location="start")
    _check(_write(tmp_path, chunks=(4, 6), serializer=sharding, compressors=None))


def test_v3_checksum_mismatch_is_a_decode_error(tmp_path: Path) -> None:
    array = _write(tmp_path, compressors=[Crc32cCodec()])
    chunk = tmp_path / "a.zarr" / "c" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[0] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(activezarr.ChunkDecodeError, match="c/0/0"):
        activezarr.ActiveReduction(array).sum()


def test_v2_fixedscaleoffset_and_astype(tmp_path: Path) -> None:
    data = np.linspace(-50, 70, 120).reshape(10, 12)
    filters = [numcodecs.FixedScaleOffset(offset=0, scale=10, dtype="<f8", astype="<i2")]
    array = _write(tmp_path, data, zarr_format=2, filters=filters, compressors=numcodecs.Zlib())
    _check(array, array[:])  # the decoded (quantised) values


def test_v2_fortran_order(tmp_path: Path) -> None:
    _check(_write(tmp_path, zarr_format=2, order="F", compressors=numcodecs.Zstd()))


def test_v2_nested_chunk_keys(tmp_path: Path) -> None:
    _check(_write(tmp_path, zarr_format=2, chunk_key_encoding={"name": "v2", "separator": "/"}))


def test_array_in_a_group(tmp_path: Path) -> None:
    group = zarr.open_group(_store(tmp_path), mode="w")
    array = group.create_array("sub/tas", shape=DATA.shape, chunks=(3, 3), dtype=DATA.dtype)
    array[:] = DATA
    _check(zarr.open_array(_store(tmp_path), path="sub/tas", mode="r"))


def test_v2_blosc2_compressor(tmp_path: Path) -> None:
    pytest.importorskip("blosc2")
    from activezarr.chunk.codecs import Blosc2

    _check(_write(tmp_path, zarr_format=2, compressors=Blosc2(typesize=4, clevel=3)))

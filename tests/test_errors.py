"""Bad input raises a precise exception before any number comes out."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr

import activezarr
from activezarr.chunk.codecs import CodecChain
from arrays import create


@pytest.fixture
def red(tmp_path: Path) -> activezarr.ActiveReduction:
    data = np.arange(60, dtype="f4").reshape(3, 4, 5)
    return activezarr.ActiveReduction(create(tmp_path / "a.zarr", data, chunks=(2, 2, 5)))


def test_out_of_range_index_is_an_index_error(red: activezarr.ActiveReduction) -> None:
    with pytest.raises(IndexError, match="index 3 is out of bounds for axis 0 with size 3"):
        red[3].mean()


def test_zero_step_is_a_value_error(red: activezarr.ActiveReduction) -> None:
    with pytest.raises(ValueError, match="step cannot be zero"):
        red[::0].sum()


def test_too_many_indices(red: activezarr.ActiveReduction) -> None:
    with pytest.raises(IndexError, match="too many indices"):
        red[0, 0, 0, 0].sum()


def test_two_ellipses(red: activezarr.ActiveReduction) -> None:
    with pytest.raises(IndexError, match="single ellipsis"):
        red[..., 0, ...].sum()


@pytest.mark.parametrize("index", [[0, 1], 1.5, None, True, slice(0.5, 2)])
def test_unsupported_index_types(red: activezarr.ActiveReduction, index: object) -> None:
    with pytest.raises(IndexError, match="integers"):
        red[index].sum()


def test_unknown_op_lists_the_available_ones(red: activezarr.ActiveReduction) -> None:
    with pytest.raises(activezarr.UnknownReductionError) as info:
        red.reduce("mode")
    message = str(info.value)
    assert "'mode'" in message
    for name in ("count", "max", "mean", "min", "std", "sum", "var"):
        assert name in message


def test_axis_out_of_range_and_duplicate(red: activezarr.ActiveReduction) -> None:
    with pytest.raises(np.exceptions.AxisError):
        red[0].mean(axis=2)
    with pytest.raises(ValueError, match="duplicate"):
        red.mean(axis=(0, -3))


def test_bad_reduction_options(red: activezarr.ActiveReduction) -> None:
    with pytest.raises(ValueError, match="ddof"):
        red.var(ddof=-1)
    with pytest.raises(TypeError, match="unexpected option"):
        red.reduce("mean", ddof=1)


@pytest.mark.parametrize("dtype", ["bool", "complex64", "U4", "datetime64[s]"])
def test_unsupported_dtype(tmp_path: Path, dtype: str) -> None:
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(4,), chunks=(2,), dtype=dtype)
    with pytest.raises(activezarr.UnsupportedArrayError, match="cannot be reduced"):
        activezarr.ActiveReduction(array)


def test_missing_rules_are_checked(tmp_path: Path) -> None:
    array = create(tmp_path / "a.zarr", np.arange(8, dtype="i1"), chunks=(4,))
    with pytest.raises(ValueError, match="unknown missing-value rule"):
        activezarr.ActiveReduction(array, missing={"fill": 3})
    with pytest.raises(ValueError, match="not representable in dtype int8"):
        activezarr.ActiveReduction(array, missing={"missing_value": 1000})
    with pytest.raises(ValueError, match="missing must be"):
        activezarr.ActiveReduction(array, missing="netcdf")


@pytest.mark.parametrize("layout", ["v2", "v3", "v3-sharded"])
@pytest.mark.parametrize("backend", ["file", "client"])
def test_corrupt_chunk_names_its_key(tmp_path: Path, layout: str, backend: str) -> None:
    data = np.arange(64, dtype="f8").reshape(8, 8)
    create(tmp_path / "a.zarr", data, layout=layout, codec="zstd", chunks=(4, 4))
    key = {"v2": "1.1", "v3": "c/1/1", "v3-sharded": "c/0/0"}[layout]
    path = tmp_path / "a.zarr" / key
    raw = path.read_bytes()
    if layout == "v3-sharded":
        raw = b"\x00" * 4 + raw[4:]  # the first inner chunk's zstd magic number
    else:
        raw = raw[: len(raw) // 2]
    path.write_bytes(raw)
    store = activezarr.ActiveStore.from_url(str(tmp_path / "a.zarr"), active={"backend": backend})
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"))
    with pytest.raises(activezarr.ChunkDecodeError, match=key.replace(".", r"\.")):
        red.sum()


def test_truncated_uncompressed_chunk_reports_the_size(tmp_path: Path) -> None:
    create(tmp_path / "a.zarr", np.arange(16, dtype="i4"), codec="none", chunks=(8,))
    path = tmp_path / "a.zarr" / "c" / "1"
    path.write_bytes(path.read_bytes()[:-4])
    red = activezarr.ActiveReduction(activezarr.open_array(os.fspath(tmp_path / "a.zarr")))
    with pytest.raises(activezarr.ChunkDecodeError, match="decoded to 28 bytes, expected 32"):
        red.sum()


@pytest.mark.parametrize("codec_id", ["pickle", "json2", "vlen-utf8", "categorize", "base64"])
def test_codecs_outside_the_allow_list_are_refused(codec_id: str) -> None:
    with pytest.raises(activezarr.CodecNotAllowedError, match=f"'{codec_id}' is not allowed"):
        CodecChain([{"id": codec_id}])


def test_unknown_backend_name(tmp_path: Path) -> None:
    create(tmp_path / "a.zarr", np.arange(4, dtype="i4"))
    with pytest.raises(activezarr.UnknownBackendError,
                       match="unknown backend 'nope'; available: .*file"):
        activezarr.ActiveStore.from_url(str(tmp_path / "a.zarr"), active={"backend": "nope"})

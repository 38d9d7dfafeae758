"""The s3 backend: zarr arrays in a real HTTP S3 (moto), reduced by the real active server."""

from __future__ import annotations

import itertools
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BytesCodec, GzipCodec, TransposeCodec, ZstdCodec

import activezarr
from activezarr.backends import servers
from activezarr.errors import StorageUnavailableError
from arrays import assert_matches, reference
from s3_servers import S3, ActiveServer, free_port

BUCKET = "arrays"
_names = itertools.count()


def s3_array(s3: S3, server: str | list[str], data: np.ndarray, *, layout: str = "v3",
             chunks: tuple[int, ...], fill_value: Any = None,
             attributes: dict[str, Any] | None = None, write: bool = True) -> zarr.Array:
    """``data`` written to a fresh s3://arrays/... zarr array, opened read-only for reductions."""
    s3.bucket(BUCKET)
    url = f"s3://{BUCKET}/a{next(_names)}.zarr"
    store = activezarr.ActiveStore.from_url(url, storage_options=s3.storage_options,
                                            active={"server": server})
    kwargs: dict[str, Any] = dict(shape=data.shape, chunks=chunks, dtype=data.dtype,
                                  fill_value=fill_value, attributes=attributes or {})
    if layout == "v2":
        filters = [numcodecs.Shuffle(elementsize=data.dtype.itemsize)]
        array = zarr.create_array(store, zarr_format=2, filters=filters,
                                  compressors=numcodecs.Zlib(level=1), **kwargs)
    elif layout == "v2-blosc":
        array = zarr.create_array(store, zarr_format=2, filters=None,
                                  compressors=numcodecs.Blosc(cname="lz4", shuffle=1), **kwargs)
    elif layout == "v3-transposed":
        array = zarr.create_array(store, filters=[TransposeCodec(order=(1, 0))],
                                  serializer=BytesCodec(endian="big"),
                                  compressors=GzipCodec(level=1), **kwargs)
    elif layout == "v3-sharded":
        shards = tuple(2 * c for c in chunks)
        array = zarr.create_array(store, shards=shards, compressors=ZstdCodec(level=1), **kwargs)
    else:
        array = zarr.create_array(store, compressors=ZstdCodec(level=1), **kwargs)
    if write:
        array[...] = data
    return zarr.open_array(activezarr.ActiveStore.from_url(
        url, storage_options=s3.storage_options, active={"server": server}), mode="r")


def sample(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(10, 3, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), shape).astype(dtype)


@pytest.mark.parametrize("layout", ["v2", "v2-blosc", "v3", "v3-sharded", "v3-transposed"])
@pytest.mark.parametrize("dtype", ["int16", "int32", "uint8", "uint64", "float32", "float64"])
def test_every_op_matches_numpy(moto_s3: S3, active_server: ActiveServer, layout: str,
                                dtype: str) -> None:
    data = sample(dtype, (13, 10))
    red = activezarr.ActiveReduction(s3_array(moto_s3, active_server.url, data, layout=layout,
                                              chunks=(4, 3)), missing=None)
    for op in ("sum", "min", "max", "count", "mean", "var", "std"):
        assert_matches(red.reduce(op), reference(data, None, op, None), data.dtype, op)
        report = red.last_report
        assert report.backend == "s3" and report.fallbacks == 0, report
        assert report.paths["s3"] == report.chunks


SELECTIONS = [np.s_[...], np.s_[2:11, 1:9], np.s_[-5:, ::3], np.s_[4:4, :]]
CASES = [(s, a) for s in SELECTIONS for a in (None, 0, 1, (0, 1))]
CASES += [(np.s_[::-2, 3], a) for a in (None, 0)]  # an integer index drops its dimension


@pytest.mark.parametrize("selection, axis", CASES)
def test_selections_and_axes_match_numpy(moto_s3: S3, active_server: ActiveServer,
                                         selection: Any, axis: Any) -> None:
    data = sample("float32", (13, 10), seed=1)
    red = activezarr.ActiveReduction(s3_array(moto_s3, active_server.url, data, chunks=(4, 3)),
                                     missing=None)
    part = data[selection]
    for op in ("sum", "max", "mean", "std"):
        expected = reference(part, None, op, axis)
        assert_matches(red[selection].reduce(op, axis=axis), expected, data.dtype, op)
        assert red.last_report.fallbacks == 0


@pytest.mark.parametrize("attributes", [{"_FillValue": -99}, {"missing_value": [-99, 7]},
                                        {"valid_min": 0}, {"valid_max": 500},
                                        {"valid_range": [-200, 200]},
                                        {"_FillValue": -99, "valid_range": [-200, 200]}])
def test_cf_missing_values_are_masked_storage_side(moto_s3: S3, active_server: ActiveServer,
                                                   attributes: dict[str, Any]) -> None:
    data = sample("int32", (12, 9), seed=2)
    data[::3, ::2] = -99
    data[1, :] = 7
    array = s3_array(moto_s3, active_server.url, data, chunks=(5, 4), attributes=attributes)
    mask = np.zeros(data.shape, bool)
    for name in ("_FillValue", "missing_value"):
        mask |= np.isin(data, np.atleast_1d(attributes.get(name, [])))
    low, high = attributes.get("valid_range", (attributes.get("valid_min"),
                                               attributes.get("valid_max")))
    mask |= (data < low) if low is not None else False
    mask |= (data > high) if high is not None else False
    red = activezarr.ActiveReduction(array)
    for op in ("sum", "min", "count", "var"):
        assert_matches(red.reduce(op, axis=0), reference(data, mask, op, 0), data.dtype, op)
        assert red.last_report.fallbacks == 0


def test_chunks_never_written_reduce_as_the_fill_value(moto_s3: S3,
                                                       active_server: ActiveServer) -> None:
    data = np.full((8, 8), 5.0)
    array = s3_array(moto_s3, active_server.url, data, chunks=(4, 4), fill_value=5.0,
                     write=False)
    red = activezarr.ActiveReduction(array, missing=None)
    assert red.sum() == 320.0
    report = red.last_report
    assert report.bytes_stored == 0 and report.fallbacks == 0  # one listing, no chunks
    assert 0 < report.bytes_from_storage < 4096  # the listing's responses, framing included


def test_whole_array_mean_moves_a_tiny_fraction_of_a_plain_read(moto_s3: S3,
                                                                active_server: ActiveServer
                                                                ) -> None:
    data = sample("float32", (24, 512, 1024), seed=3)
    assert data.nbytes == 48 * 2**20
    s3 = moto_s3
    s3.bucket(BUCKET)
    url = f"s3://{BUCKET}/big.zarr"
    store = activezarr.ActiveStore.from_url(url, storage_options=s3.storage_options,
                                            active={"server": active_server.url})
    zarr.create_array(store, shape=data.shape, chunks=(1, 512, 1024), dtype=data.dtype,
                      compressors=None)[...] = data
    array = zarr.open_array(store, mode="r")
    red = activezarr.ActiveReduction(array, missing=None)
    assert np.isclose(red.mean(), data.mean(dtype=np.float64), rtol=1e-6)
    active = red.last_report
    plain = activezarr.ActiveReduction(zarr.open_array(
        activezarr.ActiveStore.from_url(url, storage_options=s3.storage_options,
                                        active={"backend": "client"}), mode="r"), missing=None)
    plain.mean()
    assert plain.last_report.backend == "client"
    assert active.chunks == 24 and active.fallbacks == 0
    assert active.bytes_stored == plain.last_report.bytes_stored == data.nbytes
    # The plain read also pays each response's HTTP framing.
    assert data.nbytes < plain.last_report.bytes_from_storage < 1.001 * data.nbytes
    assert active.bytes_from_storage < 0.002 * plain.last_report.bytes_from_storage


def test_fallback_to_the_client_is_counted_when_the_server_is_down(moto_s3: S3) -> None:
    data = sample("float64", (9, 9), seed=4)
    down = f"http://127.0.0.1:{free_port()}"
    array = s3_array(moto_s3, down, data, chunks=(3, 9))
    store = array.store
    store.active.update(retries=1, backoff=0.01)
    red = activezarr.ActiveReduction(array, missing=None)
    assert np.isclose(red.sum(), data.sum())
    assert red.last_report.fallbacks == 3 and red.last_report.paths["client"] == 3


def test_fallback_false_raises_when_the_server_is_down(moto_s3: S3) -> None:
    data = sample("float64", (9, 9), seed=4)
    array = s3_array(moto_s3, f"http://127.0.0.1:{free_port()}", data, chunks=(3, 9))
    array.store.active.update(retries=0)
    with pytest.raises(StorageUnavailableError):
        activezarr.ActiveReduction(array, fallback=False).sum()


def test_a_dead_server_in_the_list_is_skipped_by_retries(moto_s3: S3,
                                                         active_server: ActiveServer) -> None:
    data = sample("int64", (9, 9), seed=5)
    servers = [f"http://127.0.0.1:{free_port()}", active_server.url]
    array = s3_array(moto_s3, servers, data, chunks=(3, 3))
    array.store.active.update(backoff=0.01, concurrency=1)
    red = activezarr.ActiveReduction(array, missing=None)
    assert red.sum() == data.sum()
    assert red.last_report.fallbacks == 0


def test_a_plain_reductionist_gets_v2_requests_and_the_rest_reduces_on_the_client(
        moto_s3: S3, active_server: ActiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(servers._capabilities, active_server.url, {})
    data = sample("float32", (8, 8), seed=6)
    red = activezarr.ActiveReduction(s3_array(moto_s3, active_server.url, data, layout="v2",
                                              chunks=(4, 4)), missing=None)
    assert np.isclose(red.max(), data.max())
    assert red.last_report.fallbacks == 0 and red.last_report.requests == 5
    assert np.isclose(red.var(), data.var(dtype=np.float64), rtol=1e-5)
    assert red.last_report.fallbacks == 4  # no stats on a plain Reductionist


def test_an_s3_store_without_an_active_server_reads_on_the_client(moto_s3: S3) -> None:
    data = sample("float32", (6, 6), seed=7)
    array = s3_array(moto_s3, [], data, chunks=(3, 3))
    red = activezarr.ActiveReduction(array, missing=None)
    assert np.isclose(red.mean(), data.mean())
    assert red.last_report.backend == "client" and red.last_report.fallbacks == 0


def test_naming_the_s3_backend_without_a_server_is_an_error(moto_s3: S3) -> None:
    array = s3_array(moto_s3, [], sample("float32", (4,)), chunks=(2,))
    array.store.active.update(backend="s3")
    with pytest.raises(ValueError, match="backend 's3' is not configured"):
        activezarr.ActiveReduction(array).sum()


def test_active_url_chaining_reaches_the_server(moto_s3: S3, active_server: ActiveServer) -> None:
    data = sample("float32", (8, 6), seed=8)
    written = s3_array(moto_s3, active_server.url, data, chunks=(4, 3))
    url = f"active::s3://{written.store.root}"
    options = {"active": {"server": active_server.url}, "s3": moto_s3.storage_options}
    red = activezarr.ActiveReduction(zarr.open_array(url, mode="r", storage_options=options))
    assert np.isclose(red.mean(), data.mean())
    report = red.last_report
    assert report.backend == "s3" and report.paths == {"s3": 4} and report.fallbacks == 0

"""Reductions on the simulated parallel file system equal numpy's, on the path the layout says."""

from __future__ import annotations

import itertools
import zlib
from collections import Counter

import numpy as np
import pytest
import requests
import zarr

import activezarr
from activezarr.ost.client.survey import survey_array
from activezarr.ost.wire.messages import TOKEN_HEADER
from ost_cluster import open_active, write_array

_names = (f"a{i}" for i in itertools.count())
#: (selection, axis) pairs covering whole arrays, strided selections, reversed and dropped axes.
CASES = [
    ((...,), None),
    ((slice(3, 35, 2), slice(None, None, -1), slice(1, 10)), 0),
    ((slice(None), 5, slice(None, None, 3)), None),
    ((slice(2, 30), slice(4, 20, 3), slice(None)), (0, 2)),
    ((slice(None), slice(None), slice(2, 9)), 1),
]
SHAPE, CHUNKS = (37, 23, 11), (10, 8, 5)


def _data(dtype: str, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(dtype.encode()))  # hash() changes with PYTHONHASHSEED
    if np.dtype(dtype).kind == "f":
        return rng.normal(10, 3, size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape).astype(dtype)


def _url(cluster) -> str:
    return f"{cluster.url}/active/{next(_names)}"


def _check(red, data: np.ndarray, ops=("mean", "sum", "min", "max", "var")) -> None:
    for (selection, axis), op in itertools.product(CASES, ops):
        got = getattr(red[selection], op)(axis=axis)
        want = getattr(data[selection], op)(axis=axis)
        if op in ("mean", "var") or data.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-5, err_msg=f"{op} {selection} {axis}")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{op} {selection} {axis}")


def _expect_paths(red, **active) -> None:
    """The paths the last reduction took are those the layout survey calls for."""
    expected = survey_array(red.array, active.get("spread_compressed", "oss")).paths()
    assert red.last_report.paths == expected


@pytest.mark.parametrize("dtype", ["<i2", ">i4", "|u1", "<f4", ">f8"])
def test_uncompressed_chunks_reduce_on_their_osts(ost_cluster, dtype):
    data, url = _data(dtype), _url(ost_cluster)
    write_array(url, data, chunks=CHUNKS, compressors=None)
    red = open_active(url)
    _check(red, data)
    red.mean()
    _expect_paths(red)
    assert set(red.last_report.paths) == {"ost"}


@pytest.mark.parametrize("stripe_size", [7, 4096])
def test_element_cut_by_any_stripe_size_is_counted_once(ost_cluster, stripe_size):
    data, url = _data("<f8", (20, 13, 11)), _url(ost_cluster)
    write_array(url, data, chunks=CHUNKS, compressors=None,
                storage_options={"stripe_size": stripe_size})
    _check(open_active(url), data, ops=("mean", "min", "sum"))


def test_fortran_order_chunks_map_onto_flat_extents(ost_cluster):
    data, url = _data("<i4"), _url(ost_cluster)
    write_array(url, data, chunks=CHUNKS, compressors=None, zarr_format=2,
                order="F", fill_value=2**30)  # v2 fill values count as missing (CF)
    red = open_active(url)
    _check(red, data)
    red.mean()  # the last var of _check keeps 70 cells of stats: the planner reads plainly
    assert set(red.last_report.paths) == {"ost"}


def test_shard_offsets_that_cut_elements_reduce_exactly(ost_cluster):
    data, url = _data("<f8"), _url(ost_cluster)
    sharding = zarr.codecs.ShardingCodec(chunk_shape=CHUNKS, index_location="start")
    write_array(url, data, chunks=(20, 16, 10), serializer=sharding,
                compressors=None)
    red = open_active(url)
    _check(red, data)
    red.sum()
    assert set(red.last_report.paths) == {"ost"}
    _expect_paths(red)


def test_compressed_chunk_inside_one_ost_reduces_there(ost_cluster):
    data, url = _data("<f4"), _url(ost_cluster)
    write_array(url, data, chunks=CHUNKS, compressors=zarr.codecs.GzipCodec(),
                storage_options={"stripe_size": 1 << 20})
    red = open_active(url)
    _check(red, data)
    red.mean()
    assert red.last_report.paths == {"ost": 4 * 3 * 3}
    _expect_paths(red)


@pytest.mark.parametrize("policy", ["oss", "client"])
def test_spread_compressed_chunk_follows_the_policy(ost_cluster, policy):
    data, url = _data(">i4"), _url(ost_cluster)
    write_array(url, data, chunks=CHUNKS, compressors=zarr.codecs.ZstdCodec(),
                storage_options={"stripe_size": 256})
    red = open_active(url, spread_compressed=policy)
    _check(red, data)
    red.max()
    assert red.last_report.paths[policy] > 0
    _expect_paths(red, spread_compressed=policy)


def test_sharded_compressed_inner_chunks_are_planned_one_by_one(ost_cluster):
    data, url = _data("<f8"), _url(ost_cluster)
    write_array(url, data, chunks=(20, 16, 10), shards=(40, 16, 10),
                compressors=zarr.codecs.GzipCodec())
    red = open_active(url)
    _check(red, data, ops=("mean", "max"))
    red.mean()
    _expect_paths(red)


def test_missing_values_are_masked_on_every_path(ost_cluster):
    data, url = _data("<i4"), _url(ost_cluster)
    data[data % 7 == 0] = -999
    write_array(url, data, chunks=CHUNKS, compressors=None,
                attributes={"missing_value": -999})
    masked = np.ma.masked_equal(data, -999)
    red = open_active(url)
    np.testing.assert_allclose(red.mean(axis=2), masked.mean(axis=2))
    assert red.count() == masked.count()


def test_unwritten_chunks_reduce_as_the_fill_value(ost_cluster):
    url = _url(ost_cluster)
    store = activezarr.ActiveStore.from_url(url)
    array = zarr.create_array(store, shape=SHAPE, dtype="<f4", chunks=CHUNKS, compressors=None,
                              fill_value=2.5)
    array[:10, :8, :5] = 1.0
    want = np.full(SHAPE, 2.5, "<f4")
    want[:10, :8, :5] = 1.0
    np.testing.assert_allclose(open_active(url).mean(axis=0), want.mean(axis=0))


@pytest.mark.parametrize("path, create", [
    ("ost", {"compressors": None, "storage_options": {"stripe_size": 65536}}),
    ("ost", {"compressors": zarr.codecs.GzipCodec(), "storage_options": {"stripe_size": 1 << 20}}),
    ("oss", {"compressors": zarr.codecs.GzipCodec(), "storage_options": {"stripe_size": 65536}}),
])
def test_whole_array_mean_sends_under_one_percent_over_the_lan(ost_cluster, path, create):
    data, url = _data("<f4", (128, 256, 16)), _url(ost_cluster)
    write_array(url, data, chunks=(64, 64, 16), **create)
    red = open_active(url)
    np.testing.assert_allclose(red.mean(), data.mean(dtype="f8"), rtol=1e-6)
    report = red.last_report
    assert set(report.paths) == {path}
    assert report.bytes_from_storage < 0.01 * report.bytes_stored


@pytest.mark.parametrize("policy", ["oss", "client"])
def test_every_byte_is_counted_on_the_link_it_crossed(ost_cluster, policy):
    data, url = _data("<f8"), _url(ost_cluster)
    write_array(url, data, chunks=CHUNKS, compressors=zarr.codecs.GzipCodec())
    red = open_active(url, spread_compressed=policy)
    before = ost_cluster.links()
    red.mean()
    moved = ost_cluster.links() - before
    report = red.last_report
    spread = sum(s.size for s in survey_array(red.array, policy).sites
                 if s.placement.kind == "spread")
    assert moved["disk_read"] == report.bytes_stored
    assert moved["storage"] == (spread if policy == "oss" else 0)
    assert moved["lan"] == report.bytes_from_storage
    assert report.links == +Counter({k: moved[k] for k in ("disk_read", "storage", "lan")})


def test_nan_as_missing_and_weights_reduce_storage_side(ost_cluster):
    """NaN as missing (``missing-nan``) reduces on the OSTs; weights need whole chunks, so
    weighted chunks split over OSTs go whole to the OSS, not to the client."""
    data, url = _data("<f8"), _url(ost_cluster)
    data[::5, ::3] = np.nan
    write_array(url, data, chunks=CHUNKS, compressors=None)
    store = activezarr.ActiveStore.from_url(url)
    # (the weights sent outweigh a plain read of so little data: keep the storage side)
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"), skipna=True,
                                     fallback=False, plain_when_cheaper=False)
    np.testing.assert_allclose(red.mean(axis=1), np.nanmean(data, axis=1))
    assert red.last_report.fallbacks == 0 and "client" not in red.last_report.paths
    weights = np.linspace(0.5, 2.0, data.shape[1])[:, None]
    expected = np.nansum(data * weights, axis=1) / np.where(np.isnan(data), 0, weights).sum(1)
    got = red.reduce("weighted_mean", axis=1, weights=weights)
    np.testing.assert_allclose(got, expected)
    assert red.last_report.paths == {"oss": 36} and red.last_report.fallbacks == 0


def test_osts_and_oss_describe_what_they_serve(ost_cluster):
    def schema(url: str) -> dict:
        return requests.get(f"{url}/.well-known/reductionist-schema", timeout=30,
                            headers={TOKEN_HEADER: ost_cluster.token}).json()

    assert "extents" in schema(ost_cluster.osts[0])["extensions"]
    assert schema(ost_cluster.oss)["interface_types"] == ["ost"]


def test_every_cluster_server_answers_prometheus_text_on_metrics(ost_cluster):
    from prometheus_client.parser import text_string_to_metric_families

    for url in (ost_cluster.mds, ost_cluster.oss, *ost_cluster.osts):
        response = requests.get(f"{url}/metrics", headers={TOKEN_HEADER: ost_cluster.token},
                                timeout=30)
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        assert families["activezarr_link_bytes"].type == "counter"

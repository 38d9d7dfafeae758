"""The ost path in batches (issue 12): one ``/v2/batch`` per OST and to the OSS per batch, the
parts of chunks sharing output cells merged storage-side, answers cut to the cells an OST holds,
and every chunk counted on the path it took."""

from __future__ import annotations

import itertools
import json
from typing import Any

import cbor2
import fsspec
import numpy as np
import pytest
import requests
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

import activezarr
import activezarr.ost.client.backend as ost_backend
from activezarr.ost import Cluster
from activezarr.ost.client.backend import _fit_results
from activezarr.ost.client.survey import survey_array
from activezarr.ost.wire.layouts import decode_layouts
from activezarr.ost.wire.messages import MAX_BATCH, MAX_BATCH_BODY, TOKEN_HEADER
from activezarr.ost.wire.striping import FileLayout
from activezarr.ost.wire.transport import ClusterClient
from activezarr.servers.metrics import parse_links
from ost_cluster import open_active, write_array

_names = (f"b{i}" for i in itertools.count())
#: Stripes that cut no element, so that no loose bytes travel.
STRIPE = 4096


def _stacked(cluster: Cluster, steps: int, **create: Any) -> tuple[np.ndarray, str]:
    """``steps`` chunks of (1, 64, 64) float32 stacked along axis 0, striped over all OSTs."""
    data = np.random.default_rng(steps).normal(280, 10, size=(steps, 64, 64)).astype("<f4")
    url = f"{cluster.url}/batch/{next(_names)}"
    write_array(url, data, chunks=(1, 64, 64),
                **{"compressors": None, "storage_options": {"stripe_size": STRIPE}, **create})
    return data, url


def _osts_lan(cluster: Cluster) -> int:
    """Bytes the OSTs have sent to clients so far (their answers)."""
    return sum(_lan(cluster, url) for url in cluster.osts)


def _lan(cluster: Cluster, url: str) -> int:
    """Bytes the server at ``url`` has sent to clients so far."""
    answer = requests.get(f"{url}/metrics", headers={TOKEN_HEADER: cluster.token}, timeout=5)
    return parse_links(answer.text).get("lan", 0)


def _post(cluster: Cluster, url: str, body: Any) -> requests.Response:
    return requests.post(url, data=body if isinstance(body, bytes) else json.dumps(body),
                         headers={TOKEN_HEADER: cluster.token}, timeout=30)


def _part(cluster: Cluster, **fields: Any) -> tuple[str, dict[str, Any]]:
    """(OST URL, batch item) for the first stripe of a (64, 64) float32 chunk written here."""
    fs = fsspec.filesystem("ost", host=cluster.url.removeprefix("ost://"))
    path = f"batch/{next(_names)}.bin"
    fs.pipe_file(path, np.arange(64 * 64, dtype="<f4").tobytes(), stripe_size=STRIPE)
    layout = fs.info(path)["layout"]
    ost = cluster.osts[layout["osts"][0]]
    return ost, {"op": "sum", "interface_type": "ost", "url": f"{ost}/objects/{layout['fid']}",
                 "dtype": "float32", "shape": [64, 64], "axis": [1],
                 "extents": [[0, STRIPE, 0]], **fields}


def test_a_whole_array_mean_asks_each_ost_once_and_its_answer_does_not_grow(ost_cluster):
    sizes = {}
    for steps in (8, 32):
        data, url = _stacked(ost_cluster, steps)
        red = open_active(url)
        before = _osts_lan(ost_cluster)
        np.testing.assert_allclose(red.mean(), data.mean(dtype="f8"), rtol=1e-6)
        report = red.last_report
        assert report.paths == {"ost": steps}
        # One batch: one request per OST, and one to the MDS for the layouts.
        assert report.requests == len(ost_cluster.osts) + 1
        sizes[steps] = _osts_lan(ost_cluster) - before
    # Each OST answers one scalar partial; every further chunk adds only {"combined": p}.
    per_chunk = (sizes[32] - sizes[8]) / 24 / len(ost_cluster.osts)
    assert per_chunk <= 13, sizes


def _mds_lan(cluster: Cluster) -> int:
    return _lan(cluster, cluster.mds)


def test_a_whole_array_reduction_looks_up_its_layouts_in_one_call_of_a_row_each(ost_cluster):
    """Issue 13: every chunk of a job that fits the servers' limits goes in one batch (one MDS
    call, one request per OST), and its layout costs one row of CBOR columns: the fid's 16
    bytes, the size, the OSTs (the stripe size is said once)."""
    steps = 300  # more chunks than a batch held before (256)
    data, url = _stacked(ost_cluster, steps)
    red = open_active(url)
    before = _mds_lan(ost_cluster), _osts_lan(ost_cluster)
    np.testing.assert_allclose(red.mean(), data.mean(dtype="f8"), rtol=1e-6)
    report = red.last_report
    assert report.paths == {"ost": steps}
    assert report.requests == len(ost_cluster.osts) + 1
    lookups, answers = _mds_lan(ost_cluster) - before[0], _osts_lan(ost_cluster) - before[1]
    assert lookups <= 24 * steps + 64, lookups  # 16 + 3 (size) + 5 (4 OSTs) a chunk
    assert answers <= 12 * steps * len(ost_cluster.osts) + 1024, answers
    assert report.bytes_from_storage == lookups + answers
    assert abs(report.estimated_bytes - report.bytes_from_storage) <= 0.05 * lookups


def test_a_server_s_items_are_cut_where_their_results_would_pass_its_memory():
    """Each request reserves one partial per label (the largest of its items) before reading:
    runs of items are cut where those would pass the room."""
    assert _fit_results([10] * 5, [0] * 5, 10) == [5]  # one label: one partial, held once
    assert _fit_results([4] * 5, [0, 1, 2, 3, 4], 10) == [2, 2, 1]
    assert _fit_results([3, 5], [7, 7], 4) == [1, 1]  # the label's partial grows past it
    assert _fit_results([20, 1], [0, 1], 10) == [1, 1]  # alone, it goes: the server says
    assert _fit_results([], [], 10) == []


def test_a_batch_whose_results_would_pass_a_server_s_memory_is_split_not_refused(
        ost_cluster, monkeypatch):
    data, url = _stacked(ost_cluster, 32)
    # Each step its own output cell (288 bytes reserved a part), 32 parts on each OST.
    monkeypatch.setattr(ost_backend, "RESULTS_ROOM", 4096)
    red = open_active(url)
    np.testing.assert_allclose(red.mean(axis=(1, 2)), data.mean(axis=(1, 2), dtype="f8"),
                               rtol=1e-6)
    report = red.last_report
    assert report.paths == {"ost": 32} and report.fallbacks == 0
    assert report.requests == 3 * len(ost_cluster.osts) + 1  # runs of 14, 14 and 4 items
    # One output region cut over many requests: their partials merge here.
    monkeypatch.setattr(ost_backend, "RESULTS_ROOM", 1)
    np.testing.assert_allclose(red.var(axis=0), data.var(axis=0, dtype="f8"), rtol=1e-5)
    assert red.last_report.requests == 32 * len(ost_cluster.osts) + 1


def test_stacked_chunks_come_back_as_one_partial_per_ost(ost_cluster):
    data, url = _stacked(ost_cluster, 32)
    red = open_active(url)
    np.testing.assert_allclose(red.var(axis=0), data.var(axis=0, dtype="f8"), rtol=1e-5)
    np.testing.assert_allclose(red.mean(axis=0), data.mean(axis=0, dtype="f8"), rtol=1e-6)
    one_partial = 64 * 64 * 8  # float64 sums of the (64, 64) output
    assert red.last_report.bytes_from_storage < len(ost_cluster.osts) * one_partial


def test_an_ost_answers_only_for_the_cells_its_stripe_holds(ost_cluster):
    ost, item = _part(ost_cluster)  # rows 0-15 of 64, summed along axis 1
    [answer] = cbor2.loads(_post(ost_cluster, f"{ost}/v2/batch", {"requests": [item]}).content)
    assert answer["region"] == [[0, 16]] and answer["shape"] == [16]
    rows = np.arange(64 * 64, dtype="f8").reshape(64, 64)[:16].sum(axis=1)
    np.testing.assert_array_equal(np.frombuffer(answer["bytes"], "f4"), rows.astype("f4"))


def test_items_sharing_a_label_are_answered_once(ost_cluster):
    ost, item = _part(ost_cluster, axis=None)
    body = {"requests": [item, item, {**item, "op": "max"}], "combine": [7, 7, 8], "lean": True}
    answers = cbor2.loads(_post(ost_cluster, f"{ost}/v2/batch", body).content)
    assert answers[1] == {"combined": 0}  # the request states its bytes: no stored_bytes
    assert np.frombuffer(answers[0]["bytes"], "f4")[0] == 2 * sum(range(1024))
    assert answers[0]["count_constant"] == 2048
    assert np.frombuffer(answers[2]["bytes"], "f4")[0] == 1023


@pytest.mark.parametrize("body, status, words", [
    ({"requests": [{}], "combine": [1, 2]}, 400, "combine has 2 labels for 1 requests"),
    ({"requests": [{}] * (MAX_BATCH + 1)}, 413, f"over the limit of {MAX_BATCH}"),
    ({"requests": [], "lean": "yes"}, 400, "lean"),
    ({"requests": [], "absent": True}, 400, "absent is not served here"),
    ({"requests": [], "combine": [2**70]}, 400, "combine"),
    (b"x" * (MAX_BATCH_BODY + 1), 413, "over the limit"),
])
def test_hostile_batches_are_refused_whole_with_json(ost_cluster, body, status, words):
    for server in (ost_cluster.osts[0], ost_cluster.oss):
        response = _post(ost_cluster, f"{server}/v2/batch", body)
        assert response.status_code == status, response.text
        assert response.headers["Content-Type"] == "application/json"
        assert words in response.json()["error"]["message"]


def test_a_batch_that_could_never_fit_in_memory_is_refused_before_reading(ost_cluster):
    ost, item = _part(ost_cluster)
    # A kept axis of 2**28 cells: 4 GiB of results; nothing is read or allocated.
    huge = {**item, "dtype": "uint8", "shape": [2**28], "axis": [], "extents": [[0, 16, 0]]}
    response = _post(ost_cluster, f"{ost}/v2/batch", {"requests": [huge]})
    assert response.status_code == 413 and "bytes of memory" in response.text


def test_a_bad_item_fails_alone(ost_cluster):
    ost, item = _part(ost_cluster)
    bad = [{**item, "extents": [[0, 10**6, 0]]}, {**item, "surprise": 1},
           {k: v for k, v in item.items() if k not in ("shape", "axis")}, {**item, "op": "select"},
           {**item, "url": f"{ost}/objects/{'0' * 32}"}]
    answers = cbor2.loads(_post(ost_cluster, f"{ost}/v2/batch", {"requests": [item, *bad]}).content)
    assert "bytes" in answers[0]
    assert [a["status"] for a in answers[1:]] == [400] * len(bad)
    messages = " ".join(a["error"]["message"] for a in answers[1:])
    for words in ("past the chunk", "surprise", "need the chunk's shape", "op", "no object"):
        assert words in messages


def test_oss_items_need_their_size(ost_cluster):
    item = {"op": "sum", "interface_type": "ost", "url": f"{ost_cluster.url}/x.bin",
            "dtype": "int32", "shape": [4]}
    [answer] = cbor2.loads(_post(ost_cluster, f"{ost_cluster.oss}/v2/batch", {"requests": [item]}).content)
    assert answer["status"] == 400 and "size" in answer["error"]["message"]


@pytest.mark.parametrize("policy", ["oss", "client"])
def test_every_chunk_counts_on_its_own_path(ost_cluster, policy):
    """Gzip chunks of which some sit in one stripe (the OST) and some span two (OSS or client),
    in the same batches; chunks never written count too."""
    data = np.random.default_rng(5).normal(size=(40, 64)).astype("<f8")
    data[:20] = 1.0  # compresses into one stripe
    data[20:25] = 0.0  # the fill value: never written
    url = f"{ost_cluster.url}/batch/{next(_names)}"
    write_array(url, data, chunks=(5, 64), compressors=zarr.codecs.GzipCodec(),
                storage_options={"stripe_size": 1500})
    red = open_active(url, spread_compressed=policy)
    np.testing.assert_allclose(red.mean(axis=0), data.mean(axis=0), rtol=1e-12)
    report = red.last_report
    assert sum(report.paths.values()) == report.chunks == 8
    assert report.paths == {"ost": 5, policy: 3}
    # The survey leaves out the chunk never written; the reduction counts it on its backend.
    assert survey_array(red.array, policy).paths() == {"ost": 4, policy: 3}


@pytest.mark.parametrize("axis, falls_back", [((1, 2), "touching"), (0, "all")])
def test_a_part_refused_sends_its_whole_output_region_to_the_client(ost_cluster, monkeypatch,
                                                                    axis, falls_back):
    """Fault injection at the transport: OST 1 refuses every item. The parts other OSTs
    served of those chunks were merged with other chunks of the same output cells, so every
    chunk of those cells is reduced on the client instead: exact, and said."""
    data = np.random.default_rng(9).normal(size=(12, 32, 64)).astype("<f8")  # 2 stripes each
    url = f"{ost_cluster.url}/batch/{next(_names)}"
    write_array(url, data, chunks=(1, 32, 64), compressors=None,
                storage_options={"stripe_size": 8192})
    refusing = ost_cluster.osts[1]
    batch = ClusterClient.batch

    async def refuse(self, server, body):
        if server != refusing:
            return await batch(self, server, body)
        return [{"error": {"message": "injected refusal"}, "status": 400}] * len(body["requests"]), 0

    monkeypatch.setattr(ClusterClient, "batch", refuse)
    store = activezarr.ActiveStore.from_url(url)
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"))
    with pytest.warns(activezarr.FallbackWarning):
        np.testing.assert_allclose(red.mean(axis=axis), data.mean(axis=axis), rtol=1e-12)
    report = red.last_report
    touching = sum(1 in {s.ost for s in site.placement.extents}
                   for site in survey_array(red.array, "oss").sites)
    assert 0 < touching < 12
    assert report.fallbacks == (touching if falls_back == "touching" else 12)
    kept = 12 - report.fallbacks
    assert report.paths == {"client": report.fallbacks, **({"ost": kept} if kept else {})}
    assert "injected refusal" in " ".join(report.fallback_reasons)


def test_inner_chunks_never_written_count_too(ost_cluster):
    data = np.zeros((40, 64), "<f8")
    data[:10] = np.random.default_rng(2).normal(size=(10, 64))  # the other inner chunks: fill
    url = f"{ost_cluster.url}/batch/{next(_names)}"
    write_array(url, data, chunks=(5, 64), shards=(20, 64), compressors=None)
    red = open_active(url)
    np.testing.assert_allclose(red.sum(axis=0), data.sum(axis=0), rtol=1e-12)
    assert red.last_report.paths == {"ost": red.last_report.chunks} == {"ost": 8}


@settings(max_examples=15, deadline=None)
@given(stripe=st.sampled_from([7, 64, 1001]), axis=st.sampled_from([None, 0, 1, (0, 2), (1, 2)]),
       op=st.sampled_from(["mean", "var", "min", "count"]))
def test_parts_cut_anywhere_merge_exactly_across_servers(ost_cluster, stripe, axis, op):
    """Stripes cutting elements (loose bytes), parts answering for a few cells (``region``)
    and parts of stacked chunks merged on each OST, then here: numpy's answer."""
    data = np.random.default_rng(stripe).normal(size=(9, 6, 5)).astype(">f8")
    data[data > 1.5] = -999.0  # missing: cells of parts with no count
    url = f"{ost_cluster.url}/batch/{next(_names)}"
    write_array(url, data, chunks=(2, 4, 5), compressors=None, attributes={"_FillValue": -999.0},
                fill_value=-999.0, storage_options={"stripe_size": stripe})
    masked = np.ma.masked_equal(data, -999.0)
    got = getattr(open_active(url), op)(axis=axis)
    np.testing.assert_allclose(np.ma.filled(got, np.nan),
                               np.ma.filled(getattr(masked, op)(axis=axis), np.nan), rtol=1e-12)


def test_the_oss_merges_the_spread_chunks_it_gathers(ost_cluster):
    data, url = _stacked(ost_cluster, 24, compressors=zarr.codecs.ZstdCodec(),
                         storage_options={"stripe_size": 2048})
    red = open_active(url)
    np.testing.assert_allclose(red.mean(axis=0), data.mean(axis=0, dtype="f8"), rtol=1e-6)
    report = red.last_report
    assert report.paths == {"oss": 24} and report.requests == 2  # the OSS and the MDS
    assert report.bytes_from_storage < 64 * 64 * 8  # one partial of float64 sums, or less
    assert report.links["storage"] == report.bytes_stored


def test_the_mds_tells_many_layouts_in_one_call(ost_cluster):
    fs = fsspec.filesystem("ost", host=ost_cluster.url.removeprefix("ost://"))
    fs.pipe_file("batch/layouts.bin", b"1234")
    found = _post(ost_cluster, f"{ost_cluster.mds}/files/layouts",
                  {"paths": ["batch/layouts.bin", "batch/never-written", "batch"]}).json()
    assert FileLayout.model_validate(found[0]).model_dump() == fs.info("batch/layouts.bin")["layout"]
    assert found[1:] == [None, None]
    # Clients that accept CBOR (ours) get the same as columns (activezarr.ost.wire.layouts).
    paths = ["batch/layouts.bin", "batch/never-written"]
    answer = requests.post(f"{ost_cluster.mds}/files/layouts", json={"paths": paths},
                           headers={"Accept": "application/cbor",
                                    TOKEN_HEADER: ost_cluster.token}, timeout=30)
    assert answer.headers["Content-Type"] == "application/cbor"
    assert decode_layouts(answer.content, 2) == [FileLayout.model_validate(found[0]), None]
    response = _post(ost_cluster, f"{ost_cluster.mds}/files/layouts", {"paths": ["x"] * (MAX_BATCH + 1)})
    assert response.status_code == 400 and response.headers["Content-Type"] == "application/json"


def test_an_ost_reads_many_objects_in_one_call(ost_cluster):
    fs = fsspec.filesystem("ost", host=ost_cluster.url.removeprefix("ost://"))
    for name in ("one", "two"):
        fs.pipe_file(f"batch/many-{name}.bin", name.encode() * 3, stripe_count=1)
    layouts = {name: fs.info(f"batch/many-{name}.bin")["layout"] for name in ("one", "two")}
    ost = ost_cluster.osts[layouts["one"]["osts"][0]]
    same = [name for name, lay in layouts.items() if ost_cluster.osts[lay["osts"][0]] == ost]
    reads = [{"fid": layouts[name]["fid"], "ranges": [[0, 3], [6, 3]]} for name in same]
    response = _post(ost_cluster, f"{ost}/objects/read-many", {"reads": reads})
    assert response.content == b"".join(name.encode() * 2 for name in same)
    refused = [
        _post(ost_cluster, f"{ost}/objects/read-many", {"reads": reads * (MAX_BATCH // len(reads) + 1)}),
        _post(ost_cluster, f"{ost}/objects/read-many", {"reads": [{**reads[0], "ranges": [[0, 2**31]]}]}),
        _post(ost_cluster, f"{ost}/objects/read-many", {"reads": [{"fid": "../x", "ranges": [[0, 1]]}]}),
    ]
    assert [r.status_code for r in refused] == [400, 400, 400]
    missing = _post(ost_cluster, f"{ost}/objects/read-many", {"reads": [{"fid": "0" * 32, "ranges": [[0, 1]]}]})
    assert missing.status_code == 404


def test_concurrent_batches_to_the_oss_are_gathered_right(ost_cluster):
    """More chunks than one batch holds, spread and compressed: the OSS serves several batches
    at once, gathering the chunks each asks for together, and every chunk lands right."""
    data = np.random.default_rng(11).normal(size=(520, 16))
    url = f"{ost_cluster.url}/batch/{next(_names)}"
    write_array(url, data, chunks=(1, 16), compressors=zarr.codecs.ZstdCodec(),
                storage_options={"stripe_size": 64})
    red = open_active(url)
    np.testing.assert_allclose(red.mean(axis=1), data.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(red.max(axis=0), data.max(axis=0))
    assert red.last_report.paths == {"oss": 520}


@pytest.mark.parametrize(("stripe", "compressors", "path"), [
    (1 << 20, "default", "ost"),   # zstd chunks each wholly on one OST: reduced there, whole
    (STRIPE, None, "oss"),          # raw chunks over several OSTs: parts are not whole, so OSS
])
def test_weighted_and_grouped_chunks_reduce_whole_storage_side(ost_cluster, stripe,
                                                                compressors, path):
    """Weights and groups need the chunk whole: on the OST holding it all, else on the OSS;
    never the client (``open_active`` raises on a fallback)."""
    data = np.random.default_rng(7).normal(280, 5, size=(48, 16, 32)).astype("<f4")
    url = f"{ost_cluster.url}/batch/{next(_names)}"
    write_array(url, data, chunks=(4, 16, 32), storage_options={"stripe_size": stripe},
                **({} if compressors == "default" else {"compressors": compressors}))
    red = open_active(url)
    weights = np.cos(np.deg2rad(np.linspace(-60, 60, 16)))[:, None]
    got = red.reduce("weighted_mean", axis=(1, 2), weights=weights)
    w = np.broadcast_to(weights, data.shape[1:])
    np.testing.assert_allclose(got, (data * w).sum(axis=(1, 2)) / w.sum(), rtol=1e-10)
    assert red.last_report.paths == {path: 12} and red.last_report.fallbacks == 0
    months = np.arange(48) % 12
    got = red.reduce("mean", axis=0, groups=(0, months, 12))
    want = np.stack([data[months == m].mean(axis=0, dtype="f8") for m in range(12)])
    np.testing.assert_allclose(got, want, rtol=1e-6)  # float32, as numpy gives it
    # (two years: each month's chunks merge storage-side, so active moves less than plain)
    assert red.last_report.paths == {path: 12} and red.last_report.fallbacks == 0

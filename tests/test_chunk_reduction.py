"""``ChunkReduction`` is what every storage side runs: its config says the whole chunk
reduction, rebuilds anywhere, and its encoded partial is the response map a server sends."""

from __future__ import annotations

import json
from typing import Any

import cbor2
import numcodecs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activezarr.chunk.codec import ChunkReduction
from activezarr.chunk.parts import reduce_pieces
from activezarr.errors import InvalidReductionError
from activezarr.protocol import ChunkRequest
from activezarr.servers.operations import chunk_partial, execute
from s3_servers import S3, ActiveServer
from server_client import post

BUCKET = "chunk-reduction"
GRID = np.arange(24, dtype=np.int16).reshape(4, 6)


@st.composite
def requests_(draw: Any) -> tuple[str, dict[str, Any], bool]:
    """(op, request body, lean) of any shape, selection, axis and extension."""
    shape = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    selection = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        selection.append([start, draw(st.integers(start + 1, n)), draw(st.integers(1, 2))])
    extents = [len(range(*s)) for s in selection]
    axis = draw(st.lists(st.sampled_from(range(len(shape))), unique=True).map(sorted))
    op = draw(st.sampled_from(["count", "sum", "min", "max", "stats", "select"]))
    body: dict[str, Any] = {
        "interface_type": "s3", "url": "http://store/bucket/key", "dtype": "int16",
        "shape": shape, "order": draw(st.sampled_from("CF")), "selection": selection,
        "axis": axis, "accumulate": draw(st.sampled_from(["native", "wide", "float"])),
        "missing": {"missing_value": 3},
    }
    kept = [d for d in range(len(shape)) if d not in axis]
    if kept and op != "select" and draw(st.booleans()):
        at = draw(st.sampled_from(kept))
        body["groups"] = {"axis": at, "labels": draw(st.lists(
            st.integers(-1, 2), min_size=extents[at], max_size=extents[at]))}
    if op == "sum" and draw(st.booleans()):
        wshape = [draw(st.sampled_from([1, n])) for n in extents]
        body["weights"] = {"shape": wshape, "values": [0.5 + i for i in range(
            int(np.prod(wshape)))]}
    return op, body, draw(st.booleans())


@settings(max_examples=120, deadline=None)
@given(requests_())
def test_a_requests_chunk_reduction_round_trips_and_answers_as_the_server(
        case: tuple[str, dict[str, Any], bool]) -> None:
    op, body, lean = case
    request = ChunkRequest.model_validate_json(json.dumps(body))
    data = np.random.default_rng(len(body)).integers(0, 9, size=body["shape"]).astype("<i2")
    raw = data.tobytes(order=body["order"])
    reduction = request.chunk_reduction(op, request.shape, (), lean)
    rebuilt = numcodecs.get_codec(json.loads(json.dumps(reduction.get_config())))
    assert rebuilt.get_config() == reduction.get_config()
    assert rebuilt.decode(raw) == cbor2.dumps(execute(op, request, raw, 1 << 20, lean=lean))
    if op != "select" and body["accumulate"] != "native":  # native narrows sums in the map
        merged = chunk_partial(op, request, raw, 1 << 20)
        read = reduction.aggregation.decode(cbor2.loads(rebuilt.decode(raw)),
                                            reduction.spec.memory_order or "C",
                                            reduction.spec.axis)
        np.testing.assert_array_equal(read.count, merged.count)
        for name in merged.arrays:
            np.testing.assert_array_equal(read[name], merged[name])


def test_the_active_server_answers_with_the_chunk_reductions_encoded_partial(
        active_server: ActiveServer, moto_s3: S3) -> None:
    moto_s3.bucket(BUCKET)
    moto_s3.client.put_object(Bucket=BUCKET, Key="grid", Body=GRID.tobytes())
    body = {"interface_type": "s3", "url": f"{moto_s3.endpoint}/{BUCKET}/grid",
            "dtype": "int16", "shape": [4, 6], "axis": [0], "selection": [[0, 4, 1], [1, 6, 2]],
            "accumulate": "float", "missing": {"missing_value": 7}}
    answer = post(active_server, "stats", body)
    assert answer.status_code == 200, answer.text
    reduction = ChunkRequest.model_validate(body).chunk_reduction("stats", (4, 6), ())
    assert answer.content == reduction.decode(GRID.tobytes())


def test_stripe_pieces_reduce_to_the_whole_chunks_partial() -> None:
    data = np.arange(30, dtype=">i4").reshape(5, 6)
    raw = data.tobytes()
    reduction = ChunkReduction("stats", [[1, 5, 1], [0, 6, 2]], dtype=">i4", shape=[5, 6],
                               axis=[1])
    first, loose_a = reduce_pieces(reduction, [(0, raw[:50])])
    second, loose_b = reduce_pieces(reduction, [(50, raw[50:])])
    first.merge(second)
    joined, left = reduce_pieces(reduction, [(2 * 24, raw[48:52])])
    assert [p[0] for p in loose_a + loose_b] == [48, 50] and not left
    first.merge(joined)
    whole = reduction.partial(raw)
    np.testing.assert_array_equal(first.count, whole.count)
    for name in ("sum", "min", "max"):
        np.testing.assert_array_equal(first[name], whole[name])


def test_a_select_answers_with_elements_and_has_no_partial() -> None:
    data = np.arange(6, dtype="<f4")
    reduction = ChunkReduction("select", [[1, 6, 2]], dtype="<f4", shape=[6],
                               missing={"values": [3.0]})
    result = cbor2.loads(reduction.decode(data.tobytes()))
    assert np.frombuffer(result["bytes"], "<f4").tolist() == [1.0, 3.0, 5.0]
    assert result["count"] == [2]
    with pytest.raises(InvalidReductionError, match="cannot be combined"):
        reduction.partial(data.tobytes())


@pytest.mark.parametrize(("config", "message"), [
    ({"op": "median"}, "unknown operation 'median'"),
    ({"accumulate": "exact"}, "accumulate 'exact'"),
    ({"op": "min", "weights": {"shape": [4], "values": [1, 1, 1, 1]}}, "weights go with"),
    ({"op": "select", "groups": {"axis": 0, "labels": [0]}}, "groups do not go"),
    ({"weighted": True}, "weighted follow from op"),
    ({"weighted": True}, "weighted follow from op"),
    ({"weights": {"shape": [4], "values": [1, 2]}}, "2 values"),
    ({"weights": {"shape": [4], "values": [1, 2, float("nan"), 4]}}, "must be finite"),
    ({"weights": {"values": [1, 2, 3, 4]}}, "weights are"),
    ({"axis": [], "groups": {"axis": 0, "labels": ["a"]}}, "integers"),
    ({"axis": [], "groups": {"axis": "0", "labels": [0]}}, "groups are"),
])
def test_a_config_that_is_no_chunk_reduction_is_refused_naming_the_field(
        config: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidReductionError, match=message):
        ChunkReduction(**{"dtype": "<f8", "shape": [4], **config})


def test_hostile_configs_are_bad_input_for_the_server_not_a_bug() -> None:
    """A server maps every ActiveZarrError to 400: a bad config never answers 500."""
    from activezarr.servers.errors import status_of

    with pytest.raises(InvalidReductionError) as caught:
        ChunkReduction("sum", dtype="<f8", shape=[2], groups={"axis": 0})
    assert status_of(caught.value) == 400

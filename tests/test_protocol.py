"""The wire protocol model: what requests are accepted, what they mean, and how results read."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from activezarr.chunk.kernel import ChunkKernel
from activezarr.chunk.result import select_result
from activezarr.chunk.spec import ChunkSpec, MissingSpec
from activezarr.protocol import (
    EXTENSIONS,
    CannotExpress,
    ChunkRequest,
    Missing,
    Weights,
    build_request,
    error_body,
    resolve_shared,
    share_weights,
)

BASE = {"interface_type": "s3", "url": "http://s3.local/bucket/key", "dtype": "int32"}


def parse(**fields: object) -> ChunkRequest:
    return ChunkRequest.model_validate_json(json.dumps({**BASE, **fields}))


def run(op: str, data: np.ndarray, **fields: object) -> dict:
    """The response map of ``op`` on ``data``, through the request's own ChunkReduction."""
    request = parse(dtype=data.dtype.name, shape=list(data.shape), **fields)
    reduction = request.chunk_reduction(op, data.shape, request.codec_configs())
    return reduction.result(data.tobytes())


def values(result: dict) -> np.ndarray:
    return np.frombuffer(result["bytes"], result["dtype"]).reshape(result["shape"])


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        parse(colour="blue")


def test_strings_are_not_coerced_to_numbers() -> None:
    with pytest.raises(ValidationError):
        parse(offset="8")


@pytest.mark.parametrize("dtype", ["float128", "complex64", "bool", "object"])
def test_unsupported_dtype_is_rejected(dtype: str) -> None:
    with pytest.raises(ValidationError):
        parse(dtype=dtype)


def test_codecs_exclude_compression_and_filters() -> None:
    with pytest.raises(ValidationError, match="exclusive"):
        parse(codecs=[{"id": "zlib"}], compression={"id": "zlib"})


def test_v2_compression_and_filters_become_a_numcodecs_chain_in_encode_order() -> None:
    request = parse(compression={"id": "gzip"}, filters=[{"id": "shuffle", "element_size": 4}])
    assert request.codec_configs() == ({"id": "shuffle", "elementsize": 4}, {"id": "gzip"})


@pytest.mark.parametrize("missing", [{}, {"missing_value": 1, "missing_values": [2]},
                                     {"valid_range": [1, 2], "valid_min": 0},
                                     {"valid_range": [3, 1]}, {"valid_range": [2, 2]},
                                     {"fill": 1}])
def test_invalid_missing_is_rejected(missing: dict) -> None:
    with pytest.raises(ValidationError):
        parse(missing=missing)


def test_missing_value_must_be_representable_in_the_dtype() -> None:
    with pytest.raises(ValidationError, match="missing.missing_value.*not representable"):
        parse(dtype="uint8", missing={"missing_value": 300})


@pytest.mark.parametrize("missing", [{"missing_value": -1.0}, {"valid_range": [1.0, 2.0]},
                                     {"missing_values": [1, 2.5]}, {"valid_min": 0.5}])
def test_integer_dtypes_take_integer_missing_values(missing: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="missing.* is not an integer"):
        parse(dtype="int32", missing=missing)


@pytest.mark.parametrize("fields, message", [
    ({"shape": []}, "shape must have at least one dimension"),
    ({"shape": [0, 2]}, "shape .* extent below 1"),
    ({"selection": [[0, 1, 1]]}, "selection requires shape"),
    ({"shape": [2, 2], "selection": [[0, 1, 1]]}, "selection has 1 entries for 2"),
    ({"shape": [2, 2], "selection": [[0, 1, 0], [0, 1, 1]]}, "step cannot be zero"),
    ({"shape": [2, 3], "size": 20}, "size 20 is not shape"),
    ({"size": 6}, "size 6 is not a multiple"),
    ({"size": 0}, "size"),
    ({"shape": [2, 3], "axis": 2}, "axis 2 is not"),
    ({"shape": [2, 3], "axis": [1, 0]}, "axis .* ascending"),
    ({"offset": 2**64}, "offset"),
    ({"codecs": [{"id": "pickle"}]}, "codecs: codec 'pickle' is not allowed"),
    ({"codecs": [{"id": "astype", "encode_dtype": "O", "decode_dtype": "<i4"}]},
     "codecs: .*not a numeric dtype"),
    ({"missing": {"valid_range": [5, 5]}}, r"valid_range \[5, 5\]: min must be less than max"),
])
def test_the_whole_request_is_validated_up_front(fields: dict[str, object],
                                                 message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse(**{"dtype": "int32", **fields})


@pytest.mark.parametrize("missing, spec", [
    ({"missing_value": 5}, MissingSpec(values=(5,))),
    ({"missing_values": [5, 6]}, MissingSpec(values=(5, 6))),
    ({"valid_min": 1}, MissingSpec(valid_min=1)),
    ({"valid_max": 9}, MissingSpec(valid_max=9)),
    ({"valid_range": [1, 9]}, MissingSpec(valid_min=1, valid_max=9)),
    ({"missing_value": 5, "valid_range": [1, 9]}, MissingSpec(values=(5,), valid_min=1,
                                                              valid_max=9)),
    ({"valid_min": 4, "valid_max": 4}, MissingSpec(valid_min=4, valid_max=4)),
])
def test_missing_rules_map_onto_the_core_rules_and_back(missing: dict, spec: MissingSpec) -> None:
    parsed = Missing.model_validate_json(json.dumps(missing))
    assert parsed.to_spec() == spec
    assert Missing.from_spec(spec).to_spec() == spec


def test_byte_order_gives_the_stored_dtype() -> None:
    assert parse(dtype="uint32", byte_order="big").stored_dtype == np.dtype(">u4")
    assert parse(dtype="uint32", byte_order="little").stored_dtype == np.dtype("<u4")


def test_negative_axis_counts_from_the_end() -> None:
    assert parse(axis=-1).chunk_reduction("sum", (2, 3), ()).spec.axis == (1,)


def test_reductionist_test_vector_sum_of_two_little_endian_uint32() -> None:
    data = np.frombuffer(bytes(range(1, 9)), "<u4")
    result = run("sum", data)
    assert result["dtype"] == "uint32" and result["shape"] == [] and result["count"] == [2]
    assert values(result)[()] == 201984006


def test_native_sum_wraps_in_the_request_dtype_and_wide_does_not() -> None:
    data = np.array([2**31 - 1, 1], np.int32)
    assert values(run("sum", data))[()] == -(2**31)
    wide = run("sum", data, accumulate="wide")
    assert wide["dtype"] == "int64" and values(wide)[()] == 2**31


@pytest.mark.parametrize("dtype", ["int16", "uint32", "float32", "float64"])
def test_all_missing_gives_zero_sum_dtype_max_min_and_dtype_min_max(dtype: str) -> None:
    data = np.full(4, 7, dtype)
    info = np.finfo(dtype) if data.dtype.kind == "f" else np.iinfo(dtype)
    missing = {"missing_value": 7}
    assert values(run("sum", data, missing=missing))[()] == 0
    assert values(run("min", data, missing=missing))[()] == info.max
    assert values(run("max", data, missing=missing))[()] == info.min
    assert run("count", data, missing=missing)["count"] == [0]


def test_counts_are_per_output_element_and_reduced_axes_are_dropped() -> None:
    data = np.arange(12, dtype=np.int64).reshape(3, 4)
    result = run("max", data, axis=0, missing={"valid_max": 9})
    assert result["shape"] == [4] and result["count"] == [3, 3, 2, 2]
    np.testing.assert_array_equal(values(result), [8, 9, 6, 7])


def test_empty_axis_list_reduces_nothing() -> None:
    data = np.arange(6, dtype=np.int32).reshape(2, 3)
    result = run("sum", data, axis=[])
    np.testing.assert_array_equal(values(result), data)


def test_selection_follows_numpy_slice_rules() -> None:
    data = np.arange(10, dtype=np.float64)
    result = run("sum", data, selection=[[-2, 1, -3]])
    assert values(result)[()] == data[-2:1:-3].sum()


def test_nan_propagates_through_min_and_max() -> None:
    data = np.array([1.0, np.nan, 3.0], np.float32)
    assert np.isnan(values(run("min", data))[()]) and np.isnan(values(run("max", data))[()])


def test_select_returns_elements_in_the_requested_order_with_the_valid_count() -> None:
    data = np.arange(6, dtype=np.int32).reshape(2, 3)
    request = parse(shape=[2, 3], order="F", missing={"missing_value": 4})
    result = select_result(data, 5, request.result_form("select"))
    assert result["count"] == [5] and result["shape"] == [2, 3]
    assert np.frombuffer(result["bytes"], "int32").tolist() == [0, 3, 1, 4, 2, 5]


def test_stats_carries_every_moment_of_the_result_shape() -> None:
    data = np.arange(12, dtype=np.int32).reshape(3, 4)
    result = run("stats", data, axis=[1])
    spec = ChunkSpec(dtype="<i4", shape=(3, 4), axis=(1,),
                     op="stats", accumulate="float")
    partial = ChunkKernel(spec).read(result)
    np.testing.assert_array_equal(partial.sum, data.sum(axis=1))
    np.testing.assert_array_equal(partial.max, data.max(axis=1))
    np.testing.assert_allclose(partial.m2, data.var(axis=1) * 4)


def test_options_as_bytes_are_empty_unless_requested() -> None:
    data = np.arange(4, dtype=np.int32)
    assert run("sum", data)["count_as_bytes"] == b""
    asked = run("sum", data, option_count_as_bytes=True, option_shape_as_bytes=True)
    assert np.frombuffer(asked["count_as_bytes"], np.int64).tolist() == [4]


def test_error_body_lists_the_causes() -> None:
    try:
        try:
            raise KeyError("inner")
        except KeyError as exc:
            raise ValueError("outer") from exc
    except ValueError as exc:
        body = error_body(exc)
    assert body == {"error": {"message": "outer", "caused_by": ["'inner'"]}}


# --- the client's side ---------------------------------------------------------------------


def spec(**fields: object) -> ChunkSpec:
    return ChunkSpec(**{"dtype": "<f4", "shape": (4, 4), **fields})


@pytest.mark.parametrize("op, extensions, served", [
    ("count", (), True), ("sum", (), True), ("min", (), True),
    ("stats", EXTENSIONS, True), ("stats", (), False),
])
def test_the_op_is_the_specs_aggregation(op: str, extensions: tuple, served: bool) -> None:
    chunk = spec(op=op)
    if served:
        assert build_request(chunk, ((0, 4, 1),) * 2, interface_type="s3", url="http://h/b/k",
                             byte_range=None, extensions=extensions)[0] == op
    else:
        with pytest.raises(CannotExpress, match="does not serve the 'stats'"):
            build_request(chunk, ((0, 4, 1),) * 2, interface_type="s3", url="http://h/b/k",
                          byte_range=None, extensions=extensions)


def test_a_plain_reductionist_gets_v2_fields_only() -> None:
    chain = ({"id": "shuffle", "elementsize": 4}, {"id": "zlib", "level": 1})
    op, body = build_request(spec(codecs=chain, op="sum"), ((0, 4, 1),) * 2,
                             interface_type="s3", url="http://h/b/k", byte_range=(8, 64),
                             extensions=())
    assert op == "sum"
    assert body["compression"] == {"id": "zlib"}
    assert body["filters"] == [{"id": "shuffle", "element_size": 4}]
    assert (body["offset"], body["size"]) == (8, 64)
    assert "codecs" not in body and "accumulate" not in body
    ChunkRequest.model_validate_json(json.dumps(body))


@pytest.mark.parametrize("chunk", [
    spec(codecs=({"id": "zstd"},)),             # codec outside v2
    spec(dtype="<i2"),                          # dtype outside v2
    spec(dtype="<i4", op="sum"),  # a v2 int32 sum would wrap
    spec(missing=MissingSpec(nan=True)),        # NaN as missing has no wire form
    spec(shape=(2, 2, 2), order=(1, 0, 2)),     # only a full reversal has a wire form (F)
])
def test_what_a_plain_reductionist_cannot_do_stays_on_the_client(chunk: ChunkSpec) -> None:
    with pytest.raises(CannotExpress):  # the reason names its field: test_fallback_reasons
        build_request(chunk, ((0, 4, 1),) * 2, interface_type="s3", url="http://h/b/k",
                      byte_range=None, extensions=())


def test_our_server_gets_the_whole_codec_chain_and_wide_sums() -> None:
    chunk = spec(dtype=">i2", codecs=({"id": "zstd", "level": 1},), op="sum")
    op, body = build_request(chunk, ((0, 4, 1),) * 2, interface_type="s3", url="http://h/b/k",
                             byte_range=None, extensions=EXTENSIONS)
    assert body["codecs"] == [{"id": "zstd", "level": 1}]
    assert body["accumulate"] == "wide" and body["byte_order"] == "big"


def _weighted_sum(weights: dict) -> dict:
    return run("sum", np.arange(6, dtype="int32").reshape(2, 3), axis=[1], weights=weights)


@pytest.mark.parametrize("weights", [np.array([[1.0], [2.0]]), np.array([[0.5], [-1.25]])])
def test_packed_weights_weigh_as_listed_ones(weights: np.ndarray) -> None:
    listed = Weights.of(weights, packed=False).model_dump(exclude_none=True)
    packed = Weights.of(weights, packed=True).model_dump(exclude_none=True)
    assert packed["dtype"] == ("int64" if (weights == np.round(weights)).all() else "float64")
    assert _weighted_sum(packed) == _weighted_sum(listed)


def test_packed_weights_of_another_size_are_refused_before_decoding() -> None:
    packed = Weights.of(np.ones((3, 1)), packed=True).model_dump(exclude_none=True)
    with pytest.raises(ValidationError, match=r"weights.packed: .* 24 bytes, not the 16 of 2 int64"):
        parse(dtype="int32", shape=[2, 3], axis=[1], weights={**packed, "shape": [2, 1]})
    with pytest.raises(ValidationError, match="weights.packed"):
        parse(dtype="int32", shape=[2, 3], axis=[1],
              weights={**packed, "shape": [2, 1], "packed": "not base64!"})


def test_a_batch_sends_repeated_weights_once_and_the_server_restores_them() -> None:
    packed = Weights.of(np.arange(2.0).reshape(2, 1), packed=True).model_dump(exclude_none=True)
    other = Weights.of(np.ones((2, 1)), packed=True).model_dump(exclude_none=True)
    items = [{"op": "sum", "weights": w} for w in (packed, other, packed, packed)]
    shared = share_weights(items)
    assert [item["weights"].get("same_as") for item in shared] == [None, None, 0, 0]
    assert resolve_shared(shared) == items


def test_a_reference_outside_a_batch_is_refused() -> None:
    with pytest.raises(ValidationError, match="same_as names an earlier item"):
        parse(dtype="int32", shape=[2, 3], axis=[1], weights={"shape": [2, 1], "same_as": 0})
    bad = [{"weights": {"shape": [2, 1], "same_as": 1}}, {"weights": {"shape": [2, 1]}}]
    assert resolve_shared(bad) == bad  # forwards and dangling references stay, to be refused

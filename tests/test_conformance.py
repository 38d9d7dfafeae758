"""Reductionist conformance: the server's answers against numpy, computed from each request's
own description alone (dtype, byte order, order, shape, selection, axis, missing, compression
and filters), read with PyActiveStorage's own decoder as a Reductionist client reads them.

Nothing here uses activezarr's kernel or protocol module: the reference is numpy.
"""

from __future__ import annotations

import gzip
import itertools
import json
import zlib
from typing import Any

import blosc2
import numpy as np
import pytest
import requests
from activestorage.reductionist import decode_result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3_servers import KEY, S3, SECRET, ActiveServer

BUCKET = "conformance"
DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64"]
MISSING_KINDS = [None, "missing_value", "missing_values", "valid_min", "valid_max",
                 "valid_range"]


# --- the request's description, turned into stored bytes and a numpy answer ------------------


def stored_bytes(data: np.ndarray, request: dict[str, Any]) -> bytes:
    """``data`` (logical) as the request says it is stored: byte order, order, filters, codec."""
    dtype = data.dtype.newbyteorder({"little": "<", "big": ">"}.get(request.get("byte_order"),
                                                                   "="))
    raw = data.astype(dtype).tobytes(order=request.get("order", "C"))
    for f in request.get("filters", []):  # byte shuffle: byte i of every element together
        raw = np.frombuffer(raw, np.uint8).reshape(-1, f["element_size"]).T.tobytes()
    codec = request.get("compression", {}).get("id")
    if codec == "zlib":
        return zlib.compress(raw)
    if codec == "gzip":
        return gzip.compress(raw)
    if codec == "blosc2":
        return blosc2.compress(raw, typesize=data.dtype.itemsize)
    return raw


def missing_mask(x: np.ndarray, missing: dict[str, Any] | None) -> np.ndarray:
    if not missing:
        return np.zeros(x.shape, bool)
    kind, value = next(iter(missing.items()))
    value = np.asarray(value, dtype=x.dtype)
    return {"missing_value": lambda: x == value,
            "missing_values": lambda: np.isin(x, value),
            "valid_min": lambda: x < value,
            "valid_max": lambda: x > value,
            "valid_range": lambda: (x < value[0]) | (x > value[1])}[kind]()


def reference(op: str, data: np.ndarray, request: dict[str, Any]
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """(values, counts, the order Reductionist lays them out in) for ``op`` on ``data``."""
    selection = tuple(slice(*s) for s in request.get("selection") or ())
    x = data[selection]
    mask = missing_mask(x, request.get("missing"))
    axis = request.get("axis")
    axes = tuple(range(x.ndim)) if axis is None else tuple(np.atleast_1d(axis) % x.ndim)
    count = np.sum(~mask, axis=axes, dtype=np.int64)
    fortran = request.get("order") == "F"
    if op == "select":
        return x, np.asarray(np.sum(~mask, dtype=np.int64)), "F" if fortran else "C"
    layout = "F" if fortran and axis == [] and op != "count" else "C"
    if op == "count":
        return count, count, layout
    info = np.finfo(x.dtype) if x.dtype.kind == "f" else np.iinfo(x.dtype)
    if op == "sum":
        with np.errstate(over="ignore"):
            values = np.where(mask, 0, x).sum(axis=axes, dtype=x.dtype)  # wraps as v2 does
    elif op == "min":
        values = np.where(mask, info.max, x).min(axis=axes, initial=info.max)
    else:
        values = np.where(mask, info.min, x).max(axis=axes, initial=info.min)
    return values, count, layout


# --- requests ----------------------------------------------------------------------------------


@st.composite
def cases(draw: st.DrawFn) -> tuple[str, np.ndarray, dict[str, Any]]:
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind == "f":  # small whole numbers: every sum is exact in every float width
        data = rng.integers(-8, 9, shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        data.flat[:2] = [info.min, info.max][:data.size]  # the limits, always
    request: dict[str, Any] = {"dtype": dtype.name, "shape": shape,
                               "order": draw(st.sampled_from(["C", "F"]))}
    byte_order = draw(st.sampled_from([None, "little", "big"]))
    if byte_order:
        request["byte_order"] = byte_order
    if draw(st.booleans()):
        request["selection"] = [
            [draw(st.integers(-n - 1, n + 1)), draw(st.integers(-n - 1, n + 1)),
             draw(st.sampled_from([1, 2, -1, -2]))] for n in shape]
    combos = [None, *range(-len(shape), len(shape)),
              *([list(c) for r in range(len(shape) + 1)
                 for c in itertools.combinations(range(len(shape)), r)])]
    request["axis"] = draw(st.sampled_from(combos))
    kind = draw(st.sampled_from(MISSING_KINDS))
    picks = [draw(st.sampled_from(data.ravel().tolist())) for _ in range(2)]
    if kind == "missing_values":
        request["missing"] = {kind: picks}
    elif kind == "valid_range":  # min must be less than max, or it is a 400
        low, high = sorted(picks)
        request["missing"] = {kind: [low, high]} if low < high else {"valid_min": low}
    elif kind:
        request["missing"] = {kind: picks[0]}
    codec = draw(st.sampled_from([None, "zlib", "gzip", "blosc2"]))
    if codec:
        request["compression"] = {"id": codec}
        if draw(st.booleans()):
            request["filters"] = [{"id": "shuffle", "element_size": dtype.itemsize}]
    op = draw(st.sampled_from(["count", "sum", "min", "max", "select"]))
    if op == "select":
        request.pop("axis")
    return op, data, request


def _key(request: dict[str, Any]) -> str:
    """An object name with the characters that must survive a URL: spaces, brackets, '='."""
    return f"chunk {request['dtype']} shape={request['shape']} [{abs(hash(json.dumps(request)))}]"


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=cases())
def test_answers_match_numpy_as_a_reductionist_client_reads_them(
        active_server: ActiveServer, moto_s3: S3, case: tuple[str, np.ndarray, dict[str, Any]]
) -> None:
    op, data, request = case
    moto_s3.bucket(BUCKET)
    key = _key(request)
    moto_s3.client.put_object(Bucket=BUCKET, Key=key, Body=stored_bytes(data, request))
    body = {"interface_type": "s3", "url": f"{moto_s3.endpoint}/{BUCKET}/{key}", **request}
    response = requests.post(f"{active_server.url}/v2/{op}", json=body, auth=(KEY, SECRET),
                             timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/cbor"
    result, count = decode_result(response)
    values, counts, layout = reference(op, data, request)
    assert list(result.shape) == list(values.shape)
    assert np.dtype(result.dtype) == (np.int64 if op == "count" else data.dtype)
    assert result.dtype.byteorder in "=|" or result.dtype.isnative
    np.testing.assert_array_equal(np.ravel(np.asarray(result.data)),
                                  np.ravel(values, order=layout))
    assert list(count) == np.ravel(counts, order=layout).tolist()


@pytest.mark.parametrize("op", ["count", "sum", "min", "max", "select"])
def test_an_empty_selection_answers_as_reductionist(active_server: ActiveServer, moto_s3: S3,
                                                   op: str) -> None:
    moto_s3.bucket(BUCKET)
    data = np.arange(6, dtype="<i4").reshape(2, 3)
    moto_s3.client.put_object(Bucket=BUCKET, Key="empty selection", Body=data.tobytes())
    body = {"interface_type": "s3", "url": f"{moto_s3.endpoint}/{BUCKET}/empty selection",
            "dtype": "int32", "shape": [2, 3], "selection": [[1, 1, 1], [0, 3, 1]]}
    response = requests.post(f"{active_server.url}/v2/{op}", json=body, auth=(KEY, SECRET),
                             timeout=30)
    result, count = decode_result(response)
    values, counts, _ = reference(op, data, body)
    assert list(count) == np.ravel(counts).tolist()
    np.testing.assert_array_equal(np.ravel(np.asarray(result.data)), np.ravel(values))

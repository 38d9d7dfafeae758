"""Property tests: every reduction path equals numpy.ma on the same decoded, masked data."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import activezarr
from arrays import CODECS, LAYOUTS, assert_matches, assert_reduces_like_numpy, create, reference
from strategies import OPS, arrays, queries, run_query

MISSING_KINDS = ("none", "fill_value", "missing_values", "valid_min", "valid_max",
                 "valid_range", "skipna")


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    case = draw(arrays(max_extent=9))
    data, special = case["data"], case["special"]
    kind = draw(st.sampled_from(MISSING_KINDS))
    if kind in ("fill_value", "missing_values"):
        data.reshape(-1)[: draw(st.integers(0, data.size))] = special
    if kind == "skipna" and data.dtype.kind == "f":
        data.reshape(-1)[:: draw(st.integers(1, 5))] = np.nan
    return dict(case, kind=kind, codec=draw(st.sampled_from(CODECS)),
                order=draw(st.sampled_from("CF")) if case["layout"] == "v2" else "C",
                **draw(queries(case["shape"])))


def _missing(kind: str, special: Any, data: np.ndarray) -> tuple[dict[str, Any], Any, np.ndarray | None]:
    """(ActiveReduction keyword arguments, fill_value, reference mask)."""
    stored = np.asarray(special, dtype=data.dtype)
    if kind == "none":
        return {"missing": None}, special, None
    if kind == "fill_value":
        return {}, special, data == stored
    if kind == "missing_values":
        other = data.reshape(-1)[-1]
        return {"missing": {"missing_value": [special, other.item()]}}, None, np.isin(data, [stored, other])
    if kind == "valid_min":
        return {"missing": {"valid_min": special}}, None, data < stored
    if kind == "valid_max":
        return {"missing": {"valid_max": special}}, None, data > stored
    if kind == "valid_range":
        lo, hi = sorted([stored, data.reshape(-1)[0]])
        return {"missing": {"valid_range": [lo.item(), hi.item()]}}, None, (data < lo) | (data > hi)
    nan = np.isnan(data) if data.dtype.kind == "f" else None
    return {"missing": None, "skipna": True}, None, nan


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(cases())
def test_active_reduction_equals_numpy_ma(case: dict[str, Any]) -> None:
    data, kind = case["data"], case["kind"]
    options, fill_value, mask = _missing(kind, case["special"], data)
    if case["layout"] == "v2" and kind == "fill_value":
        attributes = {}  # format 2: the array's fill_value is the netCDF _FillValue
    else:
        attributes = {"_FillValue": case["special"].item()} if kind == "fill_value" else {}
    with tempfile.TemporaryDirectory() as tmp:
        array = create(Path(tmp) / "a.zarr", data, layout=case["layout"], codec=case["codec"],
                       chunks=case["chunks"], fill_value=fill_value if fill_value is not None else 0,
                       attributes=attributes, order=case["order"])
        red = activezarr.ActiveReduction(array, **options)
        actual, axis = run_query(red, case)
        assert red.last_report.backend == "file"
    assert_reduces_like_numpy(actual, data, mask, case["selection"], case["op"], axis,
                              case["ddof"])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("codec", CODECS)
def test_every_layout_and_codec_reduces_like_numpy(tmp_path: Path, layout: str, codec: str) -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(13, 11, 6)).astype("f4")
    array = create(tmp_path / "a.zarr", data, layout=layout, codec=codec, chunks=(4, 3, 5),
                   fill_value=0)
    red = activezarr.ActiveReduction(array, missing=None)
    for op in OPS:
        assert_matches(red[1:12:2, ::-1, 3].reduce(op, axis=0),
                       reference(data[1:12:2, ::-1, 3], None, op, 0), data.dtype, op)

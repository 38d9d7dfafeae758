"""Differential property test: the same generated cases through every backend equal numpy.ma.

Each case is a zarr array (v2 or v3, any codec and chunking, dtypes up to the int64/uint64
limits) with CF attributes (fill and missing values, valid ranges, ``_Unsigned``, packing),
reduced over generated selections and axes, half of them of the values meeting a condition
(``where=(">", x)``, any comparison, the threshold one of the decoded values or between two),
and binned (``histogram``; packed values as the reduction decodes them). Every case goes through every backend in
:data:`runners.RUNNERS`, and each must give numpy.ma's answer on the CF-decoded values, with
the dtype xarray would give.
"""

from __future__ import annotations

import base64
import math
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import activezarr
from arrays import CODECS, assert_reduces_like_numpy, create
from runners import Runner
from strategies import arrays, queries, run_query, threshold

#: Half the profile's examples, each through every backend: 125 cases by default.
EXAMPLES = max(10, settings().max_examples // 2)
SCALES = (0.01, -0.5, 2.0, 1e-3)
OFFSETS = (273.15, -10.0, 0.5)


@st.composite
def cf_cases(draw: st.DrawFn) -> dict[str, Any]:
    case = draw(arrays(max_extent=7, near_limits=True))
    data, dtype, special = case["data"], case["dtype"], case["special"]
    attrs: dict[str, Any] = {}
    fill = draw(st.booleans())
    if draw(st.booleans()):
        attrs["missing_value"] = [data.reshape(-1)[-1].item()]
    bound = draw(st.sampled_from(["none", "valid_min", "valid_max", "valid_range"]))
    first = data.reshape(-1)[0].item()
    if bound == "valid_range":
        attrs["valid_range"] = sorted([first, special.item()])
    elif bound != "none":
        attrs[bound] = first
    if dtype.kind in "iu" and draw(st.booleans()):
        attrs["_Unsigned"] = "true" if dtype.kind == "i" else "false"
    packing = draw(st.sampled_from(["none", "scale", "offset", "both"]))
    if packing in ("scale", "both"):
        attrs["scale_factor"] = draw(st.sampled_from(SCALES))
    if packing in ("offset", "both"):
        attrs["add_offset"] = draw(st.sampled_from(OFFSETS))
    skipna = dtype.kind == "f" and draw(st.booleans())
    if skipna:
        data.reshape(-1)[:: draw(st.integers(2, 5))] = np.nan
    return dict(case, fill=fill, attrs=attrs, skipna=skipna, codec=draw(st.sampled_from(CODECS)),
                base64=draw(st.booleans()),
                queries=draw(st.lists(queries(case["shape"]), min_size=1, max_size=3)))


def _write(path: Path, case: dict[str, Any]) -> None:
    """The case as a zarr array at ``path``; a v3 fill is an attribute (base64 as xarray's)."""
    data, special, attrs = case["data"], case["special"], dict(case["attrs"])
    fill_value: Any = special if case["fill"] else (0 if case["layout"] != "v2" else None)
    if case["fill"] and case["layout"] != "v2":
        encoded = special.item()
        if data.dtype.kind == "f" and case["base64"]:
            encoded = base64.standard_b64encode(struct.pack("<d", encoded)).decode()
        attrs["_FillValue"] = encoded
    create(path, data, layout=case["layout"], codec=case["codec"], chunks=case["chunks"],
           fill_value=fill_value, attributes=attrs)


def decoded(case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(values, mask) as netCDF4 masks and xarray unpacks: the oracle, written independently."""
    data, attrs = case["data"], case["attrs"]
    stored = data.dtype
    view = data
    if attrs.get("_Unsigned") == "true":
        view = data.view(stored.str.replace("i", "u"))
    elif attrs.get("_Unsigned") == "false":
        view = data.view(stored.str.replace("u", "i"))

    def as_viewed(value: Any) -> Any:
        return np.array(value, stored).view(view.dtype)[()]

    def equal(value: Any) -> np.ndarray:
        value = as_viewed(value)
        return np.isnan(view) if np.isnan(value) else view == value

    mask = np.zeros(data.shape, bool)
    if case["fill"]:
        mask |= equal(case["special"])
    for value in attrs.get("missing_value", ()):
        mask |= equal(value)
    low, high = attrs.get("valid_range", (attrs.get("valid_min"), attrs.get("valid_max")))
    if low is not None:
        mask |= view < as_viewed(low)
    if high is not None:
        mask |= view > as_viewed(high)
    if case["skipna"]:
        mask |= np.isnan(view)
    if "scale_factor" in attrs or "add_offset" in attrs:
        view = view.astype(np.float64) * attrs.get("scale_factor", 1.0) + attrs.get(
            "add_offset", 0.0)
    return view, mask


def _numpy_dtype(op: str, dtype: np.dtype) -> np.dtype:
    if op == "count":
        return np.dtype(np.intp)
    return getattr(np, op)(np.ones(2, dtype.newbyteorder("="))).dtype


#: numpy's comparisons, as a condition names them.
COMPARE = {">": np.greater, ">=": np.greater_equal, "<": np.less, "<=": np.less_equal,
           "==": np.equal, "!=": np.not_equal}


def _check(runner: Runner, fixtures: dict[str, Any], path: Path, case: dict[str, Any],
           values: np.ndarray, mask: np.ndarray) -> None:
    red = activezarr.ActiveReduction(runner.opener(path, fixtures), skipna=case["skipna"])
    for query in case["queries"]:
        where, meets = None, mask
        if query["where"] is not None:
            where = threshold(values, query["where"])
            with np.errstate(invalid="ignore"):  # numpy's own comparison is the oracle
                meets = mask | ~COMPARE[where[0]](values, where[1])
        try:
            actual, axis = run_query(red, query, where)
        except ValueError as exc:  # a packed int64's many stored values behind one decoded
            assert where is not None and where[0] == "!=" and "more than" in str(exc), exc
            continue
        op = query["op"]
        report = red.last_report
        # The planner may read plainly where the active path would move more (it says why).
        assert report.backend == runner.reported or (
            report.backend == "plain" and "would move more" in report.plan_reason), report
        assert_reduces_like_numpy(actual, values, meets, query["selection"], op, axis,
                                  query["ddof"])
        if where is not None and runner.name != "s3-reductionist":
            assert report.fallbacks == 0, report.fallback_reasons  # conditions are masks
        if actual is not np.ma.masked:
            assert np.asarray(actual).dtype == _numpy_dtype(op, values.dtype)
        if _packed(case) and (red.decoding.dtype.itemsize > 4 or red.decoding.dtype.kind == "f"):
            with pytest.raises(ValueError, match="histograms of values packed as"):
                red[query["selection"]].reduce("histogram", axis=axis, bins=[0.0, 1.0])
        else:
            _check_histogram(red, runner, _binned(red, case, values), meets, axis,
                             query["selection"], where)


def _binned(red: activezarr.ActiveReduction, case: dict[str, Any], values: np.ndarray
            ) -> np.ndarray:
    """The values a histogram bins: packed ones as the reduction decodes them (float32 or
    float64 as xarray picks; the oracle's float64 may round across an edge), else ``values``."""
    if not _packed(case):
        return values
    native = case["data"].astype(case["data"].dtype.newbyteorder("="))
    return red.decoding.values(native.view(red.decoding.dtype.newbyteorder("=")))


def _packed(case: dict[str, Any]) -> bool:
    return "scale_factor" in case["attrs"] or "add_offset" in case["attrs"]


def histogram_edges(values: np.ndarray, mask: np.ndarray) -> list[float]:
    """Uneven edges through the valid values (numpy bins given edges by searching them)."""
    finite = values[~mask].astype(np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return [0.0, 1.0]
    edges = np.unique(np.quantile(finite, [0.0, 0.3, 0.45, 0.9, 1.0]))
    # One value: a bin just wide enough (edges[0] + 1 is edges[0] itself from 2**53 on).
    return edges.tolist() if edges.size > 1 else [edges[0], np.nextafter(edges[0], np.inf)]


def numpy_histogram(values: np.ndarray, mask: np.ndarray, edges: list[float], axis: Any
                    ) -> np.ndarray:
    """numpy's histogram of each output cell's valid values over ``axis`` (bins last)."""
    axes = tuple(range(values.ndim)) if axis is None else tuple(np.atleast_1d(axis))
    kept = [a for a in range(values.ndim) if a not in axes]
    moved = np.transpose(values, (*kept, *axes)).reshape(
        *(values.shape[a] for a in kept), math.prod(values.shape[a] for a in axes))
    hidden = np.transpose(mask, (*kept, *axes)).reshape(moved.shape)
    out = np.zeros((*moved.shape[:-1], len(edges) - 1), np.intp)
    for cell in np.ndindex(moved.shape[:-1]):
        out[cell] = np.histogram(moved[cell][~hidden[cell]].astype(np.float64), edges)[0]
    return out


def _check_histogram(red: activezarr.ActiveReduction, runner: Runner, values: np.ndarray,
                     mask: np.ndarray, axis: Any, selection: Any,
                     where: tuple[str, Any] | None) -> None:
    """The histogram of the query's values (those meeting its condition) over its axes."""
    values, mask = np.asarray(values[selection]), np.asarray(mask[selection])
    edges = histogram_edges(values, mask)
    got = red[selection].reduce("histogram", axis=axis, bins=edges, where=where)
    np.testing.assert_array_equal(got, numpy_histogram(values, mask, edges, axis),
                                  err_msg=f"axis {axis}, edges {edges}")
    assert np.asarray(got).dtype == np.intp
    if red.last_report.backend != "plain":
        runner.check_storage_side(red.last_report, "histogram")


@pytest.mark.timeout(max(600, 2 * EXAMPLES))  # thorough: thousands of cases, each ~0.5 s
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cf_cases())
def test_every_backend_equals_numpy_ma_on_decoded_values(
        runners: list[tuple[Runner, dict[str, Any]]], case: dict[str, Any]) -> None:
    values, mask = decoded(case)
    on_every_backend(runners, case, lambda runner, fixtures, path: _check(
        runner, fixtures, path, case, values, mask))


def on_every_backend(runners: list[tuple[Runner, dict[str, Any]]], case: dict[str, Any],
                     check: Callable[[Runner, dict[str, Any], Path], None]) -> None:
    """Write ``case`` once, then ``check(runner, fixtures, path)`` on every backend; a failure
    names the backend."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.zarr"
        _write(path, case)
        for runner, fixtures in runners:
            try:
                check(runner, fixtures, path)
            except AssertionError as exc:
                raise AssertionError(f"backend {runner.name!r}: {exc}") from exc


@pytest.mark.parametrize("op", ["sum", "max", "mean"])
def test_transposed_chunks_answer_in_their_order_when_no_axis_is_reduced(
        request: pytest.FixtureRequest, tmp_path: Path, op: str) -> None:
    """A v3 chunk stored transposed (F order) and reduced over no axis comes back from a server
    in F order (Reductionist keeps the request's order there); the client must read it so.
    Found by hypothesis: the `s3` path put a value one column off."""
    data = np.zeros((4, 4), np.int8)
    data[3, 1] = 1
    create(tmp_path / "a.zarr", data, layout="v3", codec="filters", chunks=(2, 3))
    for runner, _ in request.getfixturevalue("runners"):
        red = activezarr.ActiveReduction(runner.open(tmp_path / "a.zarr", request),
                                         missing=None, plain_when_cheaper=False)
        got = red.reduce(op, axis=())
        np.testing.assert_array_equal(got, data.astype(np.asarray(got).dtype),
                                      err_msg=runner.name)

"""Weighted and grouped reductions through every backend equal numpy.ma on the decoded values.

The generated CF cases of the differential test (packing, fill and missing values, NaN) get
weights over some of their axes and group labels (``-1``: in no group) along one kept axis.
Plain Reductionist servers lack both extensions: their chunks fall back, counted with a reason.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import activezarr
from activezarr.errors import FallbackWarning
from arrays import create
from runners import RUNNERS, Runner
from test_differential import cf_cases, decoded, on_every_backend


@st.composite
def weighted_grouped(draw: st.DrawFn) -> dict[str, Any]:
    case = draw(cf_cases())
    shape = case["data"].shape
    ndim = len(shape)
    weighted = draw(st.booleans())
    group_axis = draw(st.one_of(st.none(), st.integers(0, ndim - 1)))
    others = [a for a in range(ndim) if a != group_axis]
    axis = tuple(a for a in others if draw(st.booleans()))
    wshape = tuple(n if draw(st.booleans()) else 1 for n in shape)
    weights = np.asarray(draw(st.lists(st.floats(0, 4), min_size=int(np.prod(wshape)),
                                       max_size=int(np.prod(wshape)))), float).reshape(wshape)
    labels = None
    if group_axis is not None:
        labels = np.asarray(draw(st.lists(st.integers(-1, 3), min_size=shape[group_axis],
                                          max_size=shape[group_axis])), np.int64)
    op = "weighted_mean" if weighted and draw(st.booleans()) else (
        "weighted_sum" if weighted else draw(st.sampled_from(["sum", "mean", "max", "std"])))
    return dict(case, weights=weights if weighted else None, labels=labels,
                group_axis=group_axis, axis=axis, op=op)


def _expected(values: np.ndarray, mask: np.ndarray, case: dict[str, Any]) -> np.ma.MaskedArray:
    """numpy.ma's answer, one group at a time, written independently of the kernel."""
    op, axis, g = case["op"], case["axis"], case["group_axis"]

    def one(v: np.ndarray, m: np.ndarray, w: np.ndarray | None, axes: tuple[int, ...]) -> Any:
        kept = tuple(n for i, n in enumerate(v.shape) if i not in axes)
        if v.size == 0:  # a group without members: nothing valid (a weighted sum is 0)
            return np.ma.zeros(kept) if op == "weighted_sum" else np.ma.masked_all(kept)
        x = np.ma.MaskedArray(v.astype(np.float64), mask=m)
        if op.startswith("weighted"):
            wb = np.ma.MaskedArray(np.broadcast_to(w, v.shape), mask=m)
            total = np.ma.asarray((x * wb).sum(axis=axes)).filled(0.0)
            if op == "weighted_sum":
                return np.ma.asarray(total)
            wsum = np.ma.asarray(wb.sum(axis=axes)).filled(0.0)
            return np.ma.masked_where(wsum == 0, total / np.where(wsum == 0, 1, wsum))
        if op == "std":
            return x.std(axis=axes, ddof=0)
        return getattr(x, op)(axis=axes)

    if g is None:
        return np.ma.asarray(one(values, mask, case["weights"], axis))
    kept_before = sum(1 for a in range(g) if a not in axis)
    ngroups = int(case["labels"].max(initial=-1)) + 1
    parts = []
    for label in range(ngroups):
        take = np.flatnonzero(case["labels"] == label)
        w = case["weights"]
        if w is not None and w.shape[g] > 1:
            w = np.take(w, take, g)
        sub = one(np.take(values, take, g), np.take(mask, take, g), w,
                  tuple(sorted((*axis, g))))
        parts.append(np.ma.asarray(sub))
    if not parts:
        shape = [n for i, n in enumerate(values.shape) if i not in axis]
        shape[kept_before] = 0
        return np.ma.masked_all(tuple(shape))
    return np.ma.stack(parts, axis=kept_before)


def _check(red: activezarr.ActiveReduction, case: dict[str, Any], values: np.ndarray,
           mask: np.ndarray) -> None:
    options: dict[str, Any] = {}
    if case["weights"] is not None:
        options["weights"] = case["weights"]
    if case["group_axis"] is not None:
        options["groups"] = (case["group_axis"], case["labels"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackWarning)
        actual = np.ma.asarray(red.reduce(case["op"], case["axis"], **options))
    expected = _expected(values, mask, case)
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.ma.getmaskarray(actual), np.ma.getmaskarray(expected))
    # Results in float16/float32 (numpy's dtype for them) are rounded to it.
    eps = np.finfo(actual.dtype).eps if actual.dtype.kind == "f" else 0.0
    scale = 1 + np.abs(expected.filled(0)).max(initial=0)
    np.testing.assert_allclose(actual.filled(0).astype(float), expected.filled(0),
                               rtol=max(1e-5, 4 * eps), atol=1e-6 * scale)


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=weighted_grouped())
def test_weighted_and_grouped_reductions_equal_numpy_ma_on_every_backend(
        runners: list[tuple[Runner, dict[str, Any]]], case: dict[str, Any]) -> None:
    values, mask = decoded(case)
    on_every_backend(runners, case, lambda runner, fixtures, path: _check(
        activezarr.ActiveReduction(runner.opener(path, fixtures), skipna=case["skipna"]),
        case, values, mask))


def _runner(name: str) -> Runner:
    return next(r for r in RUNNERS if r.name == name)


@pytest.mark.parametrize("options", [
    {"op": "weighted_mean", "weights": np.linspace(0.5, 1.0, 6)[:, None]},
    {"op": "mean", "groups": (0, np.array([3, 3, 0, 0, 0, 1]))},
])
def test_the_active_server_reduces_weighted_and_grouped_chunks_itself(
        request: pytest.FixtureRequest, tmp_path: Path, options: dict[str, Any]) -> None:
    """Our server speaks both extensions: no chunk falls back; a plain Reductionist does not,
    and every chunk then falls back to the client, counted with its reason."""
    data = np.arange(6 * 8, dtype="f4").reshape(6, 8)
    create(tmp_path / "a.zarr", data, layout="v3", codec="none", chunks=(2, 4),
           fill_value=None, attributes={})
    op = options.pop("op")
    served = activezarr.ActiveReduction(_runner("s3").open(tmp_path / "a.zarr", request))
    expected = served.reduce(op, (1,), **options)
    assert served.last_report.paths == {"s3": 6} and served.last_report.fallbacks == 0
    plain = activezarr.ActiveReduction(
        _runner("s3-reductionist").open(tmp_path / "a.zarr", request))
    with pytest.warns(FallbackWarning, match="6 of 6 chunk"):
        np.testing.assert_allclose(plain.reduce(op, (1,), **options), expected)
    assert plain.last_report.fallbacks == 6

"""Hypothesis strategies shared by the property tests: element values and numpy selections."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from arrays import LAYOUTS

DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float16", "float32", "float64")
OPS = ("sum", "min", "max", "count", "mean", "var", "std")
COMPARISONS = (">", ">=", "<", "<=", "==", "!=")


def values(dtype: np.dtype, near_limits: bool = False) -> st.SearchStrategy[Any]:
    """Elements of ``dtype``; 64-bit ints stay where float64 is exact unless ``near_limits``."""
    if dtype.kind == "f":
        bound = 100.0 if dtype.itemsize == 2 else 1e6
        return st.floats(-bound, bound, allow_nan=False, width=min(64, 8 * dtype.itemsize))
    info = np.iinfo(dtype)
    lo, hi = int(info.min), int(info.max)
    if near_limits:
        edges = st.sampled_from([lo, lo + 1, hi - 1, hi, 0])
        return st.integers(lo, hi) | edges | st.integers(max(lo, hi - 1000), hi)
    if dtype.itemsize == 8:
        lo, hi = max(lo, -2**52), min(hi, 2**52)
    return st.integers(lo, hi)


@st.composite
def selections(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[Any, ...]:
    """A numpy basic selection of ``shape``: slices (any step, empty too), integers, Ellipsis."""
    entries: list[Any] = []
    for n in shape:
        if draw(st.booleans()) and draw(st.integers(0, 4)) == 0:
            entries.append(draw(st.integers(-n, n - 1)))
            continue
        start = draw(st.none() | st.integers(-n - 2, n + 2))
        stop = draw(st.none() | st.integers(-n - 2, n + 2))
        step = draw(st.none() | st.sampled_from([1, 1, 2, 3, -1, -2, -3]))
        entries.append(slice(start, stop, step))
    if draw(st.booleans()):
        # An Ellipsis stands for full slices of the dimensions after the first ``cut``.
        entries = entries[: draw(st.integers(0, len(entries)))] + [Ellipsis]
    return tuple(entries)


@st.composite
def arrays(draw: st.DrawFn, max_extent: int, near_limits: bool = False) -> dict[str, Any]:
    """An array to write: ``dtype`` (big-endian too in v2), ``layout``, ``chunks``, ``data``
    with a run of one ``special`` value (masked cells, and chunks zarr never writes)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    layout = draw(st.sampled_from(LAYOUTS))
    if layout == "v2" and dtype.itemsize > 1 and draw(st.booleans()):
        dtype = dtype.newbyteorder(">")
    shape = tuple(draw(st.integers(1, max_extent)) for _ in range(draw(st.integers(1, 3))))
    elements = values(dtype, near_limits)
    size = int(np.prod(shape))
    data = np.array(draw(st.lists(elements, min_size=size, max_size=size)), dtype).reshape(shape)
    special = np.array(draw(elements), dtype)[()]
    if draw(st.booleans()):
        data.reshape(-1)[: draw(st.integers(0, size))] = special
    return dict(dtype=dtype, layout=layout, shape=shape, data=data, special=special,
                chunks=tuple(draw(st.integers(1, n)) for n in shape))


@st.composite
def queries(draw: st.DrawFn, shape: tuple[int, ...]) -> dict[str, Any]:
    """A reduction to run: ``selection``, ``op``, ``ddof``, a seed for its axes and, in one
    of two, a condition on the decoded values (``where``: a comparison, the element whose
    decoded value is the threshold, and a nudge of it by 0, 0.5 or -0.5)."""
    size = int(np.prod(shape))
    where = st.tuples(st.sampled_from(COMPARISONS), st.integers(0, size - 1),
                      st.sampled_from([0.0, 0.0, 0.5, -0.5]))
    return dict(selection=draw(selections(shape)), op=draw(st.sampled_from(OPS)),
                axis_seed=draw(st.lists(st.integers(0, 2), max_size=3, unique=True)),
                axis_none=draw(st.booleans()), ddof=draw(st.integers(0, 2)),
                where=draw(st.none() | where))


def threshold(values: np.ndarray, where: tuple[str, int, float]) -> tuple[str, Any]:
    """``(op, number)`` of a query's ``where``, from the decoded ``values`` it points into."""
    op, at, nudge = where
    value = values.reshape(-1)[at].item()
    return op, value + nudge if nudge else value


def run_query(red: Any, query: dict[str, Any], where: tuple[str, Any] | None = None
              ) -> tuple[Any, tuple[int, ...] | None]:
    """(result, axis) of ``query`` run on an ActiveReduction ``red``, of the values meeting
    ``where`` only where given."""
    view = red[query["selection"]]
    ndim = len(view.shape)
    axes = sorted({a % ndim for a in query["axis_seed"]}) if ndim else []
    axis = None if query["axis_none"] or not axes else tuple(axes)
    options: dict[str, Any] = {"ddof": query["ddof"]} if query["op"] in ("var", "std") else {}
    if where is not None:
        options["where"] = where
    return view.reduce(query["op"], axis=axis, **options), axis

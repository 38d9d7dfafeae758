"""Exact quantiles in a few storage-side rounds: only counts and a handful of keys per output
cell cross the network, never the values.

Round 1 (``key_range``) gives each cell its count and its smallest and largest key (the
sort key of :mod:`activezarr.chunk.ranks`); from the count, numpy's rule names the two
consecutive ranks a quantile interpolates. Then each round (``key_bins``) counts, per cell,
the values in ``BINS`` buckets of the cell's bracket, a range of keys sent with the request;
the bucket holding the lower rank becomes the next bracket, ``BINS`` times narrower. Once a
cell's bracket holds at most ``FEW`` values (or is one key wide), a last round
(``key_values``) brings the few smallest keys at or above it (at once, where no cell has
more than ``DIRECT`` values): the two order statistics,
exactly. They are unpacked as xarray decodes values and interpolated as numpy does.

A cell's bracket travels as one number per output cell in the request's ``weights``, cut to
each chunk's region: JSON, about 15 bytes per cell and chunk along the reduced axes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..chunk.partial import Partial
from ..chunk.ranks import (
    MAX_SLOTS,
    KeyBins,
    KeyRange,
    KeySketch,
    KeyValues,
    bracket,
    from_keys,
    key_dtype,
    linear_ranks,
    min_shift,
    sketch_levels,
)
from ..chunk.reductions import Quantile, Reduction
from .report import Report

if TYPE_CHECKING:
    from .active import ActiveReduction, ReductionPlan

#: Buckets per refining round (each round narrows a bracket by this factor), and the most
#: values a bracket may hold before its keys are fetched.
BINS = 16
FEW = 2
DIRECT = 16
Round = Callable[[Reduction, "np.ndarray | None"], Partial]


class _Round(Reduction):
    """One round of a quantile: a storage-side aggregation, finished by the search."""

    accumulate = "wide"

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._params = params

    def params(self) -> dict[str, Any] | None:
        return self._params

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        raise TypeError("a quantile round is not finished on its own")


class RangeRound(_Round):
    name = "key_range"
    aggregation: ClassVar = KeyRange


class BinsRound(_Round):
    name = "key_bins"
    aggregation: ClassVar = KeyBins


class ValuesRound(_Round):
    name = "key_values"
    aggregation: ClassVar = KeyValues


class SketchRound(_Round):
    name = "key_sketch"
    aggregation: ClassVar = KeySketch


def _sketch_round(plan: ReductionPlan) -> SketchRound:
    """The one round of an approximate quantile: levels enough for every cell's values."""
    assert isinstance(plan.reduction, Quantile)
    k = plan.reduction.sketch_size
    per_cell = math.prod(plan.dims[d].size for d in plan.reduced)
    return SketchRound({"k": k, "levels": sketch_levels(per_cell, k)})


def _carrier_shape(plan: ReductionPlan) -> tuple[int, ...]:
    """The shape of the per-cell brackets over the selection: 1 along reduced dimensions."""
    return tuple(1 if d in plan.reduced else sel.size for d, sel in enumerate(plan.dims))


def _carried(plan: ReductionPlan, brackets: np.ndarray) -> np.ndarray:
    """The brackets of the output cells as weights over the selection: per position of a
    grouped dimension its group's (-1, nothing to do, where it is in none)."""
    extras = plan.extras
    cells = np.reshape(brackets, plan.output_shape)
    if extras.group_dim is not None:
        assert extras.labels is not None
        at = plan.kept.index(extras.group_dim)
        shape = [1] * cells.ndim
        shape[at] = -1
        labels = extras.labels.reshape(shape)
        cells = np.where(labels >= 0, np.take(cells, np.maximum(extras.labels, 0), axis=at),
                         -1.0)
    return cells.reshape(_carrier_shape(plan))


def planned_rounds(plan: ReductionPlan) -> list[ReductionPlan]:
    """The rounds a quantile is expected to take, for the cost model: ``key_range``, then per
    quantile as many ``key_bins`` rounds as 16-fold narrowing takes from a cell's values (one
    more for uneven values) and one ``key_values``."""
    from .active import ReductionPlan

    assert isinstance(plan.reduction, Quantile)
    if plan.reduction.method == "approximate":
        return [first_round(plan)]
    per_cell = math.prod(plan.dims[d].size for d in plan.reduced)
    refining = math.ceil(math.log(per_cell, BINS)) + 1 if per_cell > DIRECT else 0
    first = first_round(plan)
    brackets = dataclasses.replace(first.extras, weights=np.zeros(_carrier_shape(plan)))
    rounds = [ReductionPlan(step, plan.dims, plan.reduced, brackets)
              for step in (*[BinsRound({"bins": BINS})] * refining,
                           ValuesRound({"slots": FEW + 1}))]
    return [first, *rounds * plan.reduction.q.size]


def first_round(plan: ReductionPlan) -> ReductionPlan:
    """The first round of ``plan``'s quantile: ``key_range`` (exact) or its one round,
    ``key_sketch`` (approximate), which a dask graph's leaves may run in parts."""
    from .active import ReductionPlan

    reduction = plan.reduction
    assert isinstance(reduction, Quantile)
    step = _sketch_round(plan) if reduction.method == "approximate" else RangeRound()
    return ReductionPlan(step, plan.dims, plan.reduced, plan.extras)


def quantiles(active: ActiveReduction, plan: ReductionPlan) -> Any:
    """numpy's ``nanquantile`` of ``plan``'s selection, found in rounds; the rounds' costs
    add up in ``active.last_report``."""
    from .active import ReductionPlan

    reports: list[Report] = []

    def run(step: Reduction, brackets: np.ndarray | None = None) -> Partial:
        extras = first_round(plan).extras
        if brackets is not None:
            extras = dataclasses.replace(extras, weights=_carried(plan, brackets))
        try:
            return active.accumulate(ReductionPlan(step, plan.dims, plan.reduced, extras))
        finally:
            if active.last_report is not None:
                reports.append(active.last_report)

    try:
        first = first_round(plan)
        return finish(active, plan, run(first.reduction), run)
    finally:
        active.last_report = _total(reports)


def finish(active: ActiveReduction, plan: ReductionPlan, first: Partial,
           run: Round | None = None) -> Any:
    """The quantiles from the first round's state ``first``, the exact ones asking ``run``
    for the rounds that follow."""
    from .active import _package

    reduction = plan.reduction
    assert isinstance(reduction, Quantile)
    cf = active.decoding
    stored = active.layout.dtype.newbyteorder("=")
    values_dtype = cf.value_dtype or stored
    n = first.count
    results = []
    for q in np.atleast_1d(reduction.q):
        if reduction.method == "approximate":
            results.append(_unpack(_from_sketch(first, stored, float(q), cf.scale < 0),
                                   stored, cf.scale, cf.offset, values_dtype, cf.packed))
            continue
        assert run is not None
        lower, upper, gamma = linear_ranks(n, float(q))
        if cf.scale < 0:  # unpacking reverses the order: ranks count from the top
            lower, upper = n - 1 - upper, n - 1 - lower
        low, high = _order_statistics(run, first, stored, lower, upper)
        a, b = (_unpack(v, stored, cf.scale, cf.offset, values_dtype, cf.packed)
                for v in ((high, low) if cf.scale < 0 else (low, high)))
        results.append(reduction.between(a, b, gamma))
    values = np.stack(results) if reduction.q.ndim else results[0]
    if stored.kind == "f":  # numpy: a NaN among the values makes every quantile NaN
        nan = first["hi"] == np.iinfo(key_dtype(stored)).max
        values = np.where(nan, np.asarray(np.nan, values.dtype), values)
    mask = np.broadcast_to(n == 0, values.shape)
    kept = [d for d in range(len(plan.dims)) if d not in plan.reduced]
    flips = tuple(i + reduction.q.ndim for i, d in enumerate(kept) if plan.dims[d].reversed)
    return _package(values, mask, reduction.result_dtype(values_dtype), flips)


def _order_statistics(run: Round, first: Partial, stored: np.dtype, lower: np.ndarray,
                      upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The keys at ranks ``lower`` and ``upper`` (``lower`` or ``lower + 1``) of each cell,
    as stored values."""
    shape = first.count.shape  # worked on flat: a whole-array reduction has one cell
    n, lo, hi = (np.ravel(a).astype(t) for a, t in (
        (first.count, np.int64), (first["lo"], np.uint64), (first["hi"], np.uint64)))
    lower, upper = np.ravel(lower), np.ravel(upper)
    keys_low = np.where(lower == n - 1, hi, lo)
    keys_high = np.where(upper == 0, lo, hi)
    known_low = (lower == 0) | (lower == n - 1)
    known_high = (upper == 0) | (upper == n - 1)
    wanted = (n > 0) & ~(known_low & known_high)
    if wanted.any():
        keys_low, keys_high = _search(run, n, lo, hi, lower, upper, wanted, stored,
                                      keys_low, keys_high)
    kd = key_dtype(stored)
    return (from_keys(keys_low.astype(kd), stored).reshape(shape),
            from_keys(keys_high.astype(kd), stored).reshape(shape))


def _search(run: Round, n: np.ndarray, lo: np.ndarray, hi: np.ndarray, lower: np.ndarray,
            upper: np.ndarray, wanted: np.ndarray, stored: np.dtype, keys_low: np.ndarray,
            keys_high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Narrow each wanted cell's bracket round by round, then fetch its few keys."""
    floor = min_shift(stored)
    shift = np.full(n.shape, floor, np.uint64)
    while True:  # the narrowest aligned buckets, BINS of which cover [lo, hi]
        wide = wanted & (((hi >> shift) - (lo >> shift)) >= BINS)
        if not wide.any():
            break
        shift[wide] += np.uint64(1)
    start = lo >> shift
    below = np.zeros(n.shape, np.int64)  # valid values under the bracket
    inside = n.astype(np.int64)
    single = np.zeros(n.shape, bool)  # the bracket is one key
    # Where no cell holds more than DIRECT values, their keys come in one round at once.
    refining = wanted & (inside > FEW) & (int(n.max(initial=0)) > DIRECT)
    while refining.any():
        counts = run(BinsRound({"bins": BINS}), bracket(start, shift, refining))["counts"].reshape(n.size, BINS)
        cumulative = below[..., None] + np.cumsum(counts, axis=-1)
        j = np.argmax(cumulative > lower[..., None], axis=-1)
        taken = np.take_along_axis(counts, j[..., None], -1)[..., 0]
        before = np.take_along_axis(cumulative, j[..., None], -1)[..., 0] - taken
        narrower = np.maximum(shift.astype(np.int64) - 4, floor).astype(np.uint64)
        moved = refining.copy()
        below[moved] = before[moved]
        inside[moved] = taken[moved]
        single[moved] = shift[moved] == 0
        start[moved] = (start[moved] + j[moved].astype(np.uint64)) << (shift[moved]
                                                                       - narrower[moved])
        stuck = moved & (shift == narrower)
        shift[moved] = narrower[moved]
        refining = moved & (taken > FEW) & ~stuck
    # One key wide: the lower rank's value is that key; the upper one's the next key up.
    lone = wanted & single
    keys_low = np.where(lone, start, keys_low)
    same = lone & (upper < below + inside)
    keys_high = np.where(same, start, keys_high)
    fetch = wanted & ~same
    offset_low = np.where(lone, -1, lower - below)
    offset_high = np.where(lone, 0, upper - below)
    start = np.where(lone, start + np.uint64(1), start)
    below = np.where(lone, below + inside, below)
    if fetch.any():
        slots = int(offset_high[fetch].max()) + 1
        if slots > MAX_SLOTS:
            raise ValueError(f"a cell has more than {MAX_SLOTS} values within the narrowest "
                             "bracket of its dtype's keys; its quantile cannot be found exactly")
        keys = run(ValuesRound({"slots": slots}), bracket(start, shift, fetch))["keys"].reshape(n.size, slots)
        keys = keys.astype(np.uint64)
        at = np.clip(offset_low, 0, slots - 1)[..., None]
        keys_low = np.where(fetch & (offset_low >= 0),
                            np.take_along_axis(keys, at, -1)[..., 0], keys_low)
        at = np.clip(offset_high, 0, slots - 1)[..., None]
        keys_high = np.where(fetch, np.take_along_axis(keys, at, -1)[..., 0], keys_high)
    return keys_low, keys_high


def _from_sketch(sketch: Partial, stored: np.dtype, q: float, reverse: bool) -> np.ndarray:
    """Per cell the stored value a sketch puts at numpy's rank ``q * (n - 1)`` (counted from
    the top where unpacking ``reverse``s the order): the first key whose weight, with all
    smaller keys', passes it; the exact extremes at q 0 and 1."""
    n = sketch.count.astype(np.float64)
    target = q * (n - 1)
    if reverse:
        target = n - 1 - target
    keys, fill = sketch["keys"], sketch["fill"]
    depth, k = keys.shape[-2:]
    flat = keys.reshape(-1, depth * k).astype(np.uint64)
    slot = np.arange(k)
    weight = np.where(slot < fill.reshape(-1, depth, 1), 2.0 ** np.arange(depth)[:, None], 0.0)
    order = np.argsort(flat, axis=-1, kind="stable")
    cumulative = np.cumsum(np.take_along_axis(weight.reshape(-1, depth * k), order, -1), -1)
    first = np.argmax(cumulative > target.reshape(-1, 1), axis=-1)
    found = np.take_along_axis(flat, np.take_along_axis(order, first[:, None], -1), -1)[:, 0]
    found = found.reshape(n.shape)
    lo, hi = sketch["lo"].astype(np.uint64), sketch["hi"].astype(np.uint64)
    found = np.where(target <= 0, lo, np.where(target >= n - 1, hi, found))
    kd = key_dtype(stored)
    return from_keys(np.where(n > 0, found, 0).astype(kd), stored).reshape(n.shape)


def _unpack(stored_values: np.ndarray, stored: np.dtype, scale: float, offset: float,
            dtype: np.dtype, packed: bool) -> np.ndarray:
    """Values as xarray decodes them: cast to ``dtype``, times ``scale``, plus ``offset``."""
    if not packed:
        return stored_values.astype(stored)
    values = stored_values.astype(dtype)
    values *= scale
    values += offset
    return values


def _total(reports: list[Report]) -> Report | None:
    """One report of all the rounds: their counters added, but ``bytes_stored``: every round
    reads the same chunks (``chunks`` counts them once per round)."""
    if not reports:
        return None
    total = Report(backend=reports[0].backend, plan_reason=reports[0].plan_reason)
    total.bytes_stored = max(report.bytes_stored for report in reports)  # the same chunks
    for report in reports:
        for name in ("chunks", "requests", "bytes_from_storage", "bytes_to_storage",
                     "fallbacks", "seconds", "estimated_bytes"):
            setattr(total, name, getattr(total, name) + getattr(report, name))
        for name in ("fallback_reasons", "paths", "links"):
            for key, value in getattr(report, name).items():
                total.add(getattr(total, name), key, value)
    return total

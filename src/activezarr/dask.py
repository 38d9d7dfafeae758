"""dask graphs whose leaves are storage-side partial reductions, combined by a tree reduction.

No leaf reads raw chunk data into the graph: each leaf asks the storage side for the partials
(count, sum, ...) of a box of chunks and returns them; the combine tasks merge partials
``split_every`` at a time, and one last task finishes them into the result. Each leaf's
:class:`~activezarr.Report` travels with its partials and is summed with them; the last task
publishes the sum (:func:`activezarr.collect_reports`). Everything in the graph pickles, so it
runs on a ``dask.distributed`` cluster of processes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import zarr
from dask.highlevelgraph import HighLevelGraph
from dask.tokenize import tokenize

from .chunk.partial import Partial
from .chunk.reductions import Quantile
from .client.active import ActiveReduction, ReductionPlan
from .client.quantiles import finish, first_round, quantiles
from .client.report import Report, publish
from .planning.chunks import chunk_spans
from .planning.selection import normalize_selection, part_of

__all__ = ["reduce"]


def reduce(arr: zarr.Array | ActiveReduction, op: str, axis: Any = None, *,
           selection: Any = ..., weights: Any = None, groups: Any = None, where: Any = None,
           split_every: int = 8, leaf_chunks: int = 1, **options: Any) -> da.Array:
    """``ActiveReduction(arr)[selection].reduce(op, axis, ...)`` as a lazy dask array (one block).

    The selection is cut along the reduced (and grouped) dimensions into boxes of
    ``leaf_chunks`` chunks each; every box is one leaf task. A ``quantile`` or ``median``
    with ``method="approximate"`` is such a tree of its one round's sketches; an exact one is
    one task running its rounds (each the next's input), each round spread as eager ones are.
    """
    if split_every < 2:
        raise ValueError(f"split_every must be at least 2, got {split_every}")
    red = arr if isinstance(arr, ActiveReduction) else ActiveReduction(arr)
    if where is not None:
        red = red.where(where)
    dims = normalize_selection(selection, red.layout.shape)
    plan = red.prepare(op, dims, axis, dict(options, weights=weights, groups=groups))
    token = tokenize(str(red.array.store_path), op, axis, selection, weights,
                     groups, red.decoding.missing.model_dump(), options, split_every, leaf_chunks)
    graph: dict[Any, Any] = {}
    name = f"activezarr-{op}-{token}"
    shape = plan.output_shape
    if isinstance(plan.reduction, Quantile):
        shape = (*np.shape(plan.reduction.q), *shape)
    dtype = plan.reduction.result_dtype(red.decoding.value_dtype or red.layout.dtype)
    final = (name, *(0,) * len(shape))
    exact = isinstance(plan.reduction, Quantile) and plan.reduction.method == "exact"
    if exact:  # rounds that depend on the last one's answer: one task runs them all
        graph[final] = (_quantiles, red, plan)
        return _array(graph, name, shape, dtype)
    # An approximate quantile's leaves reduce its one round (``key_sketch``).
    leaves = first_round(plan) if isinstance(plan.reduction, Quantile) else plan
    level = []
    # An empty selection has no chunk to cut: one leaf, which the engine answers as empty.
    for i, box in enumerate(_boxes(red, leaves, leaf_chunks) or [leaves]):
        key = (f"activezarr-leaf-{token}", i)
        graph[key] = (_leaf, red, box)
        level.append(key)
    depth = 0
    while len(level) > 1:
        depth += 1
        combined = f"activezarr-combine-{depth}-{token}"
        groups_of = [level[i:i + split_every] for i in range(0, len(level), split_every)]
        level = [(combined, j) for j in range(len(groups_of))]
        for key, members in zip(level, groups_of):
            graph[key] = (_combine, list(members))
    graph[final] = (_finish, red, plan, level[0])
    return _array(graph, name, shape, dtype)


def _array(graph: dict[Any, Any], name: str, shape: tuple[int, ...], dtype: np.dtype
           ) -> da.Array:
    layer = HighLevelGraph.from_collections(name, graph, dependencies=())
    return da.Array(layer, name, chunks=tuple((n,) for n in shape), dtype=dtype,
                    meta=np.ma.masked_array(np.empty((0,) * len(shape), dtype)))


def _boxes(red: ActiveReduction, plan: ReductionPlan, per_leaf: int) -> list[ReductionPlan]:
    """The plan cut into boxes along the reduced and grouped dimensions, chunk-aligned."""
    # A positional state (argmax) counts positions in the whole selection: not cut there.
    positional = plan.reduction.aggregation.positional
    split = (set() if positional else set(plan.reduced)) | ({plan.extras.group_dim} - {None})
    per_dim: list[list[tuple[int, int]]] = []
    for d, (sel, chunk) in enumerate(zip(plan.dims, red.layout.chunk_shape)):
        spans = chunk_spans(sel, chunk) if d in split else [(0, sel.size)]
        merged = [(group[0][0], group[-1][1]) for group in
                  (spans[i:i + per_leaf] for i in range(0, len(spans), per_leaf))]
        per_dim.append(merged)
    boxes = []
    for box in itertools.product(*per_dim):
        dims = tuple(part_of(sel, *span) if d in split else sel  # whole: its order kept
                     for d, (sel, span) in enumerate(zip(plan.dims, box)))
        boxes.append(ReductionPlan(plan.reduction, dims, plan.reduced, plan.extras.box(box)))
    return boxes


def _leaf(red: ActiveReduction, box: ReductionPlan) -> tuple[Partial, Report]:
    """The storage side's partials of one box (of the whole output's shape), and its report."""
    return red.accumulate_reported(box)


def _combine(parts: Sequence[tuple[Partial, Report]]) -> tuple[Partial, Report]:
    (acc, _), *rest = parts
    for part, _ in rest:
        acc.merge(part)
    return acc, Report.total(report for _, report in parts)


def _finish(red: ActiveReduction, plan: ReductionPlan, reported: tuple[Partial, Report]) -> Any:
    """numpy's answer as one block: a masked array (0-d for a scalar); the reduction's report
    published."""
    acc, report = reported
    publish(report)
    quantile = isinstance(plan.reduction, Quantile)
    return _block(red, plan, finish(red, plan, acc) if quantile else red.finish(plan, acc))


def _quantiles(red: ActiveReduction, plan: ReductionPlan) -> Any:
    """An exact quantile's rounds, run at once; their report published."""
    result = quantiles(red, plan)
    assert red.last_report is not None
    publish(red.last_report)
    return _block(red, plan, result)


def _block(red: ActiveReduction, plan: ReductionPlan, result: Any) -> Any:
    if result is np.ma.masked:
        dtype = plan.reduction.result_dtype(red.decoding.value_dtype or red.layout.dtype)
        return np.ma.masked_array(np.zeros((), dtype), mask=True)
    return np.ma.asarray(result)

"""The chunk kernel: stored bytes -> decoded array -> selection -> missing mask -> partials.

Pure numpy and numcodecs, no zarr: the same code runs in every storage-side process.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from .codecs import CodecChain
from .missing import is_missing, missing_mask
from .partial import Partial, accumulator_dtype, sentinels
from .spec import ChunkSpec, MissingSpec, Selection


def partial_of(
    data: np.ndarray,
    *,
    missing: MissingSpec,
    axes: tuple[int, ...],
    names: tuple[str, ...],
    accumulate: str = "wide",
    weights: np.ndarray | None = None,
) -> Partial:
    """Partials of ``data`` over ``axes`` (dropped from the result), skipping missing elements.

    With ``weights`` (broadcast to ``data``), ``sum`` is the sum of weight * value and ``wsum``
    the sum of the weights, both over the valid elements (xarray's ``weighted``).
    """
    mask = missing_mask(data, missing)
    valid: Any = True if mask is None else ~mask
    if mask is None:
        n = math.prod(data.shape[a] for a in axes)
        count = np.full(kept_shape(data.shape, axes), n, np.int64)
    else:
        count = np.asarray(np.count_nonzero(valid, axis=axes), dtype=np.int64)
    result = Partial(count)
    lo, hi = sentinels(data.dtype)
    native = data.dtype.newbyteorder("=")
    if weights is not None:
        w = np.broadcast_to(np.asarray(weights, np.float64), data.shape)
        with np.errstate(invalid="ignore", over="ignore"):
            result.sum = np.add.reduce(w * data, axis=axes, where=valid)
        result.wsum = np.add.reduce(w, axis=axes, where=valid)
        names = tuple(n for n in names if n not in ("sum", "m2", "wsum"))
    if "sum" in names or "m2" in names:
        acc = accumulator_dtype(data.dtype, accumulate)
        total = np.add.reduce(data, axis=axes, dtype=acc, where=valid, keepdims=True)
        result.sum = total.reshape(count.shape)
        if "m2" in names:
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = total / count.reshape(total.shape)
            deviation = data.astype(np.float64) - mean
            result.m2 = np.add.reduce(deviation * deviation, axis=axes, where=valid)
    if "min" in names:
        result.min = np.minimum.reduce(data, axis=axes, initial=lo, where=valid).astype(native)
    if "max" in names:
        result.max = np.maximum.reduce(data, axis=axes, initial=hi, where=valid).astype(native)
    return result


def constant_partial(
    value: Any,
    dtype: np.dtype,
    shape: tuple[int, ...],
    *,
    missing: MissingSpec,
    axes: tuple[int, ...],
    names: tuple[str, ...],
    accumulate: str = "wide",
) -> Partial:
    """Partials of an array of ``shape`` filled with ``value`` (a chunk never written), no data."""
    out_shape = kept_shape(shape, axes)
    n = 0 if is_missing(value, dtype, missing) else math.prod(shape[a] for a in axes)
    result = Partial.empty(out_shape, dtype, names, accumulate)
    if n == 0:
        return result
    result.count[...] = n
    stored = np.asarray(value, dtype=dtype)
    if result.sum is not None:
        result.sum[...] = np.multiply(stored, n, dtype=result.sum.dtype, casting="unsafe")
    if result.min is not None:
        result.min[...] = stored
    if result.max is not None:
        result.max[...] = stored
    return result


def grouped_partial(
    data: np.ndarray,
    labels: np.ndarray,
    *,
    group_axis: int,
    axes: tuple[int, ...],
    weights: np.ndarray | None = None,
    **options: Any,
) -> Partial:
    """Partials per group along ``group_axis``: one per label present (ascending), stacked
    where that axis falls among the kept ones. Negative labels belong to no group."""
    if labels.shape != (data.shape[group_axis],):
        raise ValueError(f"{labels.shape[0] if labels.ndim == 1 else labels.shape} group "
                         f"labels for {data.shape[group_axis]} positions along axis {group_axis}")
    present = group_keys(labels)
    reduced = tuple(sorted((*axes, group_axis)))
    parts = []
    for label in present:
        where = np.flatnonzero(labels == label)
        picked = None
        if weights is not None:
            picked = weights if weights.shape[group_axis] == 1 else np.take(weights, where,
                                                                            group_axis)
        parts.append(partial_of(np.take(data, where, group_axis), axes=reduced, weights=picked,
                                **options))
    at = sum(1 for a in range(group_axis) if a not in axes)
    if not parts:
        shape = list(kept_shape(data.shape, axes))
        shape[at] = 0
        return Partial.empty(tuple(shape), data.dtype, options["names"], options["accumulate"])
    return Partial.stack(parts, at)


def group_keys(labels: np.ndarray) -> np.ndarray:
    """The groups :func:`grouped_partial` returns partials for, in its order."""
    present = np.unique(labels)
    return present[present >= 0]


def kept_shape(shape: Sequence[int], axes: Collection[int]) -> tuple[int, ...]:
    """``shape`` without the reduced ``axes``: the shape of a partial (one output cell each)."""
    return tuple(n for i, n in enumerate(shape) if i not in axes)


class ChunkKernel:
    """Decodes and reduces the chunks of one array; built once, reused for every chunk."""

    def __init__(self, spec: ChunkSpec) -> None:
        self.spec = spec
        self.dtype = np.dtype(spec.dtype)
        self.chain = CodecChain(spec.codecs)
        self.nbytes = math.prod(spec.shape) * self.dtype.itemsize
        self.axes = spec.reduced_axes

    def decode(self, raw: Any, key: str | None = None) -> np.ndarray:
        """The chunk as an array of its logical shape (stored order undone)."""
        flat = self.chain.decode(raw, self.nbytes, key).view(self.dtype)
        order, shape = self.spec.order, self.spec.shape
        if order == "C":
            return flat.reshape(shape)
        if order == "F":
            return flat.reshape(shape, order="F")
        stored = flat.reshape([shape[i] for i in order])
        return stored.transpose(np.argsort(order))

    def reduce(self, raw: Any, selection: Selection, key: str | None = None, *,
               weights: np.ndarray | None = None, labels: np.ndarray | None = None) -> Partial:
        """Partials of ``selection`` (``((start, stop, step), ...)``) of one stored chunk.

        ``weights`` (broadcastable to the selection) and ``labels`` (one group label per
        selected position along ``spec.group_axis``) are what weighted and grouped specs need.
        """
        data = self.decode(raw, key)[tuple(slice(*s) for s in selection)]
        return self.partial(data, weights, labels)

    def partial(self, data: np.ndarray, weights: np.ndarray | None = None,
                labels: np.ndarray | None = None) -> Partial:
        """Partials of selected, decoded ``data``, weighted and grouped as the spec says."""
        spec = self.spec
        if spec.weighted != (weights is not None):
            raise ValueError("weights are needed by, and only by, a weighted spec")
        if (spec.group_axis is not None) != (labels is not None):
            raise ValueError("group labels are needed by, and only by, a grouped spec")
        if weights is not None and (weights.ndim != data.ndim or any(
                w not in (1, n) for w, n in zip(weights.shape, data.shape))):
            raise ValueError(f"weights of shape {weights.shape} do not broadcast to the "
                             f"selection's {data.shape}")
        options: dict[str, Any] = dict(missing=spec.missing, names=spec.fields,
                                       accumulate=spec.accumulate)
        if labels is not None:
            assert spec.group_axis is not None
            return grouped_partial(data, labels, group_axis=spec.group_axis, axes=self.axes,
                                   weights=weights, **options)
        return partial_of(data, axes=self.axes, weights=weights, **options)

    def fill(self, value: Any, selection: Selection, *, weights: np.ndarray | None = None,
             labels: np.ndarray | None = None) -> Partial:
        """Partials of ``selection`` of a chunk that was never written (all ``value``)."""
        shape = tuple(
            len(range(*slice(*s).indices(n))) for s, n in zip(selection, self.spec.shape)
        )
        if weights is not None or labels is not None:
            return self.partial(np.full(shape, value, self.dtype), weights, labels)
        return constant_partial(value, self.dtype, shape, missing=self.spec.missing,
                                axes=self.axes, names=self.spec.fields,
                                accumulate=self.spec.accumulate)

"""The chunk kernel: stored bytes -> decoded array -> selection -> missing mask -> partials.

Pure numpy and numcodecs, no zarr: the same code runs in every storage-side process.
"""

from __future__ import annotations

import math
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
) -> Partial:
    """Partials of ``data`` over ``axes`` (dropped from the result), skipping missing elements."""
    mask = missing_mask(data, missing)
    valid: Any = True if mask is None else ~mask
    if mask is None:
        n = math.prod(data.shape[a] for a in axes)
        count = np.full(_kept_shape(data.shape, axes), n, np.int64)
    else:
        count = np.asarray(np.count_nonzero(valid, axis=axes), dtype=np.int64)
    result = Partial(count)
    lo, hi = sentinels(data.dtype)
    native = data.dtype.newbyteorder("=")
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
    out_shape = _kept_shape(shape, axes)
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


def _kept_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
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

    def reduce(self, raw: Any, selection: Selection, key: str | None = None) -> Partial:
        """Partials of ``selection`` (``((start, stop, step), ...)``) of one stored chunk."""
        data = self.decode(raw, key)[tuple(slice(*s) for s in selection)]
        return partial_of(data, missing=self.spec.missing, axes=self.axes,
                          names=self.spec.fields, accumulate=self.spec.accumulate)

    def fill(self, value: Any, selection: Selection) -> Partial:
        """Partials of ``selection`` of a chunk that was never written (all ``value``)."""
        shape = tuple(
            len(range(*slice(*s).indices(n))) for s, n in zip(selection, self.spec.shape)
        )
        return constant_partial(value, self.dtype, shape, missing=self.spec.missing,
                                axes=self.axes, names=self.spec.fields,
                                accumulate=self.spec.accumulate)

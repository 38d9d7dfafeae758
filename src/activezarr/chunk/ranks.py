"""Order statistics where the data is: the aggregations of an exact quantile's rounds.

An exact quantile needs, per output cell, the values at two consecutive ranks. They are found
in the *key* of each stored value: its bits turned into an unsigned integer that sorts as the
values do (floats: the sign bit flipped, negatives' other bits too; signed integers: the sign
bit flipped), so brackets of keys are exact, with no floating-point bin edges. Three
aggregations, each an ordinary storage-side reduction:

- ``key_range``: per cell the smallest and largest key of the valid values (and the count);
- ``key_bins``: per cell the valid values in each of ``bins`` buckets of ``2**shift`` keys from
  the cell's own ``start * 2**shift`` (the bracket holding the rank sought, refined round by
  round);
- ``key_values``: per cell the ``slots`` smallest keys at or above the cell's lower bound.

The per-cell bracket travels in the request's ``weights`` field (one number per output cell,
broadcast over the reduced axes, cut to each chunk's region as weights are):
``start * 4096 + shift * 64`` (``start < 2**41``), or -1 for a cell with nothing to do. The
client's side of the rounds is :mod:`activezarr.client.quantiles`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField

from .aggregation import Aggregation, Field, Where, bin_counts, int64
from .partial import Partial

#: Most buckets a ``key_bins`` request counts, and most keys a ``key_values`` one keeps, per cell.
MAX_BINS = 4096
MAX_SLOTS = 4096
#: A bracket's ``start`` is below ``2**START_BITS``, so that it travels exactly in a float64.
START_BITS = 41


def key_dtype(dtype: np.dtype) -> np.dtype:
    """The unsigned dtype of the keys of values of ``dtype``."""
    return np.dtype(f"u{np.dtype(dtype).itemsize}")


def sort_keys(data: np.ndarray) -> np.ndarray:
    """The order-preserving unsigned keys of ``data``; every NaN is the largest key (numpy
    sorts NaN last)."""
    data = np.asarray(data, data.dtype.newbyteorder("="))
    kd = key_dtype(data.dtype)
    bits = data.view(kd)
    top = kd.type(1 << (8 * kd.itemsize - 1))
    if data.dtype.kind == "f":
        keys = np.where(bits & top, ~bits, bits | top)
        keys[np.isnan(data)] = np.iinfo(kd).max
        return keys
    if data.dtype.kind == "i":
        flipped: np.ndarray = bits ^ top
        return flipped
    return bits


def from_keys(keys: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The values of ``dtype`` (native order) whose keys are ``keys``."""
    dtype = np.dtype(dtype).newbyteorder("=")
    kd = key_dtype(dtype)
    keys = np.asarray(keys).astype(kd)
    top = kd.type(1 << (8 * kd.itemsize - 1))
    if dtype.kind == "f":
        bits = np.where(keys & top, keys ^ top, ~keys)
    elif dtype.kind == "i":
        bits = keys ^ top
    else:
        bits = keys
    return np.ascontiguousarray(bits, kd).view(dtype)


def min_shift(dtype: np.dtype) -> int:
    """The narrowest bucket (``2**shift`` keys) a bracket of keys of ``dtype`` can name."""
    return max(0, 8 * np.dtype(dtype).itemsize - START_BITS)


def bracket(start: np.ndarray, shift: np.ndarray, active: np.ndarray) -> np.ndarray:
    """The per-cell bracket numbers a request carries (-1 where ``active`` is False)."""
    code = np.asarray(start, np.float64) * 4096 + np.asarray(shift, np.float64) * 64
    return np.where(active, code, -1.0)


def _brackets(weights: np.ndarray | None, axes: tuple[int, ...], op: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, shift, active) per cell, the reduced axes kept (to broadcast against data)."""
    if weights is None:
        raise ValueError(f"the {op} operation needs each cell's bracket in weights")
    cells = weights[tuple(slice(0, 1) if a in axes else slice(None)
                          for a in range(weights.ndim))]
    active = cells >= 0
    code = np.where(active, cells, 0).astype(np.int64)
    return (code >> 12).astype(np.uint64), ((code >> 6) & 63).astype(np.uint64), active


def _keys64(data: np.ndarray) -> np.ndarray:
    return sort_keys(data).astype(np.uint64)


class _KeyField:
    """A field of keys of the stored dtype."""

    @staticmethod
    def dtype(dtype: np.dtype, accumulate: str) -> np.dtype:
        return key_dtype(dtype)

    @staticmethod
    def largest(dtype: np.dtype) -> Any:
        return np.iinfo(key_dtype(dtype)).max


class KeyRange(Aggregation):
    """``key_range`` (extension): per cell the smallest and largest key of the valid values."""

    op = "key_range"
    fields = (Field("lo", _KeyField.dtype, _KeyField.largest, np.minimum),
              Field("hi", _KeyField.dtype, lambda dtype: 0, np.maximum))

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        keys = sort_keys(data)
        kd = key_dtype(self.dtype)
        return {
            "lo": np.minimum.reduce(keys, axis=axes, initial=np.iinfo(kd).max, where=valid),
            "hi": np.maximum.reduce(keys, axis=axes, initial=0, where=valid)}


class BinsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    bins: int = PydanticField(ge=2, le=MAX_BINS)


class _Bracketed(Aggregation):
    """A round that takes each cell's bracket in ``weights`` and keeps one field of a fixed
    shape per cell, sized by its parameters."""

    takes_weights = True

    def __init__(self, dtype: Any, accumulate: str = "wide", weighted: bool = False,
                 params: Mapping[str, Any] | None = None) -> None:
        super().__init__(dtype, accumulate, weighted, params)
        self.fields = (self.field(),)

    def field(self) -> Field:
        raise NotImplementedError


class KeyBins(_Bracketed):
    """``key_bins`` (extension): per cell, the valid values in each of ``bins`` buckets of
    ``2**shift`` keys from the cell's ``start * 2**shift`` (its bracket, in ``weights``)."""

    op = "key_bins"
    Params = BinsParams
    params: BinsParams

    def field(self) -> Field:
        return Field("counts", int64, lambda dtype: 0, np.add, cell_shape=(self.params.bins,))

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        start, shift, active = _brackets(weights, axes, self.op)
        nbins = self.params.bins
        with np.errstate(over="ignore"):
            bins = (_keys64(data) >> shift) - start  # below the bracket: wraps to a huge number
        inside = (bins < nbins) & active & np.broadcast_to(valid, data.shape)
        bins = np.where(inside, bins, 0).astype(np.int64)
        return {"counts": bin_counts(bins, inside, axes, count.shape, nbins)}


class SlotsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    slots: int = PydanticField(ge=1, le=MAX_SLOTS)


class KeyValues(_Bracketed):
    """``key_values`` (extension): per cell the ``slots`` smallest keys of valid values at or
    above the cell's lower bound ``start * 2**shift`` (in ``weights``), ascending, the rest
    of the slots the largest key."""

    op = "key_values"
    Params = SlotsParams
    params: SlotsParams

    def field(self) -> Field:
        return Field("keys", _KeyField.dtype, _KeyField.largest, None,
                     cell_shape=(self.params.slots,))

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        start, shift, active = _brackets(weights, axes, self.op)
        keys = _keys64(data)
        taken = (keys >= (start << shift)) & active & np.broadcast_to(valid, data.shape)
        largest = np.uint64(np.iinfo(key_dtype(self.dtype)).max)
        kept = [a for a in range(data.ndim) if a not in axes]
        per_cell = np.transpose(np.where(taken, keys, largest), (*kept, *axes)).reshape(
            (*count.shape, -1))
        return {"keys": self._smallest(per_cell)}

    def _smallest(self, keys: np.ndarray) -> np.ndarray:
        """The ``slots`` smallest of ``keys`` along the last axis, ascending, padded."""
        slots = self.params.slots
        if keys.shape[-1] > slots:
            keys = np.partition(keys, slots - 1, axis=-1)[..., :slots]
        keys = np.sort(keys, axis=-1)
        largest = np.iinfo(key_dtype(self.dtype)).max
        pad = slots - keys.shape[-1]
        if pad:
            keys = np.concatenate([keys, np.full((*keys.shape[:-1], pad), largest, keys.dtype)],
                                  axis=-1)
        return keys.astype(key_dtype(self.dtype))

    def merge(self, into: Partial, other: Partial, region: tuple[Any, ...] = ()) -> None:
        target = into.arrays["keys"]
        both = np.concatenate([np.broadcast_to(target[region], other["keys"].shape),
                               other["keys"]], axis=-1)
        target[region] = self._smallest(both)
        into.count[region] = into.count[region] + other.count


# --- approximate quantiles: a deterministic mergeable sketch of keys -------------------


#: Most keys a ``key_sketch`` level keeps per cell, and most levels.
MAX_SKETCH = 4096
MAX_LEVELS = 64


class SketchParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    k: int = PydanticField(ge=2, le=MAX_SKETCH)
    levels: int = PydanticField(ge=1, le=MAX_LEVELS)


def sketch_levels(n: int, k: int) -> int:
    """The levels a sketch of at most ``n`` values per cell needs, ``k`` keys each: its top
    level, of weight ``2**(levels - 1)``, then never holds more than ``k``."""
    return 1 + max(0, math.ceil(math.log2(max(n, 1) / k)))


def rank_error_bound(n: np.ndarray, selected: int, k: int) -> np.ndarray:
    """The most a sketch's rank of any value is off, for cells of ``n`` valid values among
    ``selected`` positions: ``n * ceil(log2(selected / k)) / k`` (each level's compactions
    add at most ``n / k``), and 0 where nothing was compacted."""
    return np.asarray(n, np.float64) * (sketch_levels(selected, k) - 1) / k


class KeySketch(Aggregation):
    """``key_sketch`` (extension): per cell a deterministic compactor sketch of the valid
    values' keys (Manku, Rajagopalan and Lindsay's; mergeable as Agarwal et al. show).

    Level ``h`` keeps at most ``k`` keys, each standing for ``2**h`` values. A level holding
    more is *compacted*: its keys sorted, every other one of its pairs goes up a level (the
    odd one out, the largest, stays), which moves any value's rank in the sketch by at most
    ``2**h``; ``rank_error`` adds those up. Each compaction of level ``h`` takes at least ``k``
    keys of weight ``2**h`` of the cell's ``n`` values: ``rank_error <= n * (levels - 1) / k``.
    Merging two sketches concatenates their levels and compacts again: the bound holds for
    any order of merges. ``lo`` and ``hi`` are the exact smallest and largest keys.
    """

    op = "key_sketch"
    Params = SketchParams
    params: SketchParams

    def __init__(self, dtype: Any, accumulate: str = "wide", weighted: bool = False,
                 params: Mapping[str, Any] | None = None) -> None:
        super().__init__(dtype, accumulate, weighted, params)
        shape = (self.params.levels, self.params.k)
        self.fields = (*KeyRange.fields,
                       Field("keys", _KeyField.dtype, _KeyField.largest, None, cell_shape=shape),
                       Field("fill", int64, lambda dtype: 0, None,
                             cell_shape=(self.params.levels,)),
                       Field("rank_error", int64, lambda dtype: 0, None))

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        ranged = KeyRange(self.dtype).chunk(data, valid, axes, count, weights)
        largest = np.iinfo(key_dtype(self.dtype)).max
        keys = np.where(np.broadcast_to(valid, data.shape), sort_keys(data), largest)
        kept = [a for a in range(data.ndim) if a not in axes]
        per_cell = np.transpose(keys, (*kept, *axes)).reshape(count.size, -1)
        levels, fill, error = self._compact([(per_cell, count.ravel())])
        return {**ranged, "keys": levels.reshape((*count.shape, *levels.shape[1:])),
                "fill": fill.reshape((*count.shape, -1)),
                "rank_error": error.reshape(count.shape)}

    def merge(self, into: Partial, other: Partial, region: tuple[Any, ...] = ()) -> None:
        shape = into.count[region].shape
        flat = [(np.broadcast_to(p["keys"], (*shape, *p["keys"].shape[-2:])).reshape(
            -1, *p["keys"].shape[-2:]), np.broadcast_to(p["fill"], (*shape, self.params.levels)
                                                        ).reshape(-1, self.params.levels))
                for p in (into.map(lambda a: a[region]), other)]
        levels, fill, error = self._compact(
            [(np.concatenate([flat[0][0][:, h], flat[1][0][:, h]], axis=-1),
              flat[0][1][:, h] + flat[1][1][:, h]) for h in range(self.params.levels)])
        into["keys"][region] = levels.reshape(into["keys"][region].shape)
        into["fill"][region] = fill.reshape(into["fill"][region].shape)
        into["rank_error"][region] = (into["rank_error"][region] + other["rank_error"]
                                      + error.reshape(shape))
        into["lo"][region] = np.minimum(into["lo"][region], other["lo"])
        into["hi"][region] = np.maximum(into["hi"][region], other["hi"])
        into.count[region] = into.count[region] + other.count

    def _compact(self, inputs: list[tuple[np.ndarray, np.ndarray]]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, fill, error) of the sketch holding ``inputs``: per level from the bottom,
        its keys per cell (unsorted, the largest key past each cell's ``fill``) and ``fill``;
        each level holding more than ``k`` compacted into the next."""
        k, depth = self.params.k, self.params.levels
        kd = key_dtype(self.dtype)
        largest = kd.type(np.iinfo(kd).max)
        cells = inputs[0][0].shape[0]
        out = np.full((cells, depth, k), largest, kd)
        fill_out = np.zeros((cells, depth), np.int64)
        error = np.zeros(cells, np.int64)
        carried = np.full((cells, 0), largest, kd)
        carried_fill = np.zeros(cells, np.int64)
        for h in range(depth):
            keys, fill = inputs[h] if h < len(inputs) else (carried[:, :0], carried_fill * 0)
            width = keys.shape[1] + carried.shape[1]
            level = np.sort(np.concatenate([keys.astype(kd), carried, np.full(
                (cells, max(0, k - width)), largest, kd)], axis=-1), axis=-1)
            fill = fill + carried_fill
            over = fill > k
            if over.any() and h == depth - 1:
                raise ValueError(f"key_sketch: a cell holds more values than {depth} levels of "
                                 f"{k} keys keep; ask for more levels")
            pairs = fill // 2
            # every other key of the compacted pairs goes up (from alternate ends per level)
            up = level[:, h % 2::2][:, :max(int(pairs.max(initial=0)), 0)]
            up = np.where(over[:, None] & (np.arange(up.shape[1]) < pairs[:, None]), up, largest)
            odd = np.take_along_axis(level, np.maximum(fill - 1, 0)[:, None], -1)[:, 0]
            kept = np.where(over[:, None], largest, level[:, :k])
            kept[:, 0] = np.where(over & (fill % 2 == 1), odd, kept[:, 0])
            out[:, h] = kept
            fill_out[:, h] = np.where(over, fill % 2, fill)
            error += np.where(over, np.int64(1) << h, 0)
            carried, carried_fill = up, np.where(over, pairs, 0)
        return out, fill_out, error


RANK_AGGREGATIONS: tuple[type[Aggregation], ...] = (KeyRange, KeyBins, KeyValues, KeySketch)


# --- numpy's linear quantile from two order statistics ----------------------------------


def linear_ranks(n: np.ndarray, q: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(previous, next, gamma) as numpy's ``quantile(method="linear")`` computes them for
    ``n`` values: the ranks whose values it interpolates, and the weight of the next."""
    virtual = (np.asarray(n, np.float64) - 1) * np.float64(q)
    previous = np.floor(virtual)
    above = virtual >= n - 1
    previous_numpy = np.where(above, -1.0, previous)  # numpy's index of the last value
    gamma = virtual - previous_numpy
    last = np.maximum(np.asarray(n, np.int64) - 1, 0)
    lower = np.where(above, last, np.maximum(previous, 0)).astype(np.int64)
    upper = np.where(above, last, np.minimum(lower + 1, last)).astype(np.int64)
    return lower, upper, gamma


def lerp(a: np.ndarray, b: np.ndarray, gamma: np.ndarray, weak: bool) -> np.ndarray:
    """numpy's ``_lerp`` of ``a`` and ``b`` by ``gamma``, in the values' dtype where numpy's
    ``q`` is a Python float (``weak``), else promoted to float64 as numpy does."""
    t = np.asarray(gamma, np.float64)
    if weak:
        t_dtype = a.dtype if a.dtype.kind == "f" else np.dtype(np.float64)
        step, back = t.astype(t_dtype), (1 - t).astype(t_dtype)
    else:
        step, back = t, 1 - t
    diff = b - a
    out = np.array(np.add(a, diff * step))
    np.subtract(b, diff * back, out=out, where=t >= 0.5, casting="unsafe")
    return out

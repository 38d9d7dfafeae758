"""The partial state of a reduction and its algebra, as flox's ``Aggregation`` and dask's
chunk/combine/aggregate split it.

An :class:`Aggregation` declares the named arrays of its state (:class:`Field`: a dtype rule
from the stored dtype and ``accumulate``, the value of a cell with nothing in it, a fixed shape
after the output cells' and the ufunc that merges two states), how one decoded, masked chunk
selection becomes that state (:meth:`Aggregation.chunk`: numpy, on the storage side), how two
states merge, how a state is written in PROTOCOL.md's response map and read back, and what it
costs in bytes. Every state also counts the valid elements behind each cell (``count``).

This module is generic: the built-in aggregations, and the reductions finishing them, are in
:mod:`activezarr.chunk.reductions`; a third party subclasses both (docs/PLUGINS.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from .partial import Partial
from .result import (
    ResultForm,
    compress_result,
    count_array,
    field_bytes,
    narrowest_count,
    plain_result,
    read_array,
    result_order,
    wire_bytes,
)

Where = np.ndarray | bool
#: (stored dtype in native byte order, accumulate) -> the dtype of a field.
DtypeRule = Callable[[np.dtype, str], np.dtype]


@dataclass(frozen=True)
class Field:
    """One named array of a state, per output cell.

    ``identity(dtype)`` is what a cell holds where nothing was valid (and what merging it
    changes nothing of); ``ufunc`` merges two states' values cell by cell (``None`` where the
    aggregation's :meth:`~Aggregation.merge` does it itself); ``cell_shape`` is a fixed shape
    after the cells' (a histogram's bins); ``of_constant(stored, n, dtype)``, where given, is
    the field of ``n`` copies of one stored value (a chunk never written) without reducing
    them; ``compresses`` tells the cost model that ``lean`` zstd shrinks it (wide sums).
    """

    name: str
    dtype: DtypeRule
    identity: Callable[[np.dtype], Any]
    ufunc: np.ufunc | None = np.add
    cell_shape: tuple[int, ...] = ()
    of_constant: Callable[[np.ndarray, int, np.dtype], Any] | None = None
    compresses: bool = False


def stored(dtype: np.dtype, accumulate: str) -> np.dtype:
    """A field in the stored dtype (a min, a max)."""
    return dtype


def float64(dtype: np.dtype, accumulate: str) -> np.dtype:
    """A float64 field whatever is stored (moments, sums of weights)."""
    return np.dtype(np.float64)


def int64(dtype: np.dtype, accumulate: str) -> np.dtype:
    """An int64 field whatever is stored (counts)."""
    return np.dtype(np.int64)


class NoParams(BaseModel):
    """An aggregation without request parameters: ``params`` must be absent or empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Aggregation:
    """The state one wire operation (``op``) computes on a chunk, bound to the stored dtype,
    the accumulation, whether elements are weighted and the request's parameters."""

    #: The operation a request names (``POST /v2/{op}``); the registry's name for plugins.
    op: ClassVar[str]
    fields: tuple[Field, ...] = ()
    #: The request parameters this state takes (validated on both sides), e.g. bins.
    Params: ClassVar[type[BaseModel]] = NoParams
    #: Whether elements may come with weights (a weighted sum).
    takes_weights: ClassVar[bool] = False
    #: Whether the state holds positions in the whole selection (an argmax's): its ``Params``
    #: then take ``origin``, where a chunk's selection starts in the whole one, per dimension,
    #: which each chunk's request carries (:meth:`at`).
    positional: ClassVar[bool] = False

    def __init__(self, dtype: Any, accumulate: str = "wide", weighted: bool = False,
                 params: Mapping[str, Any] | None = None) -> None:
        if weighted and not self.takes_weights:
            raise ValueError(f"weights go with the sum operation, not {self.op}")
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.accumulate = accumulate
        self.weighted = weighted
        self.params = self.Params.model_validate(dict(params or {}))

    def at(self, origin: Sequence[int]) -> Aggregation:
        """This aggregation for a part of its selection starting ``origin`` positions further
        along each dimension (itself where positions do not matter)."""
        if not self.positional:
            return self
        params = self.params.model_dump()
        base = params.get("origin") or [0] * len(origin)
        params["origin"] = [int(a) + int(b) for a, b in zip(base, origin, strict=True)]
        return type(self)(self.dtype, self.accumulate, self.weighted, params)

    def check_fits(self, extents: Sequence[int], axes: tuple[int, ...]) -> None:
        """Raise ValueError where the parameters do not fit a chunk selection of ``extents``
        reduced over ``axes`` (servers ask before reading anything)."""

    # --- the state's arrays ---------------------------------------------------------------

    def field_dtype(self, field: Field) -> np.dtype:
        return field.dtype(self.dtype, self.accumulate)

    @property
    def words(self) -> int:
        """Numbers per output cell, the count included (what memory reservations size by)."""
        return 1 + sum(math.prod(f.cell_shape) for f in self.fields)

    def empty(self, shape: tuple[int, ...]) -> Partial:
        """The identity state: merging it with any state gives that state."""
        return Partial(self, np.zeros(shape, np.int64), {
            f.name: np.full((*shape, *f.cell_shape), f.identity(self.dtype), self.field_dtype(f))
            for f in self.fields})

    # --- storage side: a chunk becomes a state --------------------------------------------

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        """The state's arrays of ``data`` reduced over ``axes`` (dropped), skipping elements
        where ``valid`` is False (``True``: all valid; a ufunc's ``where=`` takes either).
        ``count`` is already computed; ``weights`` broadcast to ``data`` where weighted."""
        raise NotImplementedError(f"{type(self).__name__} does not reduce chunks")

    def reduce(self, data: np.ndarray, mask: np.ndarray | None, axes: tuple[int, ...],
               weights: np.ndarray | None = None) -> Partial:
        """The state of ``data`` over ``axes``, the elements under ``mask`` left out."""
        if mask is None:
            valid: Where = True
            n = math.prod(data.shape[a] for a in axes)
            count = np.full(tuple(s for i, s in enumerate(data.shape) if i not in axes), n,
                            np.int64)
        else:
            valid = ~mask
            count = np.asarray(np.count_nonzero(valid, axis=axes), dtype=np.int64)
        if weights is not None:
            weights = np.broadcast_to(np.asarray(weights, np.float64), data.shape)
        return Partial(self, count, self.chunk(data, valid, axes, count, weights))

    def constant(self, value: Any, shape: tuple[int, ...], axes: tuple[int, ...],
                 missing: bool) -> Partial:
        """The state of an array of ``shape`` holding only ``value`` (a chunk never written;
        ``missing`` says whether that value is masked), without materialising it."""
        out = tuple(n for i, n in enumerate(shape) if i not in axes)
        if missing:
            return self.empty(out)
        stored_value = np.asarray(value, self.dtype)
        if any(f.of_constant is None for f in self.fields):
            return self.reduce(np.broadcast_to(stored_value, shape), None, axes)
        n = math.prod(shape[a] for a in axes)
        result = self.empty(out)
        result.count[...] = n
        for f in self.fields:
            assert f.of_constant is not None
            result.arrays[f.name][...] = f.of_constant(stored_value, n, self.field_dtype(f))
        return result

    def grouped(self, data: np.ndarray, mask: np.ndarray | None, axes: tuple[int, ...],
                group_axis: int, labels: np.ndarray, weights: np.ndarray | None = None
                ) -> Partial:
        """States per group along ``group_axis`` (kept): one per label present, ascending.
        Negative labels belong to no group.

        Each position along the axis is reduced once, then the positions of each group are
        merged in one sorted pass (:meth:`segments`): O(n log n) in the labels, as flox does.
        """
        positions = self.reduce(data, mask, axes, weights)
        at = sum(1 for a in range(group_axis) if a not in axes)
        order, starts = group_runs(labels)
        if not starts.size:
            shape = list(positions.shape)
            shape[at] = 0
            return self.empty(tuple(shape))
        return self.segments(positions.map(lambda a: np.take(a, order, axis=at)), starts, at)

    def segments(self, sorted_state: Partial, starts: np.ndarray, axis: int) -> Partial:
        """The merge of each run of positions along ``axis`` starting at ``starts`` (ascending,
        covering the axis): each field's ufunc ``reduceat``; a state whose fields merge
        otherwise merges the runs one by one."""
        if all(f.ufunc is not None for f in self.fields):
            return Partial(self, np.add.reduceat(sorted_state.count, starts, axis=axis), {
                f.name: f.ufunc.reduceat(sorted_state.arrays[f.name], starts, axis=axis)
                for f in self.fields if f.ufunc is not None})
        ends = [*starts[1:].tolist(), sorted_state.shape[axis]]
        runs = []
        for start, end in zip(starts.tolist(), ends):
            shape = list(sorted_state.shape)
            shape[axis] = 1
            run = self.empty(tuple(shape))
            for i in range(start, end):
                run.merge(sorted_state.map(lambda a, i=i: np.take(a, [i], axis=axis)))
            runs.append(run)
        return Partial(self, np.concatenate([r.count for r in runs], axis=axis),
                       {name: np.concatenate([r.arrays[name] for r in runs], axis=axis)
                        for name in runs[0].arrays})

    # --- merging --------------------------------------------------------------------------

    def merge(self, into: Partial, other: Partial, region: tuple[Any, ...] = ()) -> None:
        """Fold ``other`` into ``into[region]`` in place; associative and commutative."""
        for f in self.fields:
            if f.ufunc is None:
                raise NotImplementedError(f"{type(self).__name__} must merge {f.name!r}")
            target = into.arrays[f.name]
            target[region] = f.ufunc(target[region], other.arrays[f.name], dtype=target.dtype,
                                     casting="unsafe")
        into.count[region] = into.count[region] + other.count

    # --- client side: CF unpacking --------------------------------------------------------

    def unpack(self, partial: Partial, scale: float, offset: float) -> Partial:
        """The state of ``scale * x + offset`` from that of stored ``x`` (CF unpacking)."""
        raise ValueError(f"the {self.op} reduction cannot unpack packed values (scale_factor/"
                         "add_offset); open the array with missing=None or decode_cf=False")

    # --- the wire -------------------------------------------------------------------------

    def encode(self, partial: Partial, form: ResultForm) -> dict[str, Any]:
        """The response map of ``partial`` (PROTOCOL.md): the counts, then each field's bytes
        under its name (the extension form; built-ins keep Reductionist's)."""
        result = plain_result(partial.count, partial.count, form)
        result["bytes"], result["dtype"] = b"", form.dtype
        for f in self.fields:
            values = partial.arrays[f.name]
            if form.lean and values.dtype == np.int64 and (values >= 0).all():
                # counts (histograms', brackets') in the narrowest dtype, told as "<name>_dtype"
                values = narrowest_count(values)
                result[f"{f.name}_dtype"] = values.dtype.name
            result[f.name] = wire_bytes(values, form.layout)
        if form.lean:
            compress_result(result, self.compressible)
        return result

    @property
    def compressible(self) -> tuple[str, ...]:
        """The names of the response map's arrays that ``lean`` may compress."""
        return ("bytes", *(f.name for f in self.fields), "count_packed")

    def decode(self, result: Mapping[str, Any], memory_order: str, axis: Any) -> Partial:
        """The state a response map stands for (the map of a request in ``memory_order`` over
        ``axis``)."""
        shape = tuple(result["shape"])
        layout = result_order(self.op, memory_order, axis)
        count = count_array(result, shape, layout)
        return Partial(self, count, {
            f.name: self.read_field(result, f.name, np.dtype(result.get(
                f"{f.name}_dtype", self.field_dtype(f))), shape, layout, f.cell_shape
            ).astype(self.field_dtype(f), copy=False)
            for f in self.fields})

    @staticmethod
    def read_field(result: Mapping[str, Any], key: str, dtype: np.dtype,
                   shape: tuple[int, ...], layout: Any, cell_shape: tuple[int, ...] = ()
                   ) -> np.ndarray:
        """The array under ``key`` of a response map, of ``dtype`` and the cells' ``shape``."""
        full = (*shape, *cell_shape)
        data = field_bytes(result, key, math.prod(full) * dtype.itemsize)
        return read_array(data, dtype.name, result["byte_order"], full, layout)

    def cell_bytes(self, memory: bool, zstd_ratio: float) -> float:
        """Bytes per output cell of the state's arrays (not the counts) in an answer: handed
        over in memory, or on the wire, where ``compresses`` fields shrink by ``zstd_ratio``."""
        return float(sum(
            self.field_dtype(f).itemsize * math.prod(f.cell_shape)
            * (zstd_ratio if f.compresses and not memory else 1.0) for f in self.fields))


def bin_counts(bins: np.ndarray, inside: np.ndarray, axes: tuple[int, ...],
               cells: tuple[int, ...], nbins: int) -> np.ndarray:
    """Per output cell (of shape ``cells``, ``axes`` reduced), how many elements fall in each
    of ``nbins`` bins: ``bins`` holds each element's bin, ``inside`` whether it is counted."""
    kept = [a for a in range(bins.ndim) if a not in axes]
    ncells = math.prod(cells)
    order = (*kept, *axes)
    per_cell = np.transpose(bins, order).reshape(ncells, -1)
    counted = np.transpose(inside, order).reshape(ncells, -1)
    slots = (np.arange(ncells)[:, None] * nbins + per_cell)[counted]
    return np.bincount(slots, minlength=ncells * nbins).reshape((*cells, nbins))


def group_runs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the grouped labels sorted by label, where each label's run starts): one
    stable sort; negative labels are left out."""
    labels = np.asarray(labels, np.int64)
    order = np.argsort(labels, kind="stable")
    ranked = labels[order]
    first = int(np.searchsorted(ranked, 0))
    order, ranked = order[first:], ranked[first:]
    if not ranked.size:
        return order, np.zeros(0, np.intp)
    return order, np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])


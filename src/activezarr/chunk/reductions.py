"""Reductions: the built-in aggregations (count, sum, min, max, stats, histogram) and the
reductions that finish them into numpy's answer; the registry plugins join.

Each built-in :class:`~activezarr.chunk.aggregation.Aggregation` below is the one place its
fields are named. Third parties add reductions through the ``activezarr.reductions``
entry-point group: a :class:`Reduction` subclass whose ``aggregation`` is their own state
(docs/PLUGINS.md); a server runs a plugin's aggregation only where its operator named it
(:func:`plugin_operations`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator
from pydantic import Field as PydanticField

from ..errors import InvalidReductionError, UnknownReductionError
from ..plugins import Registry
from .aggregation import Aggregation, Field, Where, bin_counts, float64, int64, stored
from .conditions import Decoder, PackedBins
from .partial import Partial, accumulator_dtype, sentinels
from .ranks import MAX_SKETCH, RANK_AGGREGATIONS, KeyRange, lerp
from .result import (
    ResultForm,
    compress_result,
    count_array,
    empty_filled,
    limits,
    narrowest_count,
    plain_result,
    result_order,
    wire_bytes,
)

if TYPE_CHECKING:
    from .missing import Decoding
    from .spec import ChunkSpec

reductions: Registry[type[Reduction]] = Registry("activezarr.reductions", "reduction",
                                                 UnknownReductionError)


# --- the built-in aggregations: Reductionist's operations and ``stats`` ---------------------


def _zero(dtype: np.dtype) -> Any:
    return 0


def _of_zero(value: np.ndarray, n: int, dtype: np.dtype) -> Any:
    return 0


def _times(value: np.ndarray, n: int, dtype: np.dtype) -> Any:
    """``n`` copies of ``value`` summed, in the sum's dtype (wrapping as the sum would)."""
    return np.multiply(value, n, dtype=dtype, casting="unsafe")


def _itself(value: np.ndarray, n: int, dtype: np.dtype) -> Any:
    return value


SUM = Field("sum", accumulator_dtype, _zero, np.add, of_constant=_times, compresses=True)
MIN = Field("min", stored, lambda dtype: sentinels(dtype)[0], np.minimum, of_constant=_itself)
MAX = Field("max", stored, lambda dtype: sentinels(dtype)[1], np.maximum, of_constant=_itself)
#: The sum of squared deviations from the mean (Chan et al. merge it; see Moments.merge).
M2 = Field("m2", float64, _zero, None, of_constant=_of_zero)
#: The sum of the weights of the valid elements (weighted reductions).
WSUM = Field("wsum", float64, _zero, np.add, of_constant=_of_zero)


def _wide_sum(data: np.ndarray, valid: Where, axes: tuple[int, ...], dtype: np.dtype
              ) -> np.ndarray:
    """The sum over ``axes`` in ``dtype``, the reduced axes kept (to broadcast against)."""
    return np.add.reduce(data, axis=axes, dtype=dtype, where=valid, keepdims=True)


class _Reductionist(Aggregation):
    """An operation of Reductionist's: the answer's ``bytes`` hold its one field."""

    def encode(self, partial: Partial, form: ResultForm) -> dict[str, Any]:
        result = plain_result(self.values(partial, form), partial.count, form)
        if form.lean:
            compress_result(result, ("bytes", "count_packed"))
        return result

    def values(self, partial: Partial, form: ResultForm) -> np.ndarray:
        """The array sent as ``bytes``."""
        field = self.fields[0]
        return empty_filled(partial[field.name], partial.count, self.empty_value(form))

    def empty_value(self, form: ResultForm) -> Any:
        """What ``bytes`` holds for a cell with no valid element."""
        return 0

    def decode(self, result: Mapping[str, Any], memory_order: str, axis: Any) -> Partial:
        shape = tuple(result["shape"])
        layout = result_order(self.op, memory_order, axis)
        count = count_array(result, shape, layout)
        arrays = {}
        for field in self.fields[:1]:
            values = self.read_field(result, "bytes", np.dtype(result["dtype"]), shape, layout)
            arrays[field.name] = values.astype(self.field_dtype(field))
        return Partial(self, count, arrays)


class Counts(_Reductionist):
    op = "count"

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        return {}

    def values(self, partial: Partial, form: ResultForm) -> np.ndarray:
        return narrowest_count(partial.count) if form.lean else partial.count

    def unpack(self, partial: Partial, scale: float, offset: float) -> Partial:
        return partial


class Sums(_Reductionist):
    """``sum``; with weights, the sum of weight * value and the sum of the weights
    (``weight_sum`` on the wire), both over the valid elements (xarray's ``weighted``)."""

    op = "sum"
    takes_weights = True

    def __init__(self, dtype: Any, accumulate: str = "wide", weighted: bool = False,
                 params: Mapping[str, Any] | None = None) -> None:
        super().__init__(dtype, accumulate, weighted, params)
        # Weighted sums are of float64 products whatever is stored.
        self.fields = (Field("sum", float64, _zero, np.add, compresses=True), WSUM) \
            if weighted else (SUM,)

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        if weights is None:
            total = _wide_sum(data, valid, axes, self.field_dtype(SUM))
            return {"sum": total.reshape(count.shape)}
        with np.errstate(invalid="ignore", over="ignore"):
            total = np.add.reduce(weights * data, axis=axes, where=valid)
        return {"sum": total, "wsum": np.add.reduce(weights, axis=axes, where=valid)}

    def values(self, partial: Partial, form: ResultForm) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # Reductionist's native sum wraps
            return partial["sum"].astype(form.dtype) if form.native else partial["sum"]

    def encode(self, partial: Partial, form: ResultForm) -> dict[str, Any]:
        result = super().encode(partial, form)
        if self.weighted:
            result["weight_sum"] = wire_bytes(partial["wsum"], form.layout)
        return result

    def decode(self, result: Mapping[str, Any], memory_order: str, axis: Any) -> Partial:
        partial = super().decode(result, memory_order, axis)
        if self.weighted:
            partial.arrays["wsum"] = self.read_field(
                result, "weight_sum", np.dtype(np.float64), partial.shape,
                result_order(self.op, memory_order, axis))
        return partial

    def unpack(self, partial: Partial, scale: float, offset: float) -> Partial:
        # A sum shifts by the offset times the weights of the valid elements.
        weight = partial["wsum"] if self.weighted else partial.count
        with np.errstate(over="ignore", invalid="ignore"):
            return partial.replace(sum=scale * partial["sum"].astype(np.float64)
                                   + offset * weight)


def _extreme(values: np.ndarray, scale: float, offset: float) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return scale * values.astype(np.float64) + offset


class Minimum(_Reductionist):
    op = "min"
    fields = (MIN,)

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        field = self.fields[0]
        assert field.ufunc is not None
        return {field.name: field.ufunc.reduce(data, axis=axes, initial=field.identity(
            self.dtype), where=valid).astype(self.dtype)}

    def empty_value(self, form: ResultForm) -> Any:
        return limits(np.dtype(form.dtype))[0]

    def unpack(self, partial: Partial, scale: float, offset: float) -> Partial:
        # A negative scale swaps them: where ``x`` had its max, the result has its min.
        (name, values), = partial.arrays.items()
        swapped = {"min": "max", "max": "min"}[name] if scale < 0 else name
        return Partial(self, partial.count, {swapped: _extreme(values, scale, offset)})


class Maximum(Minimum):
    op = "max"
    fields = (MAX,)

    def empty_value(self, form: ResultForm) -> Any:
        return limits(np.dtype(form.dtype))[1]


class Moments(Aggregation):
    """``stats`` (our extension): count, sum, min, max and m2 in one answer (var and std)."""

    op = "stats"
    fields = (SUM, MIN, MAX, M2)

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        total = _wide_sum(data, valid, axes, self.field_dtype(SUM))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count.reshape(total.shape)
        deviation = data.astype(np.float64) - mean
        lo, hi = sentinels(self.dtype)
        return {
            "sum": total.reshape(count.shape),
            "min": np.minimum.reduce(data, axis=axes, initial=lo, where=valid).astype(self.dtype),
            "max": np.maximum.reduce(data, axis=axes, initial=hi, where=valid).astype(self.dtype),
            "m2": np.add.reduce(deviation * deviation, axis=axes, where=valid),
        }

    def merge(self, into: Partial, other: Partial, region: tuple[Any, ...] = ()) -> None:
        n_a, n_b = into.count[region], other.count
        n = n_a + n_b
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = other["sum"] / n_b - into["sum"][region] / n_a
            extra = np.where((n_a > 0) & (n_b > 0), delta * delta * (n_a * (n_b / n)), 0.0)
        into["m2"][region] = into["m2"][region] + other["m2"] + extra
        for field in (SUM, MIN, MAX):
            assert field.ufunc is not None
            target = into[field.name]
            target[region] = field.ufunc(target[region], other[field.name], dtype=target.dtype,
                                         casting="unsafe")
        into.count[region] = n

    def segments(self, sorted_state: Partial, starts: np.ndarray, axis: int) -> Partial:
        """Each run's moments at once: the runs' sums, counts, extremes by ``reduceat``, and
        m2 as the positions' own plus each one's squared distance from its run's mean."""
        count, total = sorted_state.count, sorted_state["sum"]
        n = np.add.reduceat(count, starts, axis=axis)
        sums = np.add.reduceat(total, starts, axis=axis)
        lengths = np.diff(np.r_[starts, count.shape[axis]])
        with np.errstate(invalid="ignore", divide="ignore"):
            run_mean = np.repeat(sums / n, lengths, axis=axis)
            delta = total / count - run_mean
            extra = np.where(count > 0, count * delta * delta, 0.0)
        return Partial(self, n, {
            "sum": sums,
            "min": np.minimum.reduceat(sorted_state["min"], starts, axis=axis),
            "max": np.maximum.reduceat(sorted_state["max"], starts, axis=axis),
            "m2": np.add.reduceat(sorted_state["m2"] + extra, starts, axis=axis)})

    def encode(self, partial: Partial, form: ResultForm) -> dict[str, Any]:
        count = partial.count
        biggest, smallest = limits(np.dtype(form.dtype))
        result = plain_result(count, count, form)
        order = form.layout
        result.update(
            bytes=b"", dtype=form.dtype,
            sum=wire_bytes(partial["sum"], order), sum_dtype=partial["sum"].dtype.name,
            min=empty_filled(partial["min"], count, biggest).tobytes(order=order),
            max=empty_filled(partial["max"], count, smallest).tobytes(order=order),
            m2=wire_bytes(partial["m2"], order),
        )
        if form.lean:
            compress_result(result, ("sum", "min", "max", "m2", "count_packed"))
        return result

    def decode(self, result: Mapping[str, Any], memory_order: str, axis: Any) -> Partial:
        shape = tuple(result["shape"])
        layout = result_order(self.op, memory_order, axis)
        # ``sum_dtype`` says how the server accumulated (wide when absent: older servers).
        sum_dtype = np.dtype(result.get("sum_dtype", accumulator_dtype(self.dtype, "wide").name))
        arrays = {field.name: self.read_field(result, field.name, dtype, shape, layout)
                  for field, dtype in ((SUM, sum_dtype), (MIN, self.dtype), (MAX, self.dtype),
                                       (M2, np.dtype(np.float64)))}
        arrays["sum"] = arrays["sum"].astype(self.field_dtype(SUM))
        return Partial(self, count_array(result, shape, layout), arrays)

    def unpack(self, partial: Partial, scale: float, offset: float) -> Partial:
        lo, hi = (partial["min"], partial["max"]) if scale >= 0 else (partial["max"],
                                                                       partial["min"])
        with np.errstate(over="ignore", invalid="ignore"):
            return partial.replace(
                sum=scale * partial["sum"].astype(np.float64) + offset * partial.count,
                min=_extreme(lo, scale, offset), max=_extreme(hi, scale, offset),
                m2=scale * scale * partial["m2"])


# --- histograms: a state of a fixed shape per cell ---------------------------------------


#: Most bins a histogram request may ask for (its state is this many counts per output cell).
MAX_BINS = 4096


class HistogramParams(BaseModel):
    """``edges``: ascending bin edges, numpy's rule: each bin half-open but the last closed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    edges: list[float] = PydanticField(min_length=2, max_length=MAX_BINS + 1)

    @field_validator("edges")
    @classmethod
    def _ascending(cls, edges: list[float]) -> list[float]:
        if not all(math.isfinite(e) for e in edges) or any(
                b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("bin edges must be finite and strictly ascending")
        return edges


class Bins(Aggregation):
    """``histogram`` (our extension): per output cell, the valid elements in each bin."""

    op = "histogram"
    Params = HistogramParams
    params: HistogramParams

    def __init__(self, dtype: Any, accumulate: str = "wide", weighted: bool = False,
                 params: Mapping[str, Any] | None = None) -> None:
        super().__init__(dtype, accumulate, weighted, params)
        self.edges = np.asarray(self.params.edges, np.float64)
        self.fields = (Field("counts", int64, _zero, np.add,
                             cell_shape=(len(self.edges) - 1,)),)

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        nbins = len(self.edges) - 1
        values = data.astype(np.float64)
        bins = np.searchsorted(self.edges, values, side="right") - 1
        bins[values == self.edges[-1]] = nbins - 1  # the last bin holds its right edge
        inside = np.logical_and(bins >= 0, bins < nbins) & np.broadcast_to(valid, data.shape)
        return {"counts": bin_counts(bins, inside, axes, count.shape, nbins)}


# --- argmax / argmin: the extreme and its first position in the selection ----------------


Position = Annotated[int, PydanticField(ge=0, le=2**63 - 1)]


class Positions(BaseModel):
    """Where a chunk's selection sits in the whole selection, per dimension: the selection's
    ``shape``, which dimensions were selected ``reversed`` (positions count from the other
    end, as numpy's of the selected array) and the ``origin`` of the chunk's selection
    (ascending positions). All empty: positions in the chunk's selection alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: list[Position] = PydanticField(default_factory=list, max_length=64)
    reversed: list[bool] = PydanticField(default_factory=list, max_length=64)
    origin: list[Position] = PydanticField(default_factory=list, max_length=64)

    def fitted(self, data_shape: Sequence[int], axes: tuple[int, ...]
               ) -> tuple[list[int], list[bool], list[int]]:
        """(shape, reversed, origin) for a chunk's selection of ``data_shape`` reduced over
        ``axes``; ValueError where they do not fit it (servers ask before reading)."""
        ndim = len(data_shape)
        shape = self.shape or list(data_shape)
        reversed_ = self.reversed or [False] * ndim
        origin = self.origin or [0] * ndim
        if not len(shape) == len(reversed_) == len(origin) == ndim:
            raise ValueError(f"params shape, reversed and origin need {ndim} dimension(s)")
        for a in axes:
            if data_shape[a] and origin[a] + data_shape[a] > shape[a]:
                raise ValueError(f"params origin {origin[a]} leaves a chunk of {data_shape[a]} "
                                 f"outside a selection of {shape[a]} along axis {a}")
        return shape, reversed_, origin

    def of(self, data_shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
        """The flat position in the whole selection of each element of a chunk's selection of
        ``data_shape``, over the reduced ``axes`` in C order (numpy's ``argmax`` of them)."""
        shape, reversed_, origin = self.fitted(data_shape, axes)
        flat = np.zeros((1,) * len(data_shape), np.int64)
        stride = 1
        for a in sorted(axes, reverse=True):
            along = np.arange(data_shape[a], dtype=np.int64) + origin[a]
            if reversed_[a]:
                along = shape[a] - 1 - along
            flat = flat + (along * stride).reshape(
                [-1 if d == a else 1 for d in range(len(data_shape))])
            stride *= shape[a]
        return np.broadcast_to(flat, data_shape)


#: Where a cell holds no valid element: after every real position.
NO_POSITION = np.iinfo(np.int64).max
POSITION = Field("position", lambda dtype, accumulate: np.dtype(np.int64),
                 lambda dtype: NO_POSITION, None)


class ArgMaximum(Aggregation):
    """``argmax`` (our extension): per output cell, the largest valid value and its first
    position in the selection (numpy's tie rule). NaN beats every number, as numpy's argmax
    finds the first NaN; skipped NaN (skipna) are missing instead."""

    op = "argmax"
    Params = Positions
    params: Positions
    positional = True
    fields = (Field("extreme", stored, lambda dtype: sentinels(dtype)[1], None), POSITION)
    better: ClassVar[np.ufunc] = np.greater
    extreme: ClassVar[np.ufunc] = np.maximum

    def check_fits(self, extents: Sequence[int], axes: tuple[int, ...]) -> None:
        self.params.fitted(extents, axes)

    def chunk(self, data: np.ndarray, valid: Where, axes: tuple[int, ...], count: np.ndarray,
              weights: np.ndarray | None) -> dict[str, np.ndarray]:
        positions = self.params.of(data.shape, axes)
        valid = np.broadcast_to(valid, data.shape)
        nan = np.isnan(data) & valid if data.dtype.kind == "f" else np.zeros(data.shape, bool)
        numbers = valid & ~nan
        best = self.extreme.reduce(data, axis=axes, initial=self.fields[0].identity(self.dtype),
                                   where=numbers, keepdims=True)
        any_nan = np.logical_or.reduce(nan, axis=axes, keepdims=True)
        hits = np.where(any_nan, nan, numbers & (data == best))
        position = np.minimum.reduce(positions, axis=axes, initial=NO_POSITION, where=hits)
        best = np.where(any_nan, np.nan, best) if data.dtype.kind == "f" else best
        return {"extreme": best.reshape(count.shape).astype(self.dtype),
                "position": position}

    def merge(self, into: Partial, other: Partial, region: tuple[Any, ...] = ()) -> None:
        mine, theirs = into["extreme"][region], other["extreme"]
        here, there = into["position"][region], other["position"]
        take = self.beats(theirs, there, mine, here)
        into["extreme"][region] = np.where(take, theirs, mine)
        into["position"][region] = np.where(take, there, here)
        into.count[region] = into.count[region] + other.count

    def beats(self, value: np.ndarray, position: np.ndarray, other: np.ndarray,
              other_position: np.ndarray) -> np.ndarray:
        """Where (``value``, ``position``) wins over the other pair: NaN first, then the
        better value, then on ties the first position."""
        if self.dtype.kind == "f":
            nan, other_nan = np.isnan(value), np.isnan(other)
        else:
            nan = other_nan = np.zeros(np.shape(value), bool)
        tie = (value == other) | (nan & other_nan)
        wins: np.ndarray = (nan & ~other_nan) | (~other_nan & self.better(value, other)) | (
            tie & (position < other_position))
        return wins

    def unpack(self, partial: Partial, scale: float, offset: float) -> Partial:
        # Only the positions are finished; a negative scale asked for the other extreme.
        return partial.replace(extreme=_extreme(partial["extreme"], scale, offset))


class ArgMinimum(ArgMaximum):
    """``argmin``: the smallest valid value and its first position (NaN still wins)."""

    op = "argmin"
    fields = (Field("extreme", stored, lambda dtype: sentinels(dtype)[0], None), POSITION)
    better = np.less
    extreme = np.minimum


#: The operations every storage side serves.
_AGGREGATIONS: tuple[type[Aggregation], ...] = (Counts, Sums, Minimum, Maximum, Moments, Bins,
                                                ArgMaximum, ArgMinimum, *RANK_AGGREGATIONS)
BUILTIN_AGGREGATIONS: dict[str, type[Aggregation]] = {cls.op: cls for cls in _AGGREGATIONS}


def plugin_names() -> list[str]:
    """The reductions installed through entry points (not built in)."""
    return [name for name in reductions.names() if name not in _BUILTIN_REDUCTIONS]


def plugin_operations(names: Collection[str]) -> tuple[str, ...]:
    """The operations of the plugin reductions ``names`` (a server's ``--reductions``), each
    checked to be installed and an aggregation of its own: a plugin is code run on the
    storage side, so a server runs only those its operator names."""
    unknown = sorted(set(names) - set(plugin_names()))
    if unknown:
        raise UnknownReductionError(
            f"no installed plugin reduction {', '.join(map(repr, unknown))}; installed: "
            f"{', '.join(plugin_names()) or 'none'}")
    for name in names:
        aggregation_class(name)
    return tuple(names)


def aggregation_class(op: str) -> type[Aggregation]:
    """The aggregation operation ``op`` names: a built-in, or an installed plugin's (servers
    check the operation is one they serve before they get here)."""
    if op in BUILTIN_AGGREGATIONS:
        return BUILTIN_AGGREGATIONS[op]
    try:
        reduction = reductions.get(op)
    except UnknownReductionError:
        raise InvalidReductionError(
            f"unknown operation {op!r}; operations: "
            f"{', '.join([*BUILTIN_AGGREGATIONS, 'select', *plugin_names()])}") from None
    aggregation: type[Aggregation] | None = getattr(reduction, "aggregation", None)
    if aggregation is None or aggregation.op != op:
        raise InvalidReductionError(f"reduction {op!r} has no aggregation of its own (its "
                                    "aggregation's op must be its name)")
    return aggregation


def aggregation_of(spec: ChunkSpec) -> Aggregation:
    """The aggregation ``spec`` computes, bound to its dtype, accumulation, weights and
    parameters; InvalidReductionError when they do not fit together."""
    cls = aggregation_class(spec.op)
    try:
        return cls(spec.dtype, spec.accumulate, spec.weighted, spec.params)
    except ValueError as exc:
        raise InvalidReductionError(str(exc)) from None


# --- reductions: what a user asks for, finished from a merged state -------------------------


class Reduction(ABC):
    """One reduction; instances hold its options (``ddof``...), validated on construction.

    ``aggregation`` is the state it is finished from, computed where the data is; a plugin
    names its own. Options the storage side needs go in :meth:`params` (the request's).
    """

    name: ClassVar[str]
    aggregation: ClassVar[type[Aggregation]]
    #: "wide" sums in int64/uint64/float64 (exact integers); "float" in float64 (numpy's mean).
    accumulate: ClassVar[str] = "wide"
    #: Whether the reduction of no elements at all is a value (numpy.ma: a sum is 0, a count 0)
    #: rather than masked; over elements that are all missing it is masked either way.
    defined_when_empty: ClassVar[bool] = False
    #: Whether it takes ``weights=`` (and needs them).
    weighted: ClassVar[bool] = False
    #: Whether it reduces one axis or all, never a tuple of them (numpy's argmax).
    one_axis: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"{self.name}() got unexpected option(s) {sorted(options)}")

    def stored_op(self, scale: float) -> str:
        """The operation computing this reduction's state of stored values that unpack with
        ``scale`` (a min of values packed with a negative scale is the max of stored ones)."""
        return self.aggregation.op

    def params(self) -> dict[str, Any] | None:
        """The request parameters of the storage side's aggregation (bins, a threshold)."""
        return None

    def unpacked(self, acc: Partial, decoding: Decoding) -> Partial:
        """The state of the decoded values from ``acc``, of the stored ones (ValueError where
        the aggregation cannot unpack packed values)."""
        return decoding.unpack(acc)

    @abstractmethod
    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype numpy gives this reduction of an array of ``dtype``."""

    @abstractmethod
    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        """(values, mask) from the combined partials; masked elements have no valid data."""


def _numpy_dtype(func: Any, dtype: np.dtype) -> np.dtype:
    result: np.dtype = func(np.zeros(1, dtype.newbyteorder("="))).dtype
    return result


@reductions.register("sum")
class Sum(Reduction):
    name = "sum"
    aggregation = Sums
    defined_when_empty = True

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return _numpy_dtype(np.sum, dtype)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        return acc["sum"], acc.count == 0


class _Opposed(Reduction):
    """A reduction of an extreme: of values packed with a negative scale, the opposite
    extreme's state of the stored values (a min is where the stored max is)."""

    _swapped: ClassVar[type[Aggregation]]

    def stored_op(self, scale: float) -> str:
        return (self._swapped if scale < 0 else self.aggregation).op


@reductions.register("min")
class Min(_Opposed):
    name = "min"
    aggregation = Minimum
    _swapped: ClassVar[type[Aggregation]] = Maximum

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype.newbyteorder("=")

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        return acc[self.name], acc.count == 0  # the field named like the reduction


@reductions.register("max")
class Max(Min):
    name = "max"
    aggregation = Maximum
    _swapped = Minimum


@reductions.register("count")
class Count(Reduction):
    name = "count"
    aggregation = Counts
    defined_when_empty = True

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.intp)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        return acc.count, np.zeros(acc.count.shape, bool)


@reductions.register("mean")
class Mean(Reduction):
    name = "mean"
    aggregation = Sums
    accumulate = "float"

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return _numpy_dtype(np.mean, dtype)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return acc["sum"] / acc.count, acc.count == 0


@reductions.register("var")
class Var(Reduction):
    name = "var"
    aggregation = Moments
    accumulate = "float"

    def __init__(self, ddof: int = 0, **options: Any) -> None:
        super().__init__(**options)
        if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
            raise ValueError(f"ddof must be a non-negative integer, got {ddof!r}")
        self.ddof = int(ddof)

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return _numpy_dtype(np.var, dtype)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        dof = acc.count - self.ddof
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.maximum(acc["m2"], 0.0) / dof, dof <= 0


@reductions.register("std")
class Std(Var):
    name = "std"

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        variance, mask = super().finish(acc)
        return np.sqrt(variance), mask


@reductions.register("weighted_sum")
class WeightedSum(Reduction):
    """xarray's ``weighted(w).sum()``: the sum of weight * value over valid elements (0 if none)."""

    name = "weighted_sum"
    aggregation = Sums
    accumulate = "float"
    defined_when_empty = True
    weighted = True

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.float64)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        return acc["sum"], np.zeros(acc["sum"].shape, bool)


@reductions.register("weighted_mean")
class WeightedMean(WeightedSum):
    """xarray's ``weighted(w).mean()``: masked where the valid elements' weights sum to 0."""

    name = "weighted_mean"
    defined_when_empty = False

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return acc["sum"] / acc["wsum"], acc["wsum"] == 0


@reductions.register("histogram")
class Histogram(Reduction):
    """numpy's ``histogram`` per output cell, of the valid elements: ``bins`` are the edges
    (ascending); the result has one more dimension, the bins, last."""

    name = "histogram"
    aggregation = Bins
    defined_when_empty = True

    def __init__(self, bins: Any = None, **options: Any) -> None:
        super().__init__(**options)
        edges = np.asarray(bins, np.float64) if bins is not None else None
        if edges is None or edges.ndim != 1:
            raise ValueError("histogram needs bins: the bin edges, ascending")
        self.edges = HistogramParams(edges=edges.tolist()).edges

    def params(self) -> dict[str, Any]:
        return {"edges": self.edges}

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.intp)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        return acc["counts"], np.zeros(acc["counts"].shape, bool)

    def of_packed(self, dtype: np.dtype, decode: Decoder, decreasing: bool) -> Histogram:
        """This histogram of values packed as integer ``dtype`` and decoded by ``decode``
        (monotone; ``decreasing`` where it reverses the order): counted storage-side in bins of
        stored values holding exactly the elements of each decoded bin."""
        return PackedHistogram(self.edges, PackedBins.of(self.edges, dtype, decode, decreasing))


class PackedHistogram(Histogram):
    """numpy's ``histogram`` of packed values (``scale_factor``/``add_offset``), bins ``edges``
    of the decoded values, counted in the stored values' ``bins``
    (:class:`~.conditions.PackedBins`) and put back in the decoded bins at the end: its
    counts need no unpacking."""

    def unpacked(self, acc: Partial, decoding: Decoding) -> Partial:
        return acc

    def __init__(self, edges: Sequence[float], bins: PackedBins) -> None:
        super().__init__(bins=bins.edges)
        self.bins, self.nbins = bins, len(edges) - 1

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        counts = self.bins.decoded_counts(acc["counts"], self.nbins)
        return counts, np.zeros(counts.shape, bool)


@reductions.register("quantile")
class Quantile(Reduction):
    """numpy's ``nanquantile(method="linear")`` of the valid values: ``q`` a number or a
    sequence (then the quantiles are a first dimension). ``method="exact"`` finds the two
    order statistics each quantile interpolates in a few rounds of storage-side reductions
    (:mod:`activezarr.client.quantiles`); its first round is ``key_range``.
    ``method="approximate"`` takes one round (``key_sketch``, of ``sketch_size`` keys a level)
    and answers a stored value whose rank among a cell's ``n`` valid values is within
    ``1 + n * ceil(log2(N / sketch_size)) / sketch_size`` of numpy's ``q * (n - 1)`` (``N`` the
    selected positions per cell; exact where ``N <= sketch_size``), not interpolated."""

    name = "quantile"
    aggregation = KeyRange

    def __init__(self, q: Any = None, method: str = "exact", sketch_size: int = 512,
                 **options: Any) -> None:
        super().__init__(**options)
        if q is None:
            raise ValueError("quantile needs q: a number or a sequence of numbers in [0, 1]")
        qs = np.asarray(q, np.float64)
        if qs.ndim > 1 or not np.all((qs >= 0) & (qs <= 1)):
            raise ValueError(f"q must be a number or a sequence of numbers in [0, 1], got {q!r}")
        if method not in ("exact", "approximate"):
            raise ValueError(f"quantile method {method!r} is not available; use 'exact' or "
                             "'approximate'")
        if isinstance(sketch_size, bool) or not isinstance(sketch_size, (int, np.integer)) \
                or not 2 <= sketch_size <= MAX_SKETCH:
            raise ValueError(f"sketch_size must be an integer from 2 to {MAX_SKETCH}, got "
                             f"{sketch_size!r}")
        #: ``approximate``: the keys a sketch keeps per level (``key_sketch``'s ``k``).
        self.sketch_size = int(sketch_size)
        self.q = qs
        #: numpy computes a Python float's quantile in the values' dtype, an array's in float64.
        self.weak = type(q) in (int, float)
        #: Integer q (0 or 1): numpy takes the order statistic itself, in the values' dtype.
        self.integral = np.asarray(q).dtype.kind in "iu"
        self.method = method

    def between(self, a: np.ndarray, b: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        """The quantile from the values ``a`` and ``b`` at the ranks around it."""
        return a if self.integral else lerp(a, b, gamma, self.weak)

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        if self.integral or (self.weak and dtype.kind == "f"):
            return dtype.newbyteorder("=")
        return np.dtype(np.float64)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        raise TypeError("a quantile is finished from its rounds, not from one state")


@reductions.register("median")
class Median(Quantile):
    """numpy's ``nanmedian``: the 0.5 quantile."""

    name = "median"

    def __init__(self, method: str = "exact", sketch_size: int = 512, **options: Any) -> None:
        super().__init__(0.5, method, sketch_size, **options)

    def between(self, a: np.ndarray, b: np.ndarray, gamma: np.ndarray) -> np.ndarray:
        # numpy's median: the middle value, or the mean of the middle two
        return np.where(gamma == 0, a, np.mean(np.stack([a, b]), axis=0))


@reductions.register("argmax")
class ArgMax(_Opposed):
    """numpy's ``argmax``: the first position of the largest valid value along one axis (or
    in the flattened selection), masked where a cell has no valid value (numpy.ma gives 0)."""

    name = "argmax"
    aggregation = ArgMaximum
    one_axis = True
    _swapped: ClassVar[type[Aggregation]] = ArgMinimum

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.intp)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        return acc["position"], acc.count == 0


@reductions.register("argmin")
class ArgMin(ArgMax):
    name = "argmin"
    aggregation = ArgMinimum
    _swapped = ArgMaximum


_BUILTIN_REDUCTIONS = frozenset(reductions.builtin_names())


def get_reduction(name: str, **options: Any) -> Reduction:
    """An instance of the reduction registered as ``name``, with its options."""
    if not isinstance(name, str):
        raise TypeError(f"a reduction is named by a string, got {name!r}")
    return reductions.get(name)(**options)

"""The one encoding of a partial: PROTOCOL.md's response map.

A storage side answers a chunk with this map (CBOR on the wire; ``ChunkReduction.decode``
returns it too) and the client reads its :class:`Partial` back from it. For ``count``, ``sum``,
``min``, ``max`` and ``select`` it is Reductionist's; ``stats``, the weights and groups fields
and the ``lean`` forms (packed counts, zstd) are our extensions.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numcodecs
import numpy as np

from .partial import Partial, accumulator_dtype
from .spec import ChunkSpec, PartialField

#: The partial fields each operation computes.
OP_FIELDS: dict[str, tuple[PartialField, ...]] = {
    "count": ("count",), "select": ("count",), "sum": ("count", "sum"),
    "min": ("count", "min"), "max": ("count", "max"), "stats": ("count", "sum", "min", "max", "m2"),
}
Layout = Literal["C", "F"]
BYTE_ORDER = sys.byteorder
ENDIAN: dict[str, Literal["<", ">"]] = {"little": "<", "big": ">"}
#: The fields of a result that hold arrays, what ``lean`` may compress, and from what size.
_ARRAY_FIELDS = ("bytes", "sum", "min", "max", "m2", "count_packed")
COMPRESS_FROM = 4096
_ZSTD = numcodecs.Zstd(level=1)


def op_fields(op: str, weighted: bool = False) -> tuple[PartialField, ...]:
    """The partial fields ``op`` computes; a weighted sum adds the sum of the weights."""
    return (*OP_FIELDS[op], "wsum") if weighted else OP_FIELDS[op]


def result_order(op: str, order: Layout, axis: int | Sequence[int] | None) -> Layout:
    """The order of a result's bytes and counts, as Reductionist lays them out: a reduction over
    no axis (``axis: []``) and ``select`` keep the request's order; everything else is C."""
    if op == "select" or (op != "count" and axis is not None and not isinstance(axis, int)
                          and len(axis) == 0):
        return order
    return "C"


@dataclass(frozen=True, slots=True)
class ResultForm:
    """How a partial is written as a response map, beyond the partial itself; built by
    :func:`result_form`, which checks it."""

    op: str
    #: The element dtype's name, without byte order (Reductionist's ``dtype``).
    dtype: str
    #: The order of the result's bytes and counts (:func:`result_order`).
    layout: Layout = "C"
    #: Sums narrowed to ``dtype`` (Reductionist's plain ``sum``, which wraps).
    native: bool = False
    #: Counts packed and arrays compressed where that pays (the ``lean`` extension).
    lean: bool = False
    shape_as_bytes: bool = False
    count_as_bytes: bool = False
    #: The labels of the groups present, ascending (the ``groups`` extension).
    groups: tuple[int, ...] | None = None


def result_form(op: str, dtype: Any, order: Any, axis: int | Sequence[int] | None, *,
                accumulate: str = "wide", lean: bool = False, shape_as_bytes: bool = False,
                count_as_bytes: bool = False, labels: Sequence[int] | np.ndarray | None = None
                ) -> ResultForm:
    """The form of the answer to ``op`` over ``axis`` of chunks stored in ``order``, asked with
    these options (a request's, or a ``ChunkReduction``'s: one derivation for both)."""
    if op not in OP_FIELDS:
        raise ValueError(f"unknown operation {op!r}; operations: {', '.join(OP_FIELDS)}")
    present = None
    if labels is not None:
        unique = np.unique(np.asarray(labels, np.int64))
        present = tuple(unique[unique >= 0].tolist())
    return ResultForm(op=op, dtype=np.dtype(dtype).name,
                      layout=result_order(op, order if order in ("C", "F") else "C", axis),
                      native=accumulate == "native",
                      lean=lean and op != "select",  # a select has no lean form
                      shape_as_bytes=shape_as_bytes, count_as_bytes=count_as_bytes,
                      groups=present)


def _native(array: np.ndarray) -> np.ndarray:
    return np.asarray(array).astype(array.dtype.newbyteorder("="), copy=False)


def _limits(dtype: np.dtype) -> tuple[Any, Any]:
    """Reductionist's empty min and max: the dtype's own max and min (finite, also for floats)."""
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    return info.max, info.min


def narrowest_count(count: np.ndarray) -> np.ndarray:
    """``count`` in the narrowest unsigned dtype that holds its largest value."""
    top = int(count.max()) if count.size else 0
    for dtype in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dtype).max:
            return count.astype(dtype)
    return count.astype(np.uint64)


def lean_count(count: np.ndarray, order: Layout) -> dict[str, Any]:
    """The ``lean`` form of a result's counts: one number when every count is the same (as
    where nothing can be missing), else the counts' bytes in the narrowest unsigned dtype."""
    if count.size and (count == count.flat[0]).all():
        return {"count": [], "count_constant": int(count.flat[0])}
    packed = narrowest_count(count)
    return {"count": [], "count_dtype": packed.dtype.name,
            "count_packed": packed.tobytes(order=order)}


def _result(values: np.ndarray, count: np.ndarray, form: ResultForm) -> dict[str, Any]:
    order, lean = form.layout, form.lean
    count = np.asarray(count, np.int64)
    values = _native(values)
    return {
        "bytes": values.tobytes(order=order),
        "dtype": values.dtype.name,
        "shape": list(values.shape),
        "count": count.reshape(-1, order=order).tolist() if not lean else [],
        **(lean_count(count, order) if lean else {}),
        "byte_order": BYTE_ORDER,
        "shape_as_bytes": (np.asarray(values.shape, np.int64).tobytes()
                           if form.shape_as_bytes else b""),
        "count_as_bytes": count.tobytes(order=order) if form.count_as_bytes else b"",
    }


def _empty_filled(values: np.ndarray, count: np.ndarray, fill: Any) -> np.ndarray:
    out = _native(values).copy()
    out[count == 0] = fill
    return out


def encode_result(partial: Partial, form: ResultForm) -> dict[str, Any]:
    """The response map of ``partial``, with Reductionist's dtypes and empty results; ``lean``
    packs the counts (:func:`lean_count`), and those of ``count`` in its ``bytes`` too, and
    compresses the arrays where that pays (:func:`compress_result`); then what the weights and
    groups extensions add."""
    if form.op == "select":
        raise ValueError("select answers with the selected elements (select_result), not a "
                         "partial")
    result = _reduction_result(partial, form)
    if form.lean:
        compress_result(result)
    if partial.wsum is not None:  # the valid elements' sum of weights
        result["weight_sum"] = _native(partial.wsum).tobytes(order=form.layout)
    if form.groups is not None:  # the result's grouped axis
        result["groups"] = list(form.groups)
    return result


def select_result(data: np.ndarray, count: int, form: ResultForm) -> dict[str, Any]:
    """The response map of ``select``: the elements in the request's order, missing ones kept."""
    return _result(data, np.asarray([count]), form)


def compress_result(result: dict[str, Any]) -> dict[str, Any]:
    """Zstd (level 1) on each array of ``result`` that shrinks by at least a tenth; ``zstd``
    lists those fields. Float64 sums of float32 data end in zero bits: they halve."""
    packed = []
    for name in _ARRAY_FIELDS:
        data = result.get(name)
        if isinstance(data, bytes) and len(data) >= COMPRESS_FROM:
            small = bytes(_ZSTD.encode(data))
            if len(small) <= 0.9 * len(data):
                result[name] = small
                packed.append(name)
    if packed:
        result["zstd"] = packed
    return result


def _reduction_result(partial: Partial, form: ResultForm) -> dict[str, Any]:
    op, dtype = form.op, np.dtype(form.dtype)
    count = partial.count
    biggest, smallest = _limits(dtype)
    if op == "count":
        return _result(narrowest_count(count) if form.lean else count, count, form)
    if op == "sum":
        assert partial.sum is not None  # the kernel computed what OP_FIELDS[op] names
        with np.errstate(over="ignore", invalid="ignore"):
            values = partial.sum.astype(dtype) if form.native else partial.sum  # native wraps
        return _result(values, count, form)
    if op in ("min", "max"):
        fill = biggest if op == "min" else smallest
        return _result(_empty_filled(getattr(partial, op), count, fill), count, form)
    assert partial.sum is not None and partial.min is not None and partial.max is not None
    assert partial.m2 is not None
    result = _result(count, count, form)
    order = form.layout
    result.update(
        bytes=b"", dtype=dtype.name,
        sum=_native(partial.sum).tobytes(order=order), sum_dtype=partial.sum.dtype.name,
        min=_empty_filled(partial.min, count, biggest).tobytes(order=order),
        max=_empty_filled(partial.max, count, smallest).tobytes(order=order),
        m2=_native(partial.m2).tobytes(order=order),
    )
    return result


# --- reading a map back --------------------------------------------------------------------


def _field(result: Mapping[str, Any], name: str, nbytes: int) -> bytes:
    """The bytes of array field ``name`` (``nbytes`` long), decompressed where ``zstd`` says."""
    data = result[name]
    if name in result.get("zstd", ()):
        data = bytes(_ZSTD.decode(data))
    if len(data) != nbytes:
        raise ValueError(f"the server's {name!r} has {len(data)} bytes, expected {nbytes}")
    return bytes(data)


def _array(data: bytes, name: str, byte_order: str, shape: tuple[int, ...],
           order: Layout) -> np.ndarray:
    dtype = np.dtype(name).newbyteorder(ENDIAN[byte_order])
    return np.frombuffer(data, dtype).reshape(shape, order=order).astype(dtype.newbyteorder("="))


def _counts(result: Mapping[str, Any], shape: tuple[int, ...], layout: Layout) -> np.ndarray:
    """A result's counts as int64 of ``shape``, from the list or the ``lean`` forms."""
    if "count_constant" in result:
        return np.full(shape, int(result["count_constant"]), np.int64)
    if "count_packed" in result:
        dtype = np.dtype(result["count_dtype"])
        packed = np.frombuffer(_field(result, "count_packed", math.prod(shape) * dtype.itemsize),
                               dtype)
        return packed.astype(np.int64).reshape(shape, order=layout)
    return np.asarray(result["count"], np.int64).reshape(shape, order=layout)


def partial_from_result(op: str, result: Mapping[str, Any], spec: ChunkSpec) -> Partial:
    """The :class:`Partial` of ``spec.fields`` that a response map stands for."""
    shape = tuple(result["shape"])
    # The request said the chunk's order as C or F (a transpose never reaches a server else).
    layout = result_order(op, spec.memory_order or "C", spec.axis)
    count = _counts(result, shape, layout)
    order = result["byte_order"]
    dtype = np.dtype(spec.dtype)
    partial = Partial(count)
    if op == "stats":
        fields = {name: name for name in ("sum", "min", "max", "m2")}
        # ``sum_dtype`` says how the server accumulated (wide when absent: older servers).
        sum_dtype = result.get("sum_dtype", accumulator_dtype(dtype, "wide").name)
        dtypes = {"sum": sum_dtype, "min": dtype.name,
                  "max": dtype.name, "m2": "float64"}
    else:
        fields, dtypes = {op: "bytes"}, {op: result["dtype"]}
    if spec.weighted:
        fields["wsum"], dtypes["wsum"] = "weight_sum", "float64"
    for name in spec.fields:
        if name == "count":
            continue
        nbytes = math.prod(shape) * np.dtype(dtypes[name]).itemsize
        array = _array(_field(result, fields[name], nbytes), dtypes[name], order, shape,
                       layout)
        if name == "sum":
            array = array.astype(accumulator_dtype(dtype, spec.accumulate))
        setattr(partial, name, array)
    return partial

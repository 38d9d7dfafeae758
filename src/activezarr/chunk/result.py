"""The response map's common parts (PROTOCOL.md): counts, byte order, layout, ``lean``.

A storage side answers a chunk with a map (CBOR on the wire; ``ChunkReduction.decode`` returns
it too) and the client reads the state back from it. What the map holds beyond the counts is
each aggregation's (:meth:`activezarr.chunk.aggregation.Aggregation.encode`); for ``count``,
``sum``, ``min``, ``max`` and ``select`` it is Reductionist's; ``stats``, the weights and groups
fields and the ``lean`` forms (packed counts, zstd) are our extensions.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numcodecs
import numpy as np

if TYPE_CHECKING:
    from .partial import Partial

Layout = Literal["C", "F"]
BYTE_ORDER = sys.byteorder
ENDIAN: dict[str, Literal["<", ">"]] = {"little": "<", "big": ">"}
COMPRESS_FROM = 4096
_ZSTD = numcodecs.Zstd(level=1)


def result_order(op: str, order: Any, axis: int | Sequence[int] | None) -> Layout:
    """The order of a result's bytes and counts, as Reductionist lays them out: a reduction over
    no axis (``axis: []``) and ``select`` keep the request's order; everything else is C."""
    if op == "select" or (op != "count" and axis is not None and not isinstance(axis, int)
                          and len(axis) == 0):
        return "F" if order == "F" else "C"
    return "C"


@dataclass(frozen=True, slots=True)
class ResultForm:
    """How a partial is written as a response map, beyond the partial itself; built by
    :func:`result_form`."""

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
    present = None if labels is None else tuple(group_keys(labels).tolist())
    return ResultForm(op=op, dtype=np.dtype(dtype).name,
                      layout=result_order(op, order, axis),
                      native=accumulate == "native",
                      lean=lean and op != "select",  # a select has no lean form
                      shape_as_bytes=shape_as_bytes, count_as_bytes=count_as_bytes,
                      groups=present)


def group_keys(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """The groups present in ``labels``, ascending, without -1 (in no group): the groups a
    grouped partial holds, in its order. Sorted, not hashed (numpy's hashed ``unique`` takes
    tens of milliseconds for 20k labels)."""
    ranked = np.sort(np.asarray(labels, np.int64), kind="stable")
    ranked = ranked[int(np.searchsorted(ranked, 0)):]
    return ranked[np.r_[True, ranked[1:] != ranked[:-1]]] if ranked.size else ranked


def native(array: np.ndarray) -> np.ndarray:
    """``array`` in the machine's byte order."""
    return np.asarray(array).astype(array.dtype.newbyteorder("="), copy=False)


def wire_bytes(array: np.ndarray, layout: Layout) -> bytes:
    """An array's bytes as a response map holds them: native byte order, the result's layout."""
    return native(array).tobytes(order=layout)


def limits(dtype: np.dtype) -> tuple[Any, Any]:
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


def plain_result(values: np.ndarray, count: np.ndarray, form: ResultForm) -> dict[str, Any]:
    """Reductionist's response map of ``values`` (its ``bytes``) and ``count``, with the
    options of ``form``."""
    order, lean = form.layout, form.lean
    count = np.asarray(count, np.int64)
    values = native(values)
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


def empty_filled(values: np.ndarray, count: np.ndarray, fill: Any) -> np.ndarray:
    """``values`` with ``fill`` where no element counted (Reductionist's empty min and max)."""
    out = native(values).copy()
    out[count == 0] = fill
    return out


def encode_result(partial: Partial, form: ResultForm) -> dict[str, Any]:
    """The response map of ``partial``: its aggregation's, then the ``groups`` extension's."""
    if form.op == "select":
        raise ValueError("select answers with the selected elements (select_result), not a "
                         "partial")
    result = partial.aggregation.encode(partial, form)
    if form.groups is not None:  # the result's grouped axis
        result["groups"] = list(form.groups)
    return result


def select_result(data: np.ndarray, count: int, form: ResultForm) -> dict[str, Any]:
    """The response map of ``select``: the elements in the request's order, missing ones kept."""
    return plain_result(data, np.asarray([count]), form)


def compress_result(result: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Zstd (level 1) on each array ``names`` of ``result`` that shrinks by at least a tenth;
    ``zstd`` lists those fields. Float64 sums of float32 data end in zero bits: they halve."""
    packed = []
    for name in names:
        data = result.get(name)
        if isinstance(data, bytes) and len(data) >= COMPRESS_FROM:
            small = bytes(_ZSTD.encode(data))
            if len(small) <= 0.9 * len(data):
                result[name] = small
                packed.append(name)
    if packed:
        result["zstd"] = packed
    return result


# --- reading a map back --------------------------------------------------------------------


def field_bytes(result: Mapping[str, Any], name: str, nbytes: int) -> bytes:
    """The bytes of array field ``name`` (``nbytes`` long), decompressed where ``zstd`` says."""
    data = result[name]
    if name in result.get("zstd", ()):
        data = bytes(_ZSTD.decode(data))
    if len(data) != nbytes:
        raise ValueError(f"the server's {name!r} has {len(data)} bytes, expected {nbytes}")
    return bytes(data)


def read_array(data: bytes, name: str, byte_order: str, shape: tuple[int, ...],
               order: Layout) -> np.ndarray:
    """An array of dtype ``name`` and ``shape`` from a response map's bytes."""
    dtype = np.dtype(name).newbyteorder(ENDIAN[byte_order])
    return np.frombuffer(data, dtype).reshape(shape, order=order).astype(dtype.newbyteorder("="))


def count_array(result: Mapping[str, Any], shape: tuple[int, ...], layout: Layout
                ) -> np.ndarray:
    """A result's counts as int64 of ``shape``, from the list or the ``lean`` forms."""
    if "count_constant" in result:
        return np.full(shape, int(result["count_constant"]), np.int64)
    if "count_packed" in result:
        dtype = np.dtype(result["count_dtype"])
        packed = np.frombuffer(field_bytes(result, "count_packed",
                                           math.prod(shape) * dtype.itemsize), dtype)
        return packed.astype(np.int64).reshape(shape, order=layout)
    return np.asarray(result["count"], np.int64).reshape(shape, order=layout)

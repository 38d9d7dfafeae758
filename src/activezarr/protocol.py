"""The active-storage wire protocol (PROTOCOL.md): request model, results, and their mapping
onto the core's :class:`~activezarr.wire.ChunkSpec` and :class:`~activezarr.partial.Partial`.

Both ends use this module: the server parses requests and encodes results here, the client
builds requests and decodes results here. It knows nothing about HTTP or I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from .partial import Partial, accumulator_dtype
from .wire import ChunkSpec, MissingSpec, Selection, check_selection

V2_OPS = ("count", "max", "min", "sum", "select")
OPS = (*V2_OPS, "stats")
V2_DTYPES = ("int32", "int64", "uint32", "uint64", "float32", "float64")
DTYPES = (*V2_DTYPES, "int8", "int16", "uint8", "uint16", "float16")
INTERFACE_TYPES = ("s3", "http", "https", "file", "ost")
#: What our server adds to Reductionist v2; a client sends extensions only to servers listing them.
EXTENSIONS = ("stats", "batch", "codecs", "accumulate", "accumulate-float", "missing-combined",
              "dtypes", "file", "healthz")
BYTE_ORDER = sys.byteorder

#: The partial fields each operation computes.
OP_FIELDS: dict[str, tuple[str, ...]] = {
    "count": ("count",), "select": ("count",), "sum": ("count", "sum"),
    "min": ("count", "min"), "max": ("count", "max"), "stats": ("count", "sum", "min", "max", "m2"),
}
_ENDIAN = {"little": "<", "big": ">"}
_ENDIAN_NAME = {"<": "little", ">": "big", "=": BYTE_ORDER}
Number = StrictInt | float


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Compression(_Strict):
    id: Literal["gzip", "zlib", "blosc2"]


class Filter(_Strict):
    id: Literal["shuffle"]
    element_size: StrictInt = Field(gt=0)


class Missing(_Strict):
    """Reductionist's one-rule form; combining values with a range is our extension."""

    missing_value: Number | None = None
    missing_values: list[Number] | None = None
    valid_min: Number | None = None
    valid_max: Number | None = None
    valid_range: tuple[Number, Number] | None = None

    @model_validator(mode="after")
    def _one_rule_of_each_kind(self) -> Missing:
        given = [k for k, v in self if v is not None]
        if not given:
            raise ValueError("missing needs one of missing_value, missing_values, valid_min, "
                             "valid_max, valid_range")
        if self.missing_value is not None and self.missing_values is not None:
            raise ValueError("give missing_value or missing_values, not both")
        if self.valid_range is not None and (self.valid_min, self.valid_max) != (None, None):
            raise ValueError("give valid_range or valid_min/valid_max, not both")
        if self.valid_range is not None and self.valid_range[0] > self.valid_range[1]:
            raise ValueError(f"valid_range {list(self.valid_range)} is not [low, high]")
        return self

    def to_spec(self) -> MissingSpec:
        values = [self.missing_value] if self.missing_value is not None else self.missing_values
        low, high = self.valid_range or (self.valid_min, self.valid_max)
        return MissingSpec(values=tuple(values or ()), valid_min=low, valid_max=high)

    @classmethod
    def from_spec(cls, spec: MissingSpec) -> Missing | None:
        if spec.is_empty:
            return None
        fields: dict[str, Any] = {}
        if len(spec.values) == 1:
            fields["missing_value"] = spec.values[0]
        elif spec.values:
            fields["missing_values"] = list(spec.values)
        low, high = spec.valid_min, spec.valid_max
        if low is not None and high is not None and low <= high:
            fields["valid_range"] = (low, high)
        else:  # one bound, or crossed bounds (``_Unsigned`` can cross them): each on its own
            fields.update({k: v for k, v in (("valid_min", low), ("valid_max", high))
                           if v is not None})
        return cls(**fields)

    @property
    def combined(self) -> bool:
        """Whether this needs the ``missing-combined`` extension (more than one v2 rule)."""
        return sum(v is not None for _, v in self) > 1


class ChunkRequest(_Strict):
    """One chunk to reduce: the JSON body of ``POST /v2/{op}``."""

    interface_type: Literal[INTERFACE_TYPES]  # type: ignore[valid-type]
    url: str = Field(min_length=1)
    dtype: Literal[DTYPES]  # type: ignore[valid-type]
    byte_order: Literal["little", "big"] | None = None
    offset: StrictInt | None = Field(None, ge=0)
    size: StrictInt | None = Field(None, ge=0)
    shape: list[StrictInt] | None = None
    order: Literal["C", "F"] = "C"
    selection: list[list[StrictInt]] | None = None
    axis: StrictInt | list[StrictInt] | None = None
    compression: Compression | None = None
    filters: list[Filter] | None = None
    missing: Missing | None = None
    codecs: list[dict[str, Any]] | None = None
    accumulate: Literal["native", "wide", "float"] = "native"
    option_disable_chunk_cache: StrictBool | None = None
    option_shape_as_bytes: StrictBool | None = None
    option_count_as_bytes: StrictBool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ChunkRequest:
        if self.codecs is not None and (self.compression or self.filters):
            raise ValueError("codecs is exclusive with compression and filters")
        if self.shape is not None and any(n < 0 for n in self.shape):
            raise ValueError(f"shape {self.shape} has a negative extent")
        return self

    @property
    def stored_dtype(self) -> np.dtype:
        """The element dtype with the request's byte order (native when absent)."""
        return np.dtype(self.dtype).newbyteorder(_ENDIAN.get(self.byte_order or "", "="))

    def codec_configs(self) -> tuple[dict[str, Any], ...]:
        """The decode chain as numcodecs configs in encode order (filters, then compression)."""
        if self.codecs is not None:
            return tuple(self.codecs)
        chain = [{"id": "shuffle", "elementsize": f.element_size} for f in self.filters or ()]
        if self.compression is not None:
            chain.append({"id": self.compression.id})
        return tuple(chain)

    def chunk_spec(self, op: str, shape: Sequence[int], codecs: Sequence[dict[str, Any]]
                   ) -> ChunkSpec:
        """The kernel's spec for ``op`` on a chunk of ``shape``.

        Sums accumulate in float64 under ``accumulate: float`` (numpy's mean and var of
        integers), else wide; ``native`` narrows them in the result.
        """
        accumulate = "float" if self.accumulate == "float" else "wide"
        return ChunkSpec(dtype=self.stored_dtype.str, shape=tuple(shape), order=self.order,
                         codecs=tuple(codecs),
                         missing=self.missing.to_spec() if self.missing else MissingSpec(),
                         axis=self._axes(len(shape)), fields=OP_FIELDS[op],
                         accumulate=accumulate)

    def chunk_selection(self, shape: Sequence[int]) -> Selection:
        if self.selection is None:
            return tuple((0, n, 1) for n in shape)
        return check_selection(self.selection, len(shape))

    def _axes(self, ndim: int) -> tuple[int, ...] | None:
        if self.axis is None:
            return None
        axes = [self.axis] if isinstance(self.axis, int) else self.axis
        return tuple(a + ndim if a < 0 else a for a in axes)


class BatchItem(ChunkRequest):
    op: Literal[OPS]  # type: ignore[valid-type]


class BatchRequest(_Strict):
    """``POST /v2/batch``; items stay raw so that one bad item fails alone."""

    requests: list[dict[str, Any]]


# --- results -------------------------------------------------------------------------------


def _native(array: np.ndarray) -> np.ndarray:
    return np.asarray(array).astype(array.dtype.newbyteorder("="), copy=False)


def _limits(dtype: np.dtype) -> tuple[Any, Any]:
    """Reductionist's empty min and max: the dtype's own max and min (finite, also for floats)."""
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    return info.max, info.min


def _result(values: np.ndarray, count: np.ndarray, request: ChunkRequest,
            order: str = "C") -> dict[str, Any]:
    count = np.asarray(count, np.int64)
    values = _native(values)
    return {
        "bytes": values.tobytes(order=order),
        "dtype": values.dtype.name,
        "shape": list(values.shape),
        "count": count.reshape(-1).tolist(),
        "byte_order": BYTE_ORDER,
        "shape_as_bytes": (np.asarray(values.shape, np.int64).tobytes()
                           if request.option_shape_as_bytes else b""),
        "count_as_bytes": count.tobytes() if request.option_count_as_bytes else b"",
    }


def _empty_filled(values: np.ndarray, count: np.ndarray, fill: Any) -> np.ndarray:
    out = _native(values).copy()
    out[count == 0] = fill
    return out


def reduction_result(op: str, request: ChunkRequest, partial: Partial) -> dict[str, Any]:
    """The response map of a reduction, with Reductionist's dtypes and empty results."""
    dtype = np.dtype(request.dtype)
    count = partial.count
    biggest, smallest = _limits(dtype)
    if op == "count":
        return _result(count, count, request)
    if op == "sum":
        native = request.accumulate == "native"
        with np.errstate(over="ignore", invalid="ignore"):
            values = partial.sum.astype(dtype) if native else partial.sum  # native sums wrap
        return _result(values, count, request)
    if op in ("min", "max"):
        fill = biggest if op == "min" else smallest
        return _result(_empty_filled(getattr(partial, op), count, fill), count, request)
    result = _result(count, count, request)
    result.update(
        bytes=b"", dtype=dtype.name,
        sum=_native(partial.sum).tobytes(), sum_dtype=partial.sum.dtype.name,
        min=_empty_filled(partial.min, count, biggest).tobytes(),
        max=_empty_filled(partial.max, count, smallest).tobytes(),
        m2=_native(partial.m2).tobytes(),
    )
    return result


def select_result(request: ChunkRequest, data: np.ndarray, count: int) -> dict[str, Any]:
    """The response map of ``select``: the elements in the request's order, missing ones kept."""
    return _result(data, np.asarray([count]), request, order=request.order)


def error_body(exc: BaseException) -> dict[str, Any]:
    """PROTOCOL.md's JSON error: the message, then the messages of its causes."""
    causes = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(causes) < 8:
        causes.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return {"error": {"message": str(exc), "caused_by": causes}}


# --- the client's side ---------------------------------------------------------------------


def choose_op(fields: Sequence[str], extensions: Sequence[str]) -> str | None:
    """The one operation that yields ``fields``, or None when the server cannot."""
    values = [f for f in fields if f != "count"]
    if not values:
        return "count"
    if len(values) == 1 and values[0] != "m2":
        return values[0]
    return "stats" if "stats" in extensions else None


def _v2_chain(codecs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A chain as v2 ``filters``/``compression``, or None when v2 cannot say it."""
    filters = list(codecs)
    fields: dict[str, Any] = {}
    if filters and filters[-1]["id"] in ("zlib", "gzip"):
        fields["compression"] = {"id": filters.pop()["id"]}
    if any(f["id"] != "shuffle" for f in filters):
        return None
    if filters:
        fields["filters"] = [{"id": "shuffle", "element_size": f["elementsize"]} for f in filters]
    return fields


def build_request(spec: ChunkSpec, selection: Selection, *, interface_type: str, url: str,
                  byte_range: tuple[int, int] | None, extensions: Sequence[str]
                  ) -> tuple[str, dict[str, Any]] | None:
    """(op, JSON body) asking a server for ``spec.fields`` of one chunk; None if it cannot."""
    dtype = np.dtype(spec.dtype)
    op = choose_op(spec.fields, extensions)
    allowed_dtypes = DTYPES if "dtypes" in extensions else V2_DTYPES
    order = spec.order
    if isinstance(order, tuple):  # a transpose; reversing every axis is Fortran order
        order = "F" if order == tuple(reversed(range(len(order)))) else None
    if op is None or dtype.name not in allowed_dtypes or order is None:
        return None
    integer = dtype.kind in "iu"
    if op == "sum" and "accumulate" not in extensions and integer and dtype.itemsize < 8:
        return None  # a v2 sum wraps in the input dtype; ours must not
    # Float64 sums of integers (means, moments) or of packed float16/32 are more than a sum in
    # the input dtype gives: such chunks reduce storage-side only where asked of the server.
    float64 = spec.accumulate == "float" and (integer or dtype.itemsize < 8)
    if float64 and op in ("sum", "stats") and "accumulate-float" not in extensions:
        return None
    if spec.missing.nan:
        return None  # NaN as missing has no wire form
    missing = Missing.from_spec(spec.missing)
    if missing is not None and missing.combined and "missing-combined" not in extensions:
        return None
    chain = {"codecs": list(spec.codecs)} if "codecs" in extensions else _v2_chain(spec.codecs)
    if chain is None:
        return None
    body: dict[str, Any] = {
        "interface_type": interface_type, "url": url, "dtype": dtype.name,
        "shape": list(spec.shape), "order": order,
        "selection": [list(s) for s in selection], **chain,
    }
    if dtype.byteorder in _ENDIAN_NAME:
        body["byte_order"] = _ENDIAN_NAME[dtype.byteorder]
    if spec.axis is not None:
        body["axis"] = list(spec.axis)
    if byte_range is not None:
        body["offset"], body["size"] = byte_range
    if missing is not None:
        body["missing"] = missing.model_dump(exclude_none=True)
    if op in ("sum", "stats") and "accumulate" in extensions:
        body["accumulate"] = "float" if float64 else "wide"
    return op, body


def _array(data: bytes, name: str, byte_order: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(name).newbyteorder(_ENDIAN[byte_order])
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def partial_from_result(op: str, result: Mapping[str, Any], spec: ChunkSpec) -> Partial:
    """The :class:`Partial` of ``spec.fields`` that a server's response map stands for."""
    shape = tuple(result["shape"])
    count = np.asarray(result["count"], np.int64).reshape(shape)
    order = result["byte_order"]
    dtype = np.dtype(spec.dtype)
    partial = Partial(count)
    if op == "stats":
        stored = {name: result[name] for name in ("sum", "min", "max", "m2")}
        # ``sum_dtype`` says how the server accumulated (wide when absent: older servers).
        sum_dtype = result.get("sum_dtype", accumulator_dtype(dtype, "wide").name)
        dtypes = {"sum": sum_dtype, "min": dtype.name,
                  "max": dtype.name, "m2": "float64"}
    else:
        stored, dtypes = {op: result["bytes"]}, {op: result["dtype"]}
    for name in spec.fields:
        if name == "count":
            continue
        array = _array(stored[name], dtypes[name], order, shape)
        if name == "sum":
            array = array.astype(accumulator_dtype(dtype, spec.accumulate))
        setattr(partial, name, array)
    return partial

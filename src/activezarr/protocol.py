"""The active-storage wire protocol (PROTOCOL.md): the request model and its mapping onto the
:class:`~activezarr.chunk.codec.ChunkReduction` a storage side runs; the response map, the one
encoding of a partial, is :mod:`activezarr.chunk.result`.

Both ends use this module: the server parses requests here, the client builds requests and
reads results here. It knows nothing about HTTP or I/O.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import numcodecs
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .chunk.codec import ChunkReduction
from .chunk.codec_bounds import bounded_decode, zstd_content_size
from .chunk.codecs import CodecChain
from .chunk.reductions import BUILTIN_AGGREGATIONS, aggregation_class
from .chunk.result import BYTE_ORDER, ENDIAN, ResultForm, result_form
from .chunk.spec import (
    MAX_GROUPS,
    SUPPORTED_DTYPES,
    V2_DTYPES,
    ChunkSpec,
    MissingSpec,
    Selection,
    check_selection,
)
from .errors import ActiveZarrError

V2_OPS = ("count", "max", "min", "sum", "select")
#: The operations every server of ours serves; plugin reductions an operator loads add theirs.
OPS = (*V2_OPS, "stats", "histogram", "argmax", "argmin", "key_range", "key_bins",
       "key_values", "key_sketch")
assert set(OPS) == {*BUILTIN_AGGREGATIONS, "select"}
DTYPES = SUPPORTED_DTYPES
INTERFACE_TYPES = ("s3", "http", "https", "file", "ost")
#: What our server adds to Reductionist v2; a client sends extensions only to servers listing them.
EXTENSIONS = ("stats", "batch", "codecs", "accumulate", "accumulate-float", "missing-combined",
              "dtypes", "file", "healthz", "weights", "groups", "missing-nan", "combine", "lean",
              "absent", "weights-packed")
#: The capability document (Discovery) and the health check (the ``healthz`` extension).
SCHEMA_PATH = "/.well-known/reductionist-schema"
HEALTH_PATH = "/healthz"

_ENDIAN_NAME = {"<": "little", ">": "big", "=": BYTE_ORDER}
Number = StrictInt | float
#: Integers a request may carry: what fits a signed 64-bit offset, size, extent or index.
Int64 = Annotated[StrictInt, Field(ge=-2**63, le=2**63 - 1)]


class InvalidRequestError(ActiveZarrError, ValueError):
    """A request that breaks PROTOCOL.md; the message names the request field at fault."""


Model = TypeVar("Model", bound=BaseModel)


def parse(model: type[Model], body: bytes | str, operations: Sequence[str] = OPS,
          op: str | None = None) -> Model:
    """``body`` (JSON) as ``model``, or :class:`InvalidRequestError` naming each bad field;
    a batch item's ``op`` must be one of the server's ``operations``; ``op`` is the operation
    a lone request asks for (its ``params`` are checked against it)."""
    try:
        return model.model_validate_json(body, context={"operations": operations, "op": op})
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{field}: {message}" if field else message)
        raise InvalidRequestError("; ".join(problems)) from None


def _check_missing_value(field: str, value: Number, dtype: np.dtype) -> None:
    """Reductionist reads missing values as the request dtype: -1.0 is no int32."""
    if dtype.kind in "iu" and isinstance(value, float):
        raise ValueError(f"missing.{field} {value!r} is not an integer, as dtype {dtype.name} "
                         "needs")
    MissingSpec(values=(value,)).check_representable(dtype)  # a NaN is kept apart, unchecked


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
        if self.valid_range is not None and not self.valid_range[0] < self.valid_range[1]:
            raise ValueError(f"valid_range {list(self.valid_range)}: min must be less than max "
                             "(as Reductionist); give equal bounds as valid_min and valid_max")
        return self

    def check_dtype(self, dtype: np.dtype) -> None:
        """Raise ValueError, naming the field, for a value the dtype cannot hold."""
        for name, value in self:
            for item in (value if isinstance(value, (list, tuple)) else [value]):
                if item is not None:
                    try:
                        _check_missing_value(name, item, dtype)
                    except ValueError as exc:
                        message = str(exc)
                        if not message.startswith("missing."):
                            message = f"missing.{name}: {message}"
                        raise ValueError(message) from None

    def to_spec(self) -> MissingSpec:
        values = [self.missing_value] if self.missing_value is not None else self.missing_values
        low, high = self.valid_range or (self.valid_min, self.valid_max)
        return MissingSpec(values=tuple(values or ()), valid_min=low, valid_max=high)

    @classmethod
    def from_spec(cls, spec: MissingSpec, dtype: np.dtype | None = None) -> Missing | None:
        """The wire form of ``spec``; values are integers for an integer ``dtype``, as a server
        that reads them in the request dtype needs (they are whole: ChunkSpec checked that)."""
        if spec.is_empty:
            return None

        def wire(value: Any) -> Any:
            whole = dtype is not None and dtype.kind in "iu" and isinstance(value, float)
            return int(value) if whole else value

        fields: dict[str, Any] = {}
        if len(spec.values) == 1:
            fields["missing_value"] = wire(spec.values[0])
        elif spec.values:
            fields["missing_values"] = [wire(v) for v in spec.values]
        low, high = wire(spec.valid_min), wire(spec.valid_max)
        if low is not None and high is not None and low < high:
            fields["valid_range"] = (low, high)
        else:  # one bound, equal or crossed ones (``_Unsigned`` can cross them): each on its own
            fields.update({k: v for k, v in (("valid_min", low), ("valid_max", high))
                           if v is not None})
        return cls(**fields)

    @property
    def combined(self) -> bool:
        """Whether this needs the ``missing-combined`` extension (more than one v2 rule)."""
        return sum(v is not None for _, v in self) > 1


class Weights(_Strict):
    """The ``weights`` extension: one weight per selected element, broadcast over extents of 1.

    The values are a JSON list, or (``weights-packed``) ``packed``: the base64 of one
    Zstandard frame of their little-endian ``dtype`` bytes in C order; within a batch,
    ``same_as`` names an earlier item whose weights these are (:func:`resolve_shared`).
    """

    shape: list[Int64]
    values: list[Number] | None = None
    dtype: Literal["float64", "int64"] | None = None
    packed: str | None = None
    same_as: Int64 | None = None
    _array: np.ndarray | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _one_form(self) -> Weights:
        if self.same_as is not None:
            raise ValueError("weights.same_as names an earlier item of the same batch")
        if (self.values is None) == (self.packed is None):
            raise ValueError("weights need values or packed (with dtype), one of them")
        if self.packed is not None and self.dtype is None:
            raise ValueError("packed weights need their dtype")
        return self

    def array(self) -> np.ndarray:
        """The weights as float64, of ``shape``: a packed frame decoded once, to exactly the
        bytes ``shape`` and ``dtype`` make (never more)."""
        if self._array is None:
            count = math.prod(self.shape)
            if self.packed is None:
                assert self.values is not None
                if len(self.values) != count:
                    raise ValueError(f"weights.values has {len(self.values)} values for shape "
                                     f"{self.shape}")
                values = np.asarray(self.values, np.float64)
            else:
                values = unpack_weights(self.packed, np.dtype(self.dtype or "float64"), count)
            self._array = values.reshape(self.shape)
        return self._array

    @classmethod
    def of(cls, weights: np.ndarray, packed: bool) -> Weights:
        """The wire form of ``weights``: packed where the server takes it (as int64 where
        they are whole numbers, as brackets are: they compress better)."""
        weights = np.asarray(weights, np.float64)
        if not packed:
            return cls(shape=list(weights.shape), values=weights.ravel().tolist())
        whole = bool(np.all(weights == np.round(weights))) and bool(
            np.all(np.abs(weights) < 2.0**53))
        dtype = np.dtype("<i8" if whole else "<f8")
        frame = _WEIGHTS_ZSTD.encode(np.ascontiguousarray(weights, dtype).tobytes())
        return cls(shape=list(weights.shape), dtype="int64" if whole else "float64",
                   packed=base64.b64encode(bytes(frame)).decode("ascii"))


_WEIGHTS_ZSTD = numcodecs.Zstd(level=3)


def unpack_weights(packed: str, dtype: np.dtype, count: int) -> np.ndarray:
    """``count`` values of ``dtype`` (little-endian) from a base64 Zstandard frame, as float64;
    ValueError for a frame that is not exactly that many bytes."""
    try:
        frame = memoryview(base64.b64decode(packed, validate=True))
        expected = count * dtype.itemsize
        if zstd_content_size(frame) != expected:
            raise ValueError(f"its frame states {zstd_content_size(frame)} bytes, not the "
                             f"{expected} of {count} {dtype.name} values")
        raw = bounded_decode({"id": "zstd"}, _WEIGHTS_ZSTD, frame, expected)
    except ValueError as exc:  # bad base64, a frame of another size (DecodeBoundError)
        raise ValueError(f"weights.packed: {exc}") from None
    return np.frombuffer(bytes(raw), dtype.newbyteorder("<")).astype(np.float64)


def share_weights(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` of one batch with each repeat of an earlier item's packed weights sent as a
    reference to it (``same_as``): the chunks along a reduced axis share their cells'."""
    first: dict[tuple[Any, ...], int] = {}
    shared = []
    for position, item in enumerate(items):
        weights = item.get("weights")
        if isinstance(weights, Mapping) and weights.get("packed") is not None:
            key = (tuple(weights["shape"]), weights["dtype"], weights["packed"])
            if key in first:
                item = {**item, "weights": {"shape": weights["shape"], "same_as": first[key]}}
            else:
                first[key] = position
        shared.append(item)
    return shared


def resolve_shared(items: Sequence[Any]) -> list[Any]:
    """``items`` of a batch with each ``same_as`` reference replaced by the weights it names
    (an earlier item's, themselves no reference); a bad reference is left for that item's
    parsing to refuse."""
    def weights_of(item: Any) -> Mapping[str, Any] | None:
        weights = item.get("weights") if isinstance(item, Mapping) else None
        return weights if isinstance(weights, Mapping) else None

    resolved = list(items)
    for position, item in enumerate(items):
        weights = weights_of(item)
        if weights is None or set(weights) != {"shape", "same_as"}:
            continue
        target = weights["same_as"]
        if isinstance(target, int) and not isinstance(target, bool) and 0 <= target < position:
            named = weights_of(items[target])
            if named is not None and "same_as" not in named and \
                    named.get("shape") == weights["shape"]:
                resolved[position] = {**item, "weights": named}
    return resolved


class Groups(_Strict):
    """The ``groups`` extension: the group label of each selected position along ``axis``."""

    axis: Int64
    labels: list[Annotated[StrictInt, Field(ge=-1, lt=MAX_GROUPS)]]


class ChunkRequest(_Strict):
    """One chunk to reduce: the JSON body of ``POST /v2/{op}``."""

    interface_type: Literal[INTERFACE_TYPES]  # type: ignore[valid-type]
    url: str = Field(min_length=1)
    dtype: Literal[DTYPES]  # type: ignore[valid-type]
    # Fields in the order a client writes them.
    shape: list[Int64] | None = None
    order: Literal["C", "F"] = "C"
    selection: list[list[Int64]] | None = None
    codecs: list[dict[str, Any]] | None = None
    compression: Compression | None = None
    filters: list[Filter] | None = None
    byte_order: Literal["little", "big"] | None = None
    axis: Int64 | list[Int64] | None = None
    offset: Int64 | None = Field(None, ge=0)
    size: Int64 | None = Field(None, ge=1)
    missing: Missing | None = None
    #: The ``missing-nan`` extension: NaN elements are missing (xarray's ``skipna``).
    missing_nan: StrictBool = False
    accumulate: Literal["native", "wide", "float"] = "native"
    weights: Weights | None = None
    groups: Groups | None = None
    #: A plugin reduction's parameters (validated by its aggregation).
    params: dict[str, Any] | None = None
    option_disable_chunk_cache: StrictBool | None = None
    option_shape_as_bytes: StrictBool | None = None
    option_count_as_bytes: StrictBool | None = None

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> ChunkRequest:
        """The whole request checked before anything is read, Reductionist's rules first."""
        if self.codecs is not None and (self.compression or self.filters):
            raise ValueError("codecs is exclusive with compression and filters")
        if self.shape is not None and not self.shape:
            raise ValueError("shape must have at least one dimension")
        if self.shape is not None and any(n < 1 for n in self.shape):
            raise ValueError(f"shape {self.shape} has an extent below 1")
        if self.selection is not None:
            if self.shape is None:
                raise ValueError("selection requires shape")
            check_selection(self.selection, len(self.shape))
        ndim = len(self.shape) if self.shape is not None else 1
        axes = self._axes(ndim)
        if axes is not None and (any(not 0 <= a < ndim for a in axes)
                                 or list(axes) != sorted(set(axes))):
            raise ValueError(f"axis {self.axis} is not ascending distinct axes of {ndim} "
                             "dimension(s)")
        itemsize = np.dtype(self.dtype).itemsize
        codecs = self.codec_configs()
        if not codecs and self.size is not None:
            if self.size % itemsize:
                raise ValueError(f"size {self.size} is not a multiple of the {itemsize} bytes "
                                 f"of dtype {self.dtype}")
            if self.shape is not None and self.size != math.prod(self.shape) * itemsize:
                raise ValueError(f"size {self.size} is not shape {self.shape} of dtype "
                                 f"{self.dtype} ({math.prod(self.shape) * itemsize} bytes)")
        if self.missing is not None:
            self.missing.check_dtype(np.dtype(self.dtype))
        if self.weights is not None or self.groups is not None:
            check_weights_and_groups(self, axes)
        try:
            CodecChain(codecs)  # allow-listed and constructible
        except ValueError as exc:
            raise ValueError(f"{'codecs' if self.codecs is not None else 'compression'}: "
                             f"{exc}") from None
        op = getattr(self, "op", None) or (info.context or {}).get("op")
        if op is not None and op != "select":
            check_params(op, self.params, None if self.shape is None else (
                [len(range(*s)) for s in self.chunk_selection(self.shape)],
                axes if axes is not None else tuple(range(ndim))))
        return self

    @property
    def decoded_nbytes(self) -> int | None:
        """The chunk's decoded size when its shape is given."""
        if self.shape is None:
            return None
        return math.prod(self.shape) * int(np.dtype(self.dtype).itemsize)

    @property
    def stored_dtype(self) -> np.dtype:
        """The element dtype with the request's byte order (native when absent)."""
        stored: np.dtype = np.dtype(self.dtype).newbyteorder(ENDIAN.get(self.byte_order or "", "="))
        return stored

    def codec_configs(self) -> tuple[dict[str, Any], ...]:
        """The decode chain as numcodecs configs in encode order (filters, then compression)."""
        if self.codecs is not None:
            return tuple(self.codecs)
        chain = [{"id": "shuffle", "elementsize": f.element_size} for f in self.filters or ()]
        if self.compression is not None:
            chain.append({"id": self.compression.id})
        return tuple(chain)

    def chunk_reduction(self, op: str, shape: Sequence[int], codecs: Sequence[dict[str, Any]],
                        lean: bool = False) -> ChunkReduction:
        """The work this request asks for: ``op`` on a chunk of ``shape`` stored with
        ``codecs``, as the :class:`ChunkReduction` every storage side runs.

        Sums accumulate in float64 under ``accumulate: float`` (numpy's mean and var of
        integers) and when weighted, else wide; ``native`` narrows them in the result.
        """
        weights = self.weights
        return ChunkReduction(
            op, self.chunk_selection(shape), dtype=self.stored_dtype.str, shape=tuple(shape),
            order=self.order, codecs=tuple(codecs), missing=self._missing_spec(),
            axis=self._axes(len(shape)), accumulate=self.accumulate,
            weights=None if weights is None else {"shape": weights.shape,
                                                  "values": weights.array().ravel()},
            groups=None if self.groups is None else {"axis": self.groups.axis,
                                                     "labels": self.groups.labels},
            lean=lean, shape_as_bytes=bool(self.option_shape_as_bytes),
            count_as_bytes=bool(self.option_count_as_bytes), params=self.params)

    def result_form(self, op: str, lean: bool = False) -> ResultForm:
        """How the answer to ``op`` is written (a merged partial's too)."""
        return result_form(op, self.dtype, self.order, self.axis, accumulate=self.accumulate,
                           lean=lean, shape_as_bytes=bool(self.option_shape_as_bytes),
                           count_as_bytes=bool(self.option_count_as_bytes),
                           labels=None if self.groups is None else self.groups.labels)

    def _missing_spec(self) -> MissingSpec:
        spec = self.missing.to_spec() if self.missing else MissingSpec()
        return spec.model_copy(update={"nan": True}) if self.missing_nan else spec

    @property
    def extra_working_bytes(self) -> int:
        """Memory the weights and groups need beyond :func:`working_bytes`'s: the weights
        broadcast and multiplied in float64, and a grouped copy of the selection."""
        if self.shape is None or (self.weights is None and self.groups is None):
            return 0
        selected = math.prod(len(range(*s)) for s in self.chunk_selection(self.shape))
        weighted = 24 * selected if self.weights is not None else 0
        grouped = selected * np.dtype(self.dtype).itemsize if self.groups is not None else 0
        return weighted + grouped

    def chunk_selection(self, shape: Sequence[int]) -> Selection:
        if self.selection is None:
            return tuple((0, n, 1) for n in shape)
        return check_selection(self.selection, len(shape))

    def _axes(self, ndim: int) -> tuple[int, ...] | None:
        if self.axis is None:
            return None
        axes = [self.axis] if isinstance(self.axis, int) else self.axis
        return tuple(a + ndim if a < 0 else a for a in axes)


def check_params(op: str, params: dict[str, Any] | None,
                 selection: tuple[list[int], tuple[int, ...]] | None = None) -> None:
    """``params`` are what operation ``op``'s aggregation takes, and fit the chunk's
    ``selection`` (its extents, and the axes reduced) where it is known."""
    cls = aggregation_class(op)
    try:
        cls.Params.model_validate(params or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_url=False))
        raise ValueError(f"params: {problems}") from None
    if selection is not None:
        extents, axes = selection
        cls(np.float64, params=params).check_fits(extents, axes)


def check_weights_and_groups(request: ChunkRequest, axes: tuple[int, ...] | None) -> None:
    """The ``weights`` and ``groups`` fields agree with the selection they describe."""
    if request.shape is None:
        raise ValueError("weights and groups require shape")
    extents = [len(range(*s)) for s in request.chunk_selection(request.shape)]
    weights, groups = request.weights, request.groups
    if weights is not None:
        if len(weights.shape) != len(extents) or any(
                w not in (1, n) for w, n in zip(weights.shape, extents)):
            raise ValueError(f"weights.shape {weights.shape} does not broadcast to the "
                             f"selection's extents {extents}")
        if not np.isfinite(weights.array()).all():
            raise ValueError("weights must be finite numbers")
    if groups is not None:
        if not 0 <= groups.axis < len(extents):
            raise ValueError(f"groups.axis {groups.axis} is not an axis of {len(extents)}")
        if axes is None or groups.axis in axes:
            raise ValueError(f"groups.axis {groups.axis} is reduced by axis {request.axis}; it "
                             "must be kept (it is reduced per group)")
        if len(groups.labels) != extents[groups.axis]:
            raise ValueError(f"groups.labels has {len(groups.labels)} labels for "
                             f"{extents[groups.axis]} selected positions along axis "
                             f"{groups.axis}")


class BatchItem(ChunkRequest):
    op: str

    @field_validator("op")
    @classmethod
    def _served(cls, op: str, info: ValidationInfo) -> str:
        operations = (info.context or {}).get("operations", OPS)
        if op not in operations:
            raise ValueError(f"op {op!r} is not served here; operations: "
                             f"{', '.join(operations)}")
        return op


class BatchRequest(_Strict):
    """``POST /v2/batch``; items stay raw so that one bad item fails alone.

    ``combine`` (extension): a group label per item; the server merges the partials of the
    items sharing a label into one answer. ``lean`` (extension): counts packed, stored sizes
    told (see Batch). ``absent`` (extension): an object the store says does not exist is
    answered ``{"absent": true}``, not as an error.
    """

    requests: list[dict[str, Any]]
    combine: list[Int64] | None = None
    lean: StrictBool = False
    absent: StrictBool = False

    @model_validator(mode="after")
    def _one_label_per_item(self) -> BatchRequest:
        if self.combine is not None and len(self.combine) != len(self.requests):
            raise ValueError(f"combine has {len(self.combine)} labels for "
                             f"{len(self.requests)} requests")
        return self


# --- errors --------------------------------------------------------------------------------


def error_body(exc: BaseException) -> dict[str, Any]:
    """PROTOCOL.md's JSON error: the message, then the messages of its causes."""
    causes: list[str] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(causes) < 8:
        causes.append(str(cause))
        cause = cause.__cause__ or cause.__context__
    return {"error": {"message": str(exc), "caused_by": causes}}


# --- the client's side ---------------------------------------------------------------------


class CannotExpress(ValueError):
    """A chunk the server's protocol cannot ask for; the message says why (the fallback's
    reason)."""


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
                  byte_range: tuple[int, int] | None, extensions: Sequence[str],
                  weights: np.ndarray | None = None, labels: np.ndarray | None = None,
                  operations: Sequence[str] = OPS,
                  spans: Sequence[tuple[int, int]] = ()) -> tuple[str, dict[str, Any]]:
    """(op, body) asking a server for ``spec``'s partial of one chunk, built and validated as
    the :class:`ChunkRequest` the server parses; CannotExpress says why a server speaking
    ``extensions`` and serving ``operations`` cannot be asked: the request field that decided
    it, and the extension that would have said it.

    ``weights`` and ``labels`` are the chunk's own, for weighted and grouped specs; ``spans``
    where its selection sits in the whole one (``origin``, for positional aggregations).
    """
    dtype = np.dtype(spec.dtype)
    op = spec.op
    if op not in operations or (op == "stats" and "stats" not in extensions):
        raise CannotExpress(f"the server does not serve the {op!r} reduction")
    allowed_dtypes = DTYPES if "dtypes" in extensions else V2_DTYPES
    order = spec.memory_order
    if dtype.name not in allowed_dtypes:
        raise CannotExpress(f"dtype: {dtype.name} is not among the server's dtypes "
                            f"({', '.join(allowed_dtypes)}; the 'dtypes' extension adds the "
                            "small ones)")
    if order is None:
        raise CannotExpress(f"order: the chunk's axis order {spec.order} is neither C nor F")
    integer = dtype.kind in "iu"
    if op == "sum" and "accumulate" not in extensions and integer and dtype.itemsize < 8:
        # a v2 sum wraps in the input dtype; ours must not
        raise CannotExpress(f"accumulate: a {dtype.name} sum would wrap without the "
                            "'accumulate' extension")
    # Float64 sums of integers (means, moments) or of packed float16/32 are more than a sum in
    # the input dtype gives: such chunks reduce storage-side only where asked of the server.
    float64 = spec.accumulate == "float" and (integer or dtype.itemsize < 8)
    if float64 and op in ("sum", "stats") and "accumulate-float" not in extensions:
        raise CannotExpress(f"accumulate: float64 sums of {dtype.name} need the "
                            "'accumulate-float' extension")
    # NaN-masking (skipna) means nothing for integers, as in the kernel: not asked of them.
    nan = spec.missing.nan and dtype.kind == "f"
    if nan and "missing-nan" not in extensions:
        raise CannotExpress("missing_nan: masking NaN (skipna) needs the 'missing-nan' extension")
    missing = Missing.from_spec(spec.missing.model_copy(update={"nan": False}), dtype)
    if missing is not None and missing.combined and "missing-combined" not in extensions:
        raise CannotExpress("missing: more than one missing-value rule needs the "
                            "'missing-combined' extension")
    chain = {"codecs": list(spec.codecs)} if "codecs" in extensions else _v2_chain(spec.codecs)
    if chain is None:
        ids = ", ".join(str(c.get("id")) for c in spec.codecs)
        raise CannotExpress(f"codecs: [{ids}] cannot be written as v2 filters/compression "
                            "without the 'codecs' extension")
    fields: dict[str, Any] = {
        "interface_type": interface_type, "url": url, "dtype": dtype.name,
        "shape": list(spec.shape), "order": order,
        "selection": [list(s) for s in selection], **chain,
    }
    if dtype.byteorder in _ENDIAN_NAME:
        fields["byte_order"] = _ENDIAN_NAME[dtype.byteorder]
    if spec.axis is not None:
        fields["axis"] = list(spec.axis)
    if byte_range is not None:
        fields["offset"], fields["size"] = byte_range
    if missing is not None:
        fields["missing"] = missing
    if nan:
        fields["missing_nan"] = True
    if op in ("sum", "stats") and "accumulate" in extensions:
        fields["accumulate"] = "float" if float64 else "wide"
    if spec.weighted or spec.group_axis is not None:
        fields.update(weights_and_groups(spec, op, weights, labels, extensions))
    if spec.params is not None:
        fields["params"] = spec.params
    if spans and aggregation_class(op).positional:
        fields["params"] = {**(spec.params or {}), "origin": [start for start, _ in spans]}
    try:
        request = ChunkRequest(**fields)
    except ValidationError as exc:
        raise CannotExpress(f"the request cannot be made: {exc.errors()[0]['msg']}") from None
    return op, request.model_dump(mode="json", exclude_unset=True)


def weights_and_groups(spec: ChunkSpec, op: str, weights: np.ndarray | None,
                       labels: np.ndarray | None, extensions: Sequence[str]
                       ) -> dict[str, Any]:
    """The request fields of the ``weights`` and ``groups`` extensions; CannotExpress says why
    the server cannot take them (a weighted request is a ``sum``)."""
    fields: dict[str, Any] = {}
    if spec.weighted:
        if "weights" not in extensions:
            raise CannotExpress("weights: the server lacks the 'weights' extension")
        if weights is None or not aggregation_class(op).takes_weights:
            raise CannotExpress(f"weights: a weighted {op} has no wire form (weights go with "
                                "sum and the quantile rounds)")
        fields["weights"] = Weights.of(weights, "weights-packed" in extensions)
    if spec.group_axis is not None:
        if "groups" not in extensions:
            raise CannotExpress("groups: the server lacks the 'groups' extension")
        if labels is None:
            raise CannotExpress(f"groups: a grouped {op} has no wire form")
        fields["groups"] = Groups(axis=spec.group_axis, labels=np.asarray(labels).tolist())
    return fields

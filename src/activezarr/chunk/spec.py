"""Typed, validated descriptions of "decode this chunk and reduce it"; no I/O, no HTTP, no zarr.

A :class:`ChunkSpec` is built once per array and shared by all its chunks; only the selection
changes from chunk to chunk. The same models validate what storage-side processes receive.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: The dtypes Reductionist v2 reduces, and all the dtypes reductions support (in the order
#: the capability document lists them).
V2_DTYPES = ("int32", "int64", "uint32", "uint64", "float32", "float64")
SUPPORTED_DTYPES = (*V2_DTYPES, "int8", "int16", "uint8", "uint16", "float16")
#: Groups a grouped reduction may have: labels lie in [-1, MAX_GROUPS), -1 in no group.
MAX_GROUPS = 2**31
Number = int | float


def check_dtype(dtype: Any) -> np.dtype:
    """The numpy dtype for ``dtype``, or a clear error when reductions do not support it."""
    try:
        resolved: np.dtype = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"unknown dtype {dtype!r}") from exc
    if resolved.name not in SUPPORTED_DTYPES:
        raise TypeError(
            f"dtype {resolved.name!r} cannot be reduced; supported: {', '.join(SUPPORTED_DTYPES)}"
        )
    return resolved


class MissingSpec(BaseModel):
    """Which stored values count as missing (CF conventions: fill/missing values, valid range)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    values: tuple[Number, ...] = ()
    valid_min: Number | None = None
    valid_max: Number | None = None
    nan: bool = False

    @model_validator(mode="after")
    def _nan_values_mean_nan(self) -> MissingSpec:
        # NaN never compares equal, so a NaN fill value is expressed as "mask NaN".
        if any(isinstance(v, float) and math.isnan(v) for v in self.values):
            kept = tuple(v for v in self.values if not (isinstance(v, float) and math.isnan(v)))
            object.__setattr__(self, "values", kept)
            object.__setattr__(self, "nan", True)
        return self

    @property
    def is_empty(self) -> bool:
        return not self.values and self.valid_min is None and self.valid_max is None and not self.nan

    def check_representable(self, dtype: np.dtype) -> None:
        """Raise ValueError when a rule's value cannot be stored in ``dtype``."""
        named: list[tuple[str, float | None]] = [("missing value", v) for v in self.values]
        named += [("valid_min", self.valid_min), ("valid_max", self.valid_max)]
        for name, value in named:
            if value is not None and not representable(value, dtype):
                raise ValueError(f"{name} {value!r} is not representable in dtype {dtype.name}")


def representable(value: Number, dtype: np.dtype) -> bool:
    """Whether ``value`` is exactly a value of ``dtype`` (or an infinity of a float dtype)."""
    if dtype.kind in "iu":
        if isinstance(value, float) and not value.is_integer():
            return False
        info = np.iinfo(dtype)
        return info.min <= int(value) <= info.max
    if math.isinf(value) or math.isnan(value):
        return True
    return bool(np.isfinite(np.asarray(value, dtype=dtype)))


class ChunkSpec(BaseModel):
    """How every chunk of one array decodes, what counts as missing, and what to compute."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dtype: str = Field(description="numpy dtype string with byte order, e.g. '<f4'")
    shape: tuple[int, ...]
    order: Literal["C", "F"] | tuple[int, ...] = "C"
    codecs: tuple[dict[str, Any], ...] = ()  # checked against the allow-list by CodecChain
    missing: MissingSpec = MissingSpec()
    axis: tuple[int, ...] | None = None
    #: The aggregation computed (a storage side's operation: ``sum``, ``stats``, a plugin's).
    op: str = "sum"
    #: Its request parameters (validated by the aggregation), e.g. a histogram's bins.
    params: dict[str, Any] | None = None
    accumulate: Literal["wide", "float"] = "wide"
    #: Each chunk comes with weights (``sum`` is then the sum of weight * value).
    weighted: bool = False
    #: The axis along which each chunk comes with integer group labels: it is reduced per group.
    group_axis: int | None = None

    @property
    def memory_order(self) -> Literal["C", "F"] | None:
        """``order`` as a wire request says it: a transpose reversing every axis is ``F``, the
        identity ``C``; None for other transposes, which the wire cannot say."""
        if isinstance(self.order, str):
            return self.order
        ndim = len(self.order)
        if self.order == tuple(reversed(range(ndim))):
            return "F"
        return "C" if self.order == tuple(range(ndim)) else None

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str) -> str:
        return check_dtype(value).str

    @field_validator("shape")
    @classmethod
    def _non_negative_shape(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 0 for n in value):
            raise ValueError(f"chunk shape {value} has a negative extent")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ChunkSpec:
        ndim = len(self.shape)
        if isinstance(self.order, tuple) and sorted(self.order) != list(range(ndim)):
            raise ValueError(f"order {self.order} is not a permutation of {ndim} axes")
        if self.axis is not None:
            if list(self.axis) != sorted(set(self.axis)):
                raise ValueError(f"axis {self.axis} must be ascending and distinct")
            if any(not 0 <= a < ndim for a in self.axis):
                raise ValueError(f"axis {self.axis} out of range for {ndim} dimensions")
        if self.group_axis is not None and not (
                0 <= self.group_axis < ndim and self.group_axis not in self.reduced_axes):
            raise ValueError(f"group_axis {self.group_axis} is not a kept axis of {ndim}")
        self.missing.check_representable(np.dtype(self.dtype))
        return self

    @property
    def reduced_axes(self) -> tuple[int, ...]:
        return tuple(range(len(self.shape))) if self.axis is None else self.axis


Selection = tuple[tuple[int, int, int], ...]


def check_selection(selection: Any, ndim: int) -> Selection:
    """Validate ``[[start, stop, step], ...]`` (numpy slice rules) for an ``ndim``-D chunk."""
    if len(selection) != ndim:
        raise ValueError(f"selection has {len(selection)} entries for {ndim} dimensions")
    out = []
    for entry in selection:
        if len(entry) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry):
            raise ValueError(f"selection entry {entry!r} is not [start, stop, step] integers")
        if entry[2] == 0:
            raise ValueError("selection step cannot be zero")
        out.append(tuple(entry))
    return tuple(out)

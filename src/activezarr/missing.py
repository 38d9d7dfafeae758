"""The one place where missing-value rules are derived (CF attributes) and applied (a mask)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .wire import MissingSpec

CF_ATTRIBUTES = ("_FillValue", "missing_value", "valid_min", "valid_max", "valid_range")


def missing_mask(data: np.ndarray, spec: MissingSpec) -> np.ndarray | None:
    """Boolean mask of the missing elements of ``data``, or None when nothing can be missing."""
    if spec.is_empty:
        return None
    dtype = data.dtype
    mask: np.ndarray | None = None

    def add(part: np.ndarray) -> None:
        nonlocal mask
        mask = part if mask is None else np.logical_or(mask, part, out=mask)

    if spec.values:
        # Each value on its own: numpy would make (0, 2**64 - 1) float64, losing the second.
        values = np.array(spec.values, dtype=object).astype(dtype)
        add(data == values[0] if len(values) == 1 else np.isin(data, values))
    if spec.valid_min is not None:
        add(data < np.asarray(spec.valid_min).astype(dtype))
    if spec.valid_max is not None:
        add(data > np.asarray(spec.valid_max).astype(dtype))
    if spec.nan and dtype.kind == "f":
        add(np.isnan(data))
    return mask


def is_missing(value: Any, dtype: np.dtype, spec: MissingSpec) -> bool:
    """Whether a single stored value is missing under ``spec``."""
    mask = missing_mask(np.asarray([value], dtype=dtype), spec)
    return bool(mask is not None and mask[0])


def cf_missing(
    attrs: Mapping[str, Any], fill_value: Any = None, *, skipna: bool = False
) -> MissingSpec:
    """Rules from CF attributes; ``fill_value`` stands in for an absent ``_FillValue``.

    Zarr v2 arrays written by xarray or described by kerchunk keep the netCDF ``_FillValue`` as
    the array's ``fill_value``, so callers pass it here for format 2 arrays.
    """
    values: list[Any] = []
    fill = attrs.get("_FillValue", fill_value)
    if fill is not None:
        values.append(fill)
    missing_value = attrs.get("missing_value")
    if missing_value is not None:
        values.extend(np.atleast_1d(missing_value).tolist())
    valid_min, valid_max = attrs.get("valid_min"), attrs.get("valid_max")
    if "valid_range" in attrs:
        valid_min, valid_max = np.asarray(attrs["valid_range"]).tolist()
    return MissingSpec(
        values=tuple(_plain(v) for v in values),
        valid_min=_plain(valid_min),
        valid_max=_plain(valid_max),
        nan=skipna,
    )


def explicit_missing(rules: Mapping[str, Any], *, skipna: bool = False) -> MissingSpec:
    """Rules given by the user with the CF attribute names (``{"missing_value": -999}``...)."""
    unknown = set(rules) - set(CF_ATTRIBUTES)
    if unknown:
        raise ValueError(
            f"unknown missing-value rule(s) {sorted(unknown)}; use {', '.join(CF_ATTRIBUTES)}"
        )
    return cf_missing(rules, skipna=skipna)


def _plain(value: Any) -> Any:
    """JSON-able Python number from a numpy scalar or a CF "NaN" string."""
    if value is None:
        return None
    if isinstance(value, str):
        return float(value)
    return np.asarray(value).item()

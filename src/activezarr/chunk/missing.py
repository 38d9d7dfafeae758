"""The one place where CF rules live: which stored values are missing (a mask), how stored
values are viewed (``_Unsigned``) and unpacked (``scale_factor``, ``add_offset``).

Masking follows netCDF4 (``_FillValue``, ``missing_value``, ``valid_min``, ``valid_max``,
``valid_range``, compared exactly in the stored dtype); viewing and unpacking follow xarray.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .conditions import Decoder, Where, union
from .partial import Partial
from .spec import MissingSpec, representable

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
        values = _in_dtype(spec.values, dtype)
        add(data == values[0] if len(values) == 1 else np.isin(data, values))
    if spec.valid_min is not None:
        add(data < _in_dtype([spec.valid_min], dtype)[0])
    if spec.valid_max is not None:
        add(data > _in_dtype([spec.valid_max], dtype)[0])
    if spec.nan and dtype.kind == "f":
        add(np.isnan(data))
    return mask


def _in_dtype(values: Any, dtype: np.dtype) -> np.ndarray:
    """``values`` as an array of ``dtype``, each converted on its own: never through float64."""
    out = np.empty(len(values), dtype.newbyteorder("="))
    for i, value in enumerate(values):
        out[i] = value
    return out


def is_missing(value: Any, dtype: np.dtype, spec: MissingSpec) -> bool:
    """Whether a single stored value is missing under ``spec``."""
    mask = missing_mask(np.asarray([value], dtype=dtype), spec)
    return bool(mask is not None and mask[0])


@dataclass(frozen=True)
class Decoding:
    """How stored values become the values reduced.

    ``dtype`` is what the stored bytes are viewed as (``_Unsigned`` flips the sign), ``missing``
    which of those are masked, and ``scale``/``offset`` unpack the rest (``value_dtype`` is the
    dtype xarray decodes packed data to); ``packed`` is False when there is nothing to unpack.
    """

    dtype: np.dtype
    missing: MissingSpec
    scale: float = 1.0
    offset: float = 0.0
    value_dtype: np.dtype | None = None

    @property
    def packed(self) -> bool:
        return self.value_dtype is not None

    def unpack(self, partial: Partial) -> Partial:
        """Partials of the unpacked values from those of the stored ones (the aggregation
        says how its state maps)."""
        if not self.packed:
            return partial
        return partial.aggregation.unpack(partial, self.scale, self.offset)

    def values(self, stored: np.ndarray) -> np.ndarray:
        """The decoded values of ``stored`` ones (of ``dtype``), as the reductions unpack
        them: ``scale * x + offset`` in float64, then in ``value_dtype``."""
        if not self.packed:
            return stored
        assert self.value_dtype is not None
        return (stored.astype(np.float64) * self.scale + self.offset).astype(self.value_dtype)

    def masking(self, where: Where, decode: Decoder | None = None) -> Decoding:
        """This decoding also masking the values whose decoded values fail ``where``;
        ``decode`` maps stored values to decoded ones (:meth:`values` by default)."""
        if self.packed and self.scale == 0:
            raise ValueError("values packed with scale_factor 0 are all add_offset: a "
                             "condition on them has nothing to choose")
        failing = where.mask(self.dtype, decode or self.values, decreasing=self.scale < 0)
        return replace(self, missing=union(self.missing, failing))


def decoding(attrs: Mapping[str, Any], dtype: np.dtype, fill_value: Any = None, *,
             missing: str | Mapping[str, Any] | None = "cf", skipna: bool = False,
             decode_cf: bool = True) -> Decoding:
    """The :class:`Decoding` of an array of stored ``dtype`` with CF attributes ``attrs``.

    ``fill_value`` stands in for an absent ``_FillValue`` (zarr v2 arrays written by xarray or
    described by kerchunk keep the netCDF ``_FillValue`` there). ``missing="cf"`` masks by the
    attributes, a dict of the same names masks explicitly, None masks and unpacks nothing;
    ``decode_cf=False`` ignores the attributes (raw stored values).
    """
    if missing is None:
        return Decoding(dtype, MissingSpec(nan=skipna))
    if not decode_cf:
        attrs, fill_value = {}, None
    view = _viewed_dtype(dtype, attrs.get("_Unsigned"))
    if missing == "cf":
        rules = attrs
    elif isinstance(missing, Mapping):
        unknown = set(missing) - set(CF_ATTRIBUTES)
        if unknown:
            raise ValueError(f"unknown missing-value rule(s) {sorted(unknown)}; "
                             f"use {', '.join(CF_ATTRIBUTES)}")
        rules, fill_value = missing, None
    else:
        raise ValueError(f"missing must be 'cf', None or a dict of CF rules, got {missing!r}")
    spec = _missing_spec(rules, fill_value, dtype, view, skipna)
    if missing == "cf":
        # A fill or missing value no stored value can equal masks nothing (netCDF4 and xarray
        # ignore it too); an explicit one is the caller's mistake and raises below.
        kept = tuple(v for v in spec.values if representable(v, view))
        spec = spec.model_copy(update={"values": kept})
    spec.check_representable(view)
    scale, offset = attrs.get("scale_factor"), attrs.get("add_offset")
    if scale is None and offset is None:
        return Decoding(view, spec)
    return Decoding(view, spec, _number(scale, "scale_factor", 1.0),
                    _number(offset, "add_offset", 0.0), _unpacked_dtype(view, scale, offset))


def _missing_spec(rules: Mapping[str, Any], fill_value: Any, stored: np.dtype,
                  view: np.dtype, skipna: bool) -> MissingSpec:
    def value(v: Any, name: str) -> Any:
        return _as_viewed(_cf_value(v, stored, name), stored, view)

    values = [value(v, "_FillValue") for v in _listed(rules.get("_FillValue", fill_value))]
    values += [value(v, "missing_value") for v in _listed(rules.get("missing_value"))]
    valid_min, valid_max = rules.get("valid_min"), rules.get("valid_max")
    if rules.get("valid_range") is not None:
        bounds = _listed(rules["valid_range"])
        if len(bounds) != 2:
            raise ValueError(f"valid_range {rules['valid_range']!r} is not [low, high]")
        valid_min, valid_max = bounds
    return MissingSpec(
        values=tuple(values),
        valid_min=None if valid_min is None else value(valid_min, "valid_min"),
        valid_max=None if valid_max is None else value(valid_max, "valid_max"),
        nan=skipna,
    )


def _listed(value: Any) -> list[Any]:
    """The elements of a scalar or list attribute, without a round trip through float64."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return value.reshape(-1).tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _cf_value(value: Any, dtype: np.dtype, name: str) -> int | float:
    """A CF attribute value as an exact Python number.

    Strings are zarr's ``"NaN"``/``"Infinity"``, a hex bit pattern (``"0x7fc00000"``) or, as
    xarray writes ``_FillValue`` in zarr v3 attributes, the base64 of a little-endian float64.
    """
    if isinstance(value, (bytes, str)):
        text = value.decode() if isinstance(value, bytes) else value
        try:
            return float(text)
        except ValueError:
            pass
        if text.startswith("0x") and dtype.kind == "f":
            bits = int(text, 16).to_bytes(dtype.itemsize, "big")
            return float(np.frombuffer(bits, dtype.newbyteorder(">"))[0])
        try:
            packed = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            packed = b""
        if len(packed) == 8:
            return float(struct.unpack("<d", packed)[0])
        raise ValueError(f"{name} {value!r} is not a number")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"{name} {value!r} is not a number")
    number = value.item() if isinstance(value, np.number) else value
    if dtype.kind in "iu" and isinstance(number, float) and number.is_integer():
        return int(number)
    return number


def _as_viewed(value: int | float, stored: np.dtype, view: np.dtype) -> int | float:
    """A stored-dtype value as the same bits viewed as ``view`` (``_Unsigned``)."""
    if stored.kind == view.kind or not isinstance(value, int):
        return value
    info = np.iinfo(stored)
    if not info.min <= value <= info.max:
        return value  # already written in the viewed type
    viewed: int | float = np.asarray(value, stored.newbyteorder("=")).view(
        view.newbyteorder("=")).item()
    return viewed


def _viewed_dtype(dtype: np.dtype, unsigned: Any) -> np.dtype:
    """``dtype`` with the sign ``_Unsigned`` asks for ("true"/"false"), as xarray does."""
    if unsigned is None or dtype.kind not in "iu":
        return dtype
    flag = str(unsigned).lower()
    if flag == "true" and dtype.kind == "i":
        return np.dtype(f"u{dtype.itemsize}").newbyteorder(dtype.byteorder)
    if flag == "false" and dtype.kind == "u":
        return np.dtype(f"i{dtype.itemsize}").newbyteorder(dtype.byteorder)
    return dtype


def _number(value: Any, name: str, default: float) -> float:
    if value is None:
        return default
    items = _listed(value)
    if len(items) != 1 or isinstance(items[0], (str, bool)):
        raise ValueError(f"{name} {value!r} is not a number")
    return float(items[0])


def _unpacked_dtype(dtype: np.dtype, scale: Any, offset: Any) -> np.dtype:
    """The float dtype xarray decodes packed ``dtype`` to (its ``_choose_float_dtype``)."""
    scale_type = None if scale is None else np.dtype(type(_listed(scale)[0]))
    offset_type = None if offset is None else np.dtype(type(_listed(offset)[0]))
    if scale_type is not None and scale_type == offset_type and scale_type.kind == "f" \
            and scale_type.itemsize in (4, 8):
        if dtype.itemsize == 4 and dtype.kind in "iu":
            return np.dtype(np.float64)
        return scale_type
    if offset_type is not None or scale_type is None or scale_type.kind != "f":
        return np.dtype(np.float64)
    return scale_type

"""Everything the accessor reads from xarray (and dask) beyond their public APIs, and why.

Neither has a public way to ask "which stored zarr array, which part of it, decoded how, is
this DataArray?" without loading the values, and that is what a storage-side reduction needs.
So :mod:`activezarr.xarray` walks xarray's lazy wrappers through the names below, and nothing
else private. Were xarray to rename one, the walk would stop and every reduction would run on
the client (with a warning): tests/test_xarray_internals.py pins each name on real objects
opened from zarr written by xarray, and CI runs it on the oldest and the newest xarray
supported (``.ci/run``), so that such a change fails CI instead.

=====================================  =======================================================
read from xarray                       why
=====================================  =======================================================
``Variable._data``                     the values as stored, unloaded (``.data`` loads them)
``<lazy wrapper>.array``               the next layer inwards of xarray's lazy wrappers
``<indexing wrapper>.key.tuple``       the slices/ints a lazy ``isel``/``sel`` selected
``ZarrArrayWrapper._array``            the ``zarr.Array`` xarray opened: where the data lives
wrapper class names (``PASSING``)      layers that pass values unchanged (cache, copy, index)
``_ElementwiseFunctionArray.func``     CF decoding: a ``functools.partial`` of
                                       ``_apply_mask`` (``encoded_fill_values``),
                                       ``_scale_offset_decoding`` (``scale_factor``,
                                       ``add_offset``) or ``numpy.asarray`` (``dtype``, the
                                       view of ``_Unsigned``); called on a few stored values
                                       (fill values not masked) to decode conditions exactly
dask layer names (``SELECTING``)       ``original-`` (xarray's layer holding the lazy array
                                       under its own name), ``open_dataset-`` (xarray's
                                       chunks of it), dask's ``getitem-`` and ``rechunk-``
=====================================  =======================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import xarray as xr

#: xarray's wrappers that pass values through as stored (indexing, caching, byte order).
PASSING = frozenset({"MemoryCachedArray", "CopyOnWriteArray", "LazilyIndexedArray",
                     "ImplicitToExplicitIndexingAdapter", "NativeEndiannessArray",
                     "ZarrArrayWrapper"})

#: the dask layer xarray puts the lazy array in, as the value of the key that is its name.
OPENED = "original-"
#: dask layers that only select or re-chunk what xarray opened; any other transforms values.
SELECTING = (OPENED, "open_dataset-", "getitem-", "rechunk-")


def lazy_values(da: xr.DataArray) -> Any:
    """The DataArray's values as xarray holds them: lazy wrappers, a dask array, or numpy."""
    return da.variable._data


def inner(layer: Any) -> Any | None:
    """The layer a lazy wrapper wraps, or None at the bottom."""
    return getattr(layer, "array", None)


def indexing_key(layer: Any) -> tuple[Any, ...] | None:
    """The key a lazy indexing wrapper selects with (slices, ints, arrays), or None."""
    key = getattr(layer, "key", None)
    return None if key is None else tuple(key.tuple)


def opened_array(layer: Any) -> Any | None:
    """The array xarray's ``ZarrArrayWrapper`` opened (a ``zarr.Array``), or None."""
    return getattr(layer, "_array", None)


def decoding(layer: Any) -> tuple[str | None, Mapping[str, Any]]:
    """The name and keywords of the function a CF decoding layer applies to the values."""
    func = getattr(layer, "func", None)
    return getattr(getattr(func, "func", None), "__name__", None), getattr(func, "keywords", {})


def unmasked_decoder(layer: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The function a CF decoding layer applies to values, but never masking a fill value
    (``_apply_mask`` given no ``encoded_fill_values``): how xarray decodes any stored value."""
    func = layer.func
    if getattr(func.func, "__name__", None) == "_apply_mask":
        return functools.partial(func.func, **{**func.keywords, "encoded_fill_values": []})
    return func


def opened_in_graph(graph: Any) -> list[Any]:
    """The lazy arrays xarray put in a dask graph (one per ``original-`` layer)."""
    return [graph.layers[name][name] for name in graph.layers if name.startswith(OPENED)]

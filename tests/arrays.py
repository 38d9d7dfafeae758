"""Helpers that write zarr arrays in every layout the tests cover, and numpy.ma references."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, TransposeCodec, ZstdCodec

import activezarr

LAYOUTS = ("v2", "v3", "v3-sharded")
CODECS = ("none", "zstd", "zlib", "blosc", "filters")


def create(path: Path, data: np.ndarray, *, layout: str = "v3", codec: str = "zstd",
           chunks: tuple[int, ...] | None = None, shards: tuple[int, ...] | None = None,
           fill_value: Any = None, attributes: dict[str, Any] | None = None,
           order: str = "C") -> zarr.Array:
    """Write ``data`` at ``path`` through an ActiveStore and return the array opened read-only."""
    chunks = chunks or data.shape
    store = activezarr.ActiveStore.from_url(str(path))
    kwargs: dict[str, Any] = dict(shape=data.shape, chunks=chunks, dtype=data.dtype,
                                  fill_value=fill_value, attributes=attributes or {})
    if layout == "v2":
        compressor = {
            "none": None, "zstd": numcodecs.Zstd(level=1), "zlib": numcodecs.Zlib(level=1),
            "blosc": numcodecs.Blosc(cname="lz4", shuffle=numcodecs.Blosc.SHUFFLE),
            "filters": numcodecs.Zlib(level=1),
        }[codec]
        filters = None
        if codec == "filters":
            filters = [numcodecs.Shuffle(elementsize=data.dtype.itemsize)]
            if data.dtype.kind in "iu":
                filters.insert(0, numcodecs.Delta(dtype=data.dtype.str))
        array = zarr.create_array(store, zarr_format=2, compressors=compressor,
                                  filters=filters, order=order, **kwargs)
    else:
        compressors = {
            "none": None, "zstd": ZstdCodec(level=1), "zlib": GzipCodec(level=1),
            "blosc": BloscCodec(cname="lz4", shuffle="shuffle"),
            "filters": GzipCodec(level=1),
        }[codec]
        filters = None
        serializer: Any = "auto"
        if codec == "filters":
            filters = [TransposeCodec(order=tuple(reversed(range(data.ndim))))]
            serializer = BytesCodec(endian="big")
        if layout == "v3-sharded":
            shards = shards or tuple(min(n, 2 * c) for n, c in zip(data.shape, chunks))
            shards = tuple(-(-s // c) * c for s, c in zip(shards, chunks))
        else:
            shards = None
        array = zarr.create_array(store, zarr_format=3, compressors=compressors, filters=filters,
                                  serializer=serializer, shards=shards, **kwargs)
    array[...] = data
    return zarr.open_array(activezarr.ActiveStore.from_url(str(path)), mode="r")


def reference(data: np.ndarray, mask: np.ndarray | None, op: str, axis: Any,
              ddof: int = 0) -> Any:
    """numpy.ma's answer on float64 (floats) or exact integers; masked where no data is valid."""
    work = data.astype(np.float64) if data.dtype.kind == "f" or op in ("mean", "var", "std") else data
    masked = np.ma.masked_array(work, mask=np.zeros(data.shape, bool) if mask is None else mask)
    kwargs = {"ddof": ddof} if op in ("var", "std") else {}
    if op == "sum" and data.dtype.kind in "iu":
        kwargs["dtype"] = np.uint64 if data.dtype.kind == "u" else np.int64
    with np.errstate(all="ignore"):
        count = masked.count(axis=axis)
        try:
            result = getattr(masked, op)(axis=axis, **kwargs)
        except ValueError:  # numpy has no identity for min/max of nothing: all masked
            result = np.zeros(np.shape(count))
    if op == "count":
        return np.asarray(count)
    empty = np.asarray(count) - (ddof if op in ("var", "std") else 0) <= 0
    if op == "sum":  # the sum of no elements at all is 0; of elements all missing, masked
        empty &= np.ones(data.shape, bool).sum(axis=axis) > 0
    values = np.ma.getdata(result)
    return np.ma.masked_array(np.broadcast_to(values, empty.shape), mask=empty)


def assert_matches(actual: Any, expected: Any, dtype: np.dtype, op: str,
                   magnitude: float = 0.0) -> None:
    """Exact for integers, min, max and count; rtol by precision for float results.

    ``magnitude`` (the largest absolute input) sets the absolute tolerance near zero: a sum
    or variance that cancels to ~0 carries rounding error of the inputs' size, not its own.
    """
    expected = np.ma.asarray(expected)
    actual_mask = np.ma.getmaskarray(np.ma.asarray(actual)) if actual is not np.ma.masked \
        else np.ones(expected.shape, bool)
    assert actual_mask.shape == expected.shape, (actual, expected)
    np.testing.assert_array_equal(actual_mask, np.ma.getmaskarray(expected))
    if actual is np.ma.masked or actual_mask.all():
        return
    got = np.ma.getdata(np.ma.asarray(actual))[~actual_mask]
    want = np.ma.getdata(expected)[~actual_mask]
    exact = op in ("count", "min", "max") or (op == "sum" and dtype.kind in "iu")
    if exact:
        np.testing.assert_array_equal(got, want.astype(got.dtype))
        return
    rtol = {2: 2e-3, 4: 1e-5}.get(np.dtype(got.dtype).itemsize, 1e-9)
    scale = np.abs(want).max() if want.size else 0.0
    floor = (magnitude ** 2 if op == "var" else magnitude) * 1e-3
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol,
                               atol=rtol * max(scale * 1e-2, floor) + 1e-300, equal_nan=True)


def assert_reduces_like_numpy(actual: Any, data: np.ndarray, mask: np.ndarray | None,
                              selection: Any, op: str, axis: Any, ddof: int = 0) -> None:
    """``actual`` is numpy.ma's ``op`` of ``data[selection]`` (decoded values) under ``mask``."""
    selected = np.asarray(data[selection])
    sel_mask = None if mask is None else np.asarray(mask[selection])
    expected = reference(selected, sel_mask, op, axis, ddof)
    finite = np.abs(selected.astype(np.float64))
    finite = finite[np.isfinite(finite)]
    assert_matches(actual, expected, data.dtype, op,
                   magnitude=float(finite.max()) if finite.size else 0.0)

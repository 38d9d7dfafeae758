"""From a zarr array's metadata (v2 or v3): everything needed to find and decode its chunks.

This is the one place where a decode chain is derived: zarr v3 codecs are translated to
numcodecs configs here, and nowhere else.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zarr

from ..chunk.spec import ChunkSpec, MissingSpec, check_dtype
from ..errors import UnsupportedArrayError

_BLOSC_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}
_ENDIAN = {"little": "<", "big": ">", None: "|"}
#: numcodecs filters whose result depends on the element order, not only on each element.
_ORDER_SENSITIVE = {"delta"}


@dataclass(frozen=True)
class ShardIndex:
    """Where and how a shard's index of (offset, nbytes) pairs is stored."""

    chunks_per_shard: tuple[int, ...]
    codecs: tuple[dict[str, Any], ...]
    at_end: bool

    @property
    def entries(self) -> int:
        return math.prod(self.chunks_per_shard)

    @property
    def nbytes(self) -> int:
        """Encoded size: 16 bytes per inner chunk plus 4 per checksum codec."""
        return 16 * self.entries + 4 * len(self.codecs)


@dataclass(frozen=True)
class ChunkKey:
    """A chunk's store key from its grid coordinates; a class, not a closure, so that layouts
    (and the reductions holding them) pickle for dask workers."""

    prefix: str
    encode: Callable[[tuple[int, ...]], str]

    def __call__(self, coords: tuple[int, ...]) -> str:
        return self.prefix + self.encode(coords)


@dataclass(frozen=True)
class ArrayLayout:
    """Shape, chunking, dtype and decode chain of one array, in zarr-free terms."""

    shape: tuple[int, ...]
    dtype: np.dtype                       # with the stored byte order
    chunk_shape: tuple[int, ...]          # the decode unit (an inner chunk when sharded)
    order: Literal["C", "F"] | tuple[int, ...]
    codecs: tuple[dict[str, Any], ...]    # numcodecs configs, in encode order
    fill_value: Any
    zarr_format: int
    attrs: Mapping[str, Any]
    raw_fill_value: Any                   # the metadata's fill_value (None: "null" in v2)
    chunk_key: Callable[[tuple[int, ...]], str]
    shard_index: ShardIndex | None = None

    @property
    def stored_objects(self) -> int:
        """How many objects the array has at most: its chunks, or its shards when sharded."""
        per = self.shard_index.chunks_per_shard if self.shard_index else (1,) * len(self.shape)
        return math.prod(-(-n // (c * k)) for n, c, k in zip(self.shape, self.chunk_shape, per))

    @classmethod
    def from_array(cls, array: zarr.Array) -> ArrayLayout:
        """Layout of ``array``, or :class:`UnsupportedArrayError` saying what is not supported."""
        meta = array.metadata.to_dict()
        prefix = f"{array.path}/" if array.path else ""
        chunk_key = ChunkKey(prefix, array.metadata.encode_chunk_key)
        fill = array.fill_value
        common = dict(
            shape=tuple(array.shape),
            fill_value=0 if fill is None else fill,
            raw_fill_value=fill,
            attrs=dict(array.attrs),
            chunk_key=chunk_key,
            zarr_format=meta["zarr_format"],
        )
        dtype = _supported_dtype(array.dtype)
        if meta["zarr_format"] == 2:
            return cls(**common, **_v2_chain(meta, dtype))
        return cls(**common, **_v3_chain(meta, dtype))

    def viewed_as(self, dtype: np.dtype) -> ArrayLayout:
        """This layout with its elements viewed as ``dtype`` of the same size (``_Unsigned``)."""
        if dtype == self.dtype:
            return self
        fill = np.asarray(self.fill_value, self.dtype).view(dtype)[()]
        return dataclasses.replace(self, dtype=dtype, fill_value=fill)

    @property
    def chunk_nbytes(self) -> int:
        return math.prod(self.chunk_shape) * self.dtype.itemsize

    def spec(self, *, missing: MissingSpec, axis: tuple[int, ...] | None,
             op: str, accumulate: str, weighted: bool = False,
             group_axis: int | None = None, params: dict[str, Any] | None = None) -> ChunkSpec:
        """The :class:`ChunkSpec` every chunk of this array is reduced with."""
        return ChunkSpec(dtype=self.dtype.str, shape=self.chunk_shape, order=self.order,
                         codecs=self.codecs, missing=missing, axis=axis,
                         op=op, params=params,
                         accumulate=accumulate,  # type: ignore[arg-type]
                         weighted=weighted, group_axis=group_axis)


def _supported_dtype(dtype: Any) -> np.dtype:
    try:
        return check_dtype(dtype)
    except TypeError as exc:
        raise UnsupportedArrayError(str(exc)) from None


def _v2_chain(meta: Mapping[str, Any], dtype: np.dtype) -> dict[str, Any]:
    codecs = list(meta.get("filters") or [])
    if meta.get("compressor"):
        codecs.append(meta["compressor"])
    return dict(
        dtype=dtype,
        chunk_shape=tuple(meta["chunks"]),
        order=meta.get("order", "C"),
        codecs=tuple(codecs),
    )


def _v3_chain(meta: Mapping[str, Any], dtype: np.dtype) -> dict[str, Any]:
    grid = meta["chunk_grid"]
    if grid["name"] != "regular":
        raise UnsupportedArrayError(f"chunk grid {grid['name']!r} is not supported")
    chunk_shape = tuple(grid["configuration"]["chunk_shape"])
    codecs = list(meta["codecs"])
    if codecs and codecs[0]["name"] == "sharding_indexed":
        if len(codecs) > 1:
            raise UnsupportedArrayError("codecs after sharding_indexed are not supported")
        config = codecs[0]["configuration"]
        inner_shape = tuple(config["chunk_shape"])
        byte_order, order, inner = _translate_v3(config["codecs"], dtype)
        _, _, index_codecs = _translate_v3(config["index_codecs"], np.dtype("<u8"))
        if any(c["id"] != "crc32c" for c in index_codecs):
            raise UnsupportedArrayError(f"shard index codecs {config['index_codecs']} not supported")
        return dict(
            dtype=dtype.newbyteorder(byte_order),
            chunk_shape=inner_shape,
            order=order,
            codecs=tuple(inner),
            shard_index=ShardIndex(
                chunks_per_shard=tuple(s // c for s, c in zip(chunk_shape, inner_shape)),
                codecs=tuple(index_codecs),
                at_end=config.get("index_location", "end") == "end",
            ),
        )
    byte_order, order, chain = _translate_v3(codecs, dtype)
    return dict(dtype=dtype.newbyteorder(byte_order), chunk_shape=chunk_shape, order=order,
                codecs=tuple(chain))


def _translate_v3(codecs: Sequence[Mapping[str, Any]], dtype: np.dtype
                  ) -> tuple[Any, Literal["C", "F"] | tuple[int, ...], list[dict[str, Any]]]:
    """(byte order, element order, numcodecs chain) equivalent to a zarr v3 codec list."""
    byte_order, order = "=", "C"  # type: Any, Literal["C", "F"] | tuple[int, ...]
    filters: list[dict[str, Any]] = []
    compressors: list[dict[str, Any]] = []
    seen_bytes = False
    for codec in codecs:
        name, config = codec["name"], dict(codec.get("configuration") or {})
        if name == "transpose":
            if any(f["id"] in _ORDER_SENSITIVE for f in filters):
                raise UnsupportedArrayError("an order-sensitive filter before transpose")
            order = tuple(config["order"])
        elif name == "bytes":
            seen_bytes = True
            byte_order = _ENDIAN[config.get("endian")] if dtype.itemsize > 1 else "|"
        elif name == "sharding_indexed":
            raise UnsupportedArrayError("nested sharding is not supported")
        elif not seen_bytes:
            filters.append(_numcodecs_config(name, config))
        else:
            compressors.append(_numcodecs_config(name, config))
    if not seen_bytes:
        raise UnsupportedArrayError(f"codec chain {[c['name'] for c in codecs]} has no 'bytes'")
    if order == tuple(range(len(order))):
        order = "C"
    # Filters run on decoded values; on the flat chain they must read the stored byte order.
    for f in filters:
        for key in ("dtype", "astype"):
            if key in f:
                f[key] = np.dtype(f[key]).newbyteorder(byte_order).str
    return byte_order, order, filters + compressors


def _numcodecs_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    if name.startswith("numcodecs."):
        return {"id": name.removeprefix("numcodecs."), **config}
    if name == "blosc":
        shuffle = config.get("shuffle", "noshuffle")
        return {"id": "blosc", "cname": config.get("cname", "zstd"),
                "clevel": config.get("clevel", 5),
                "shuffle": _BLOSC_SHUFFLE.get(shuffle, shuffle),
                "blocksize": config.get("blocksize", 0)}
    if name in ("gzip", "zstd", "crc32c"):
        return {"id": name, **config}
    raise UnsupportedArrayError(f"zarr v3 codec {name!r} is not supported")


def dimension_names(array: zarr.Array) -> tuple[str, ...] | None:
    """The names of ``array``'s dimensions (zarr v3 ``dimension_names``, or the
    ``_ARRAY_DIMENSIONS`` attribute xarray and kerchunk write for v2), or None."""
    names: Any = getattr(array.metadata, "dimension_names", None) or array.attrs.get(
        "_ARRAY_DIMENSIONS")
    if not isinstance(names, (list, tuple)) or len(names) != array.ndim or not names:
        return None
    return tuple(str(n) for n in names)

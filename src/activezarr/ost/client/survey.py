"""How a dataset's chunks sit on the stripes, and the bytes each path would move; reads no data.

Behind ``activezarr layout``: for every stored chunk, its :class:`~.placement.Placement`, and
the stripe size that would put every compressed chunk inside one OST.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import zarr

from ...client.store import ActiveStore
from ...planning.array_layout import ArrayLayout
from ...planning.chunks import ChunkTask, plan_chunks
from ...planning.selection import normalize_selection
from ...planning.sharding import locate_inner_chunks
from ...transport.sync import run_sync
from ..wire.messages import MAX_BATCH
from ..wire.namespace import normalize
from .filesystem import OSTFileSystem
from .placement import Placement, place

#: Lustre stripe sizes are multiples of 64 KiB.
STRIPE_UNIT = 64 * 1024
#: About what one partial-result response weighs on the LAN (a CBOR map of a few numbers).
RESPONSE_BYTES = 160


@dataclass(frozen=True)
class ChunkSite:
    key: str
    offset: int
    size: int
    placement: Placement
    loose: int  # bytes of elements cut by stripe boundaries, sent to the client


@dataclass
class PathCost:
    """Chunks of one kind and the bytes their path moves over each link."""

    chunks: int = 0
    disk: int = 0       # every stored byte is read once, whatever the path
    storage: int = 0
    lan: int = 0


@dataclass
class Survey:
    name: str
    itemsize: int
    compressed: bool
    sites: list[ChunkSite] = field(default_factory=list)
    stripe_sizes: set[int] = field(default_factory=set)

    def paths(self) -> Counter[str]:
        """Chunks per path, as ``Report.paths`` counts them."""
        return Counter(site.placement.path for site in self.sites)

    def costs(self) -> dict[tuple[str, str], PathCost]:
        """By (kind, path): what reducing every chunk would move."""
        out: dict[tuple[str, str], PathCost] = {}
        for site in self.sites:
            p = site.placement
            cost = out.setdefault((p.kind, p.path), PathCost())
            cost.chunks += 1
            cost.disk += site.size
            if p.path == "client":
                cost.lan += site.size
                continue
            cost.storage += site.size if p.path == "oss" else 0
            requests = 1 if p.path == "oss" else len(p.osts)
            cost.lan += requests * RESPONSE_BYTES + site.loose
        return out

    def single_ost_stripe(self) -> int | None:
        """Smallest stripe size (a multiple of 64 KiB) putting every compressed chunk in one
        stripe, hence on one OST; None when nothing is compressed."""
        if not self.compressed or not self.sites:
            return None
        starts = np.array([s.offset for s in self.sites], np.int64)
        ends = starts + np.array([max(1, s.size) for s in self.sites], np.int64) - 1
        size = math.ceil(int((ends - starts).max() + 1) / STRIPE_UNIT) * STRIPE_UNIT
        while np.any(starts // size != ends // size):
            size += STRIPE_UNIT
        return size


def _loose_bytes(placement: Placement, itemsize: int) -> int:
    """Bytes of the elements that stripe boundaries cut (uncompressed chunks only)."""
    if placement.kind != "uncompressed":
        return 0
    cut = {e.start // itemsize for e in placement.extents[1:] if e.start % itemsize}
    return len(cut) * itemsize


async def _survey(array: zarr.Array, store: ActiveStore, spread: str) -> Survey:
    fs = store.fs
    if not isinstance(fs, OSTFileSystem):
        raise TypeError(f"{store} is not on an ost:// file system")
    layout = ArrayLayout.from_array(array)
    dims = normalize_selection(..., layout.shape)
    tasks: list[ChunkTask] = list(plan_chunks(layout, dims, tuple(range(len(dims)))))
    if layout.shard_index is not None:
        tasks, _, _ = await locate_inner_chunks(store, layout, tasks, 16)
    root = normalize(store.root)
    keys = sorted({t.key for t in tasks})
    found = await asyncio.gather(*(
        fs.client.layouts([f"{root}/{k}".strip("/") for k in keys[start:start + MAX_BATCH]])
        for start in range(0, len(keys), MAX_BATCH)))  # one MDS call per MAX_BATCH files
    layouts = [layout for part, _ in found for layout in part]
    files = {k: layout for k, layout in zip(keys, layouts) if layout is not None}
    survey = Survey(array.path or array.name or "/", layout.dtype.itemsize, bool(layout.codecs),
                    stripe_sizes={f.stripe_size for f in files.values()})
    for task in tasks:
        file = files.get(task.key)
        if file is None:
            continue  # never written: nothing to read anywhere
        offset, size = task.byte_range or (0, file.size)
        placement = place(file, offset, size, compressed=survey.compressed, spread=spread)
        survey.sites.append(ChunkSite(task.key, offset, size, placement,
                                      _loose_bytes(placement, survey.itemsize)))
    return survey


def survey_array(array: zarr.Array, spread: str = "oss") -> Survey:
    """The survey of an array opened on an :class:`~activezarr.ActiveStore` over ``ost://``."""
    store = array.store
    if not isinstance(store, ActiveStore):
        raise TypeError("survey_array needs an array opened on an ActiveStore")
    return run_sync(_survey(array, store, spread))


def survey_url(url: str, storage_options: dict | None = None,
               spread: str = "oss") -> list[Survey]:
    """Surveys of the array at ``url``, or of every array in the group there."""
    store = ActiveStore.from_url(url, storage_options=storage_options, read_only=True)
    node = zarr.open(store, mode="r")
    arrays = [node] if isinstance(node, zarr.Array) else \
        [a for _, a in sorted(node.arrays(), key=lambda item: item[0])]
    return [survey_array(a, spread) for a in arrays]

"""Which chunks a selection touches, and for each its key, local selection and output region.

Pure arithmetic on the layout; the only I/O (reading shard indexes) lives in :mod:`.sharding`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..chunk.spec import Selection
from .array_layout import ArrayLayout
from .selection import DimSelection


@dataclass(slots=True)
class ChunkTask:
    """One chunk to reduce: where its bytes are and which part of it, into which output cells.

    ``byte_range`` is ``(offset, length)`` inside the object named by ``key`` (an inner chunk of
    a shard), or None for the whole object. ``spans`` are the ``(start, stop)`` positions of
    the chunk's selection in the whole selection, per dimension; ``weights`` and ``labels`` are
    the chunk's own weights and group labels (weighted and grouped reductions). The region of a
    grouped dimension is the array of the groups present in the chunk.
    """

    key: str
    coords: tuple[int, ...]
    selection: Selection
    region: tuple[Any, ...]
    byte_range: tuple[int, int] | None = None
    spans: tuple[tuple[int, int], ...] = ()
    weights: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class _Piece:
    chunk: int
    local: tuple[int, int, int]
    out: tuple[int, int]


def _pieces(sel: DimSelection, chunk: int) -> list[_Piece]:
    """The chunks of one dimension that ``sel`` touches, with local slices and output ranges."""
    if sel.size == 0:
        return []
    pieces = []
    for c in range(sel.start // chunk, (sel.stop - 1) // chunk + 1):
        lo, hi = c * chunk, (c + 1) * chunk
        k0 = max(0, -(-(lo - sel.start) // sel.step))
        k1 = min(sel.size, -(-(hi - sel.start) // sel.step))
        if k0 < k1:
            first = sel.start + k0 * sel.step - lo
            last = sel.start + (k1 - 1) * sel.step - lo
            pieces.append(_Piece(c, (first, last + 1, sel.step), (k0, k1)))
    return pieces


def chunk_spans(sel: DimSelection, chunk: int) -> list[tuple[int, int]]:
    """The ``(start, stop)`` positions of ``sel`` that fall in each chunk it touches."""
    return [p.out for p in _pieces(sel, chunk)]


def chunk_count(layout: ArrayLayout, dims: Sequence[DimSelection]) -> int:
    """How many chunks :func:`plan_chunks` yields, without making them."""
    return math.prod(len(_pieces(sel, n)) for sel, n in zip(dims, layout.chunk_shape))


def _region_major(per_dim: Sequence[list[_Piece]], kept: Sequence[int]
                  ) -> Iterator[tuple[_Piece, ...]]:
    """The chunk combinations with the kept dimensions outermost: C order within each."""
    order = [*kept, *(d for d in range(len(per_dim)) if d not in kept)]
    back = sorted(range(len(order)), key=order.__getitem__)
    for combo in itertools.product(*(per_dim[d] for d in order)):
        yield tuple(combo[i] for i in back)


def plan_chunks(layout: ArrayLayout, dims: Sequence[DimSelection],
                reduced: Sequence[int]) -> Iterator[ChunkTask]:
    """Every chunk the selection touches, lazily: the chunks of one output region one after
    another (so that a batch combines them storage-side), shard by shard when sharded.

    For sharded arrays the tasks are inner chunks keyed by their shard, the inner chunks of one
    shard one after another; their byte ranges are filled in from the shard index by
    :func:`.sharding.locate_inner_chunks`.
    """
    per_dim = [_pieces(sel, n) for sel, n in zip(dims, layout.chunk_shape)]
    kept = [d for d in range(len(dims)) if d not in reduced]
    if layout.shard_index is None:
        combos: Iterator[tuple[_Piece, ...]] = _region_major(per_dim, kept)
        shard_of = None
    else:
        per_shard = layout.shard_index.chunks_per_shard
        groups = [[list(g) for _, g in itertools.groupby(pieces, lambda p: p.chunk // n)]  # noqa: B023
                  for pieces, n in zip(per_dim, per_shard)]
        combos = (combo for shard in itertools.product(*groups)
                  for combo in itertools.product(*shard))
        shard_of = per_shard
    for combo in combos:
        coords = tuple(p.chunk for p in combo)
        stored_at = coords if shard_of is None else tuple(c // n for c, n in zip(coords, shard_of))
        yield ChunkTask(
            key=layout.chunk_key(stored_at),
            coords=coords,
            selection=tuple(p.local for p in combo),
            region=tuple(slice(*combo[d].out) for d in kept),
            spans=tuple(p.out for p in combo),
        )

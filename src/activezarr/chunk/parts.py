"""Reducing part of an uncompressed chunk: the elements held in one part of its stored bytes.

A chunk's stored bytes are its elements in flat stored order. An OST holds some runs of those
bytes; it reduces the elements wholly inside its runs and hands back the bytes of elements cut
by a run's ends ("loose" bytes). The client joins the loose bytes of all OSTs into the
straddling elements and reduces them with the same code, so the result is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import InvalidReductionError
from .codec import ChunkReduction
from .kernel import kept_shape
from .missing import missing_mask
from .partial import Partial
from .reductions import aggregation_of
from .spec import ChunkSpec, Selection

Box = tuple[tuple[int, ...], tuple[int, ...]]
#: (byte offset in the chunk, bytes)
Piece = tuple[int, bytes]


def boxes(k0: int, k1: int, shape: Sequence[int]) -> Iterator[Box]:
    """Boxes (start, stop) of a C-order ``shape`` covering flat elements ``[k0, k1)``.

    At most ``2 * ndim - 1`` boxes; each is itself contiguous in flat order.
    """
    if k0 >= k1:
        return
    if not shape:
        yield (), ()
        return
    inner = math.prod(shape[1:])
    i0, r0 = divmod(k0, inner)
    i1, r1 = divmod(k1, inner)
    if i0 == i1:
        for start, stop in boxes(r0, r1, shape[1:]):
            yield (i0, *start), (i0 + 1, *stop)
        return
    if r0:
        for start, stop in boxes(r0, inner, shape[1:]):
            yield (i0, *start), (i0 + 1, *stop)
        i0 += 1
    if i1 > i0:
        yield (i0, *(0,) * (len(shape) - 1)), (i1, *shape[1:])
    if r1:
        for start, stop in boxes(0, r1, shape[1:]):
            yield (i1, *start), (i1 + 1, *stop)


def stored_axes(spec: ChunkSpec) -> tuple[int, ...]:
    """The logical axis behind each stored axis (C: identity, F: reversed, or a transpose)."""
    ndim = len(spec.shape)
    if spec.order == "C":
        return tuple(range(ndim))
    if spec.order == "F":
        return tuple(reversed(range(ndim)))
    return tuple(spec.order)


def _clip(lo: int, hi: int, sel: tuple[int, int, int]) -> tuple[slice, slice] | None:
    """(slice of the box ``[lo, hi)``, slice of the selection's outputs) where they meet."""
    start, stop, step = sel
    size = len(range(start, stop, step))
    m0 = max(0, -(-(lo - start) // step))
    m1 = min(size, -(-(hi - start) // step))
    if m0 >= m1:
        return None
    first = start + m0 * step - lo
    return slice(first, first + (m1 - m0 - 1) * step + 1, step), slice(m0, m1)


class FlatReducer:
    """Folds runs of a chunk's flat elements into one partial of the chunk's output."""

    def __init__(self, spec: ChunkSpec, selection: Selection,
                 spans: Sequence[tuple[int, int]] = ()) -> None:
        if any(step <= 0 for _, _, step in selection):
            raise ValueError(f"part-chunk selections need positive steps, got {selection}")
        self.spec = spec
        self.selection = selection
        self.dtype = np.dtype(spec.dtype)
        self.axes = stored_axes(spec)
        self.inverse = tuple(int(i) for i in np.argsort(self.axes))
        self.stored_shape = tuple(spec.shape[a] for a in self.axes)
        selected = [len(range(*s)) for s in selection]
        self.aggregation = aggregation_of(spec)
        if spans:  # where the chunk's selection sits in the whole one (positional states)
            self.aggregation = self.aggregation.at([start for start, _ in spans])
        self.result = self.aggregation.empty(kept_shape(selected, spec.reduced_axes))

    def add(self, k0: int, values: np.ndarray) -> None:
        """Fold elements ``k0, k0 + 1, ...`` (flat stored order) holding ``values``."""
        reduced = self.spec.reduced_axes
        for start, stop in boxes(k0, k0 + values.size, self.stored_shape):
            box_shape = tuple(b - a for a, b in zip(start, stop))
            first = int(np.ravel_multi_index(start, self.stored_shape)) - k0
            block = values[first:first + math.prod(box_shape)].reshape(box_shape)
            block = block.transpose(self.inverse)
            local, region, origin = [], [], []
            for d, sel in enumerate(self.selection):
                lo = start[self.inverse[d]]
                clipped = _clip(lo, lo + block.shape[d], sel)
                if clipped is None:
                    break
                local.append(clipped[0])
                origin.append(clipped[1].start)
                if d not in reduced:
                    region.append(clipped[1])
            else:
                picked = block[tuple(local)]
                part = self.aggregation.at(origin).reduce(picked, missing_mask(picked, self.spec.missing),
                                               reduced)
                self.result.merge(part, tuple(region))

    def add_pieces(self, pieces: Sequence[Piece]) -> list[Piece]:
        """Fold the whole elements of each piece; return the bytes of the cut elements."""
        size = self.dtype.itemsize
        loose: list[Piece] = []
        for start, data in pieces:
            end = start + len(data)
            first, last = -(-start // size), end // size
            if first >= last:
                loose.append((start, data))
                continue
            whole = data[first * size - start:last * size - start]
            self.add(first, np.frombuffer(whole, self.dtype))
            if first * size > start:
                loose.append((start, data[:first * size - start]))
            if last * size < end:
                loose.append((last * size, data[last * size - start:]))
        return loose


def join_loose(pieces: Sequence[Piece]) -> list[Piece]:
    """Loose pieces from every OST of a chunk joined into runs of whole elements."""
    runs: list[tuple[int, bytearray]] = []
    for start, data in sorted(pieces, key=lambda p: p[0]):
        if runs and runs[-1][0] + len(runs[-1][1]) == start:
            runs[-1][1].extend(data)
        else:
            runs.append((start, bytearray(data)))
    return [(start, bytes(data)) for start, data in runs]


def reduce_loose(spec: ChunkSpec, selection: Selection, pieces: Sequence[Piece],
                 spans: Sequence[tuple[int, int]] = ()) -> Partial:
    """The partial of the straddling elements, from the loose bytes of all the chunk's OSTs
    (``spans``: where the chunk's selection sits in the whole one)."""
    reducer = FlatReducer(spec, selection, spans)
    left = reducer.add_pieces(join_loose(pieces))
    if left:
        raise ValueError(f"loose bytes at {[p[0] for p in left]} do not make whole elements")
    return reducer.result


def reduce_pieces(reduction: ChunkReduction, pieces: Sequence[Piece]
                  ) -> tuple[Partial, list[Piece]]:
    """The partial of the whole elements in ``pieces`` of an uncompressed chunk (runs of its
    stored bytes, such as a stripe's) for ``reduction``, and the loose bytes of the elements
    they cut: for any storage that holds a chunk's bytes in parts."""
    if reduction.spec.codecs or reduction.weights is not None or reduction.groups is not None:
        raise InvalidReductionError("pieces of a chunk reduce only uncompressed, unweighted "
                                    "and ungrouped")
    if reduction.op == "select":
        raise InvalidReductionError("select results cannot be combined")
    reducer = FlatReducer(reduction.spec, reduction.selection)
    loose = reducer.add_pieces(pieces)
    return reducer.result, loose


def trim(partial: Partial) -> tuple[Partial, list[list[int]] | None]:
    """``partial`` cut to the box of the output cells it counted, and that box (``[start,
    stop]`` per dimension); None when nothing is cut. Cells with no count hold the identity
    (each field its identity), so leaving them out changes no merge: an OST
    holding a few rows of a chunk answers for those rows, not for the chunk's whole output."""
    if partial.count.ndim == 0:
        return partial, None
    counted = np.nonzero(partial.count)
    if counted[0].size:
        box = [[int(where.min()), int(where.max()) + 1] for where in counted]
    else:
        box = [[0, 0]] * partial.count.ndim
    if all(stop - start == n for (start, stop), n in zip(box, partial.shape)):
        return partial, None
    return partial.cut(tuple(slice(start, stop) for start, stop in box)), box

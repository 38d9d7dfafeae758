"""User selections (ints, slices with any step, Ellipsis) normalised against an array's shape."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SelectionError


@dataclass(frozen=True, slots=True)
class DimSelection:
    """Elements ``start, start+step, ... < stop`` (``step > 0``) of one dimension.

    ``reversed`` remembers a negative user step: reductions ignore order, but a kept axis is
    flipped back at the end. ``dropped`` marks an integer index (the axis disappears).
    """

    start: int
    stop: int
    step: int
    size: int
    dropped: bool = False
    reversed: bool = False


def part_of(sel: DimSelection, start: int, stop: int) -> DimSelection:
    """Positions ``start:stop`` of ``sel`` (``0 <= start < stop <= sel.size``; not reversed)."""
    first = sel.start + start * sel.step
    return DimSelection(first, first + (stop - start - 1) * sel.step + 1, sel.step,
                        stop - start, dropped=sel.dropped)


def normalize_selection(selection: Any, shape: Sequence[int]) -> tuple[DimSelection, ...]:
    """One :class:`DimSelection` per dimension, following numpy's indexing rules."""
    entries = selection if isinstance(selection, tuple) else (selection,)
    ellipses = sum(1 for e in entries if e is Ellipsis)
    if ellipses > 1:
        raise SelectionError("an index can only have a single ellipsis ('...')")
    explicit = len(entries) - ellipses
    if explicit > len(shape):
        raise SelectionError(
            f"too many indices for array: array is {len(shape)}-dimensional, "
            f"but {explicit} were indexed"
        )
    expanded: list[Any] = []
    for entry in entries:
        if entry is Ellipsis:
            expanded.extend([slice(None)] * (len(shape) - explicit))
        else:
            expanded.append(entry)
    expanded.extend([slice(None)] * (len(shape) - len(expanded)))
    return tuple(_normalize_dim(e, n, d) for d, (e, n) in enumerate(zip(expanded, shape)))


def _normalize_dim(entry: Any, n: int, dim: int) -> DimSelection:
    if isinstance(entry, slice):
        for part in (entry.start, entry.stop, entry.step):
            if part is not None and not _is_int(part):
                raise SelectionError(f"slice {entry} on axis {dim}: indices must be integers or None")
        if entry.step is not None and operator.index(entry.step) == 0:
            raise SelectionError(f"slice step cannot be zero (axis {dim})")
        start, stop, step = entry.indices(n)
        size = len(range(start, stop, step))
        if size == 0:
            return DimSelection(0, 0, 1, 0)
        if step > 0:
            return DimSelection(start, start + (size - 1) * step + 1, step, size)
        last = start + (size - 1) * step
        return DimSelection(last, start + 1, -step, size, reversed=size > 1)
    if _is_int(entry):
        index = operator.index(entry)
        if not -n <= index < n:
            raise SelectionError(f"index {index} is out of bounds for axis {dim} with size {n}")
        index %= n
        return DimSelection(index, index + 1, 1, 1, dropped=True)
    raise SelectionError(
        f"unsupported index {entry!r} on axis {dim}: use integers, slices or '...'"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def reduced_dims(axis: Any, dims: Sequence[DimSelection]) -> tuple[int, ...]:
    """Array dimensions reduced for ``axis`` given over the selection's visible dimensions.

    Integer-indexed dimensions are always reduced (they hold one element and are dropped).
    """
    visible = [d for d, sel in enumerate(dims) if not sel.dropped]
    if axis is None:
        return tuple(range(len(dims)))
    axes = (axis,) if not isinstance(axis, (tuple, list)) else tuple(axis)
    chosen = []
    for a in axes:
        if not _is_int(a):
            raise TypeError(f"axis must be an integer or a tuple of integers, got {a!r}")
        if not -len(visible) <= a < len(visible):
            raise np.exceptions.AxisError(int(a), len(visible))
        chosen.append(visible[int(a) % len(visible)])
    if len(set(chosen)) != len(chosen):
        raise ValueError(f"duplicate value in 'axis': {axis!r}")
    dropped = [d for d, sel in enumerate(dims) if sel.dropped]
    return tuple(sorted(set(chosen) | set(dropped)))

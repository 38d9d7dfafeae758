"""A partial: one reduction's state over some output cells, and how it merges.

A :class:`Partial` holds the number of valid elements behind each output cell (``count``, which
every reduction keeps: it says which cells hold nothing) and the named arrays of its
aggregation's state. What those arrays are, and how two partials of one aggregation merge, is
the aggregation's (:mod:`activezarr.chunk.aggregation`); this module knows no field by name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .aggregation import Aggregation


def accumulator_dtype(dtype: np.dtype, accumulate: str) -> np.dtype:
    """Dtype sums are accumulated in: wide enough that numpy's default sum would not do better."""
    if accumulate == "float" or dtype.kind == "f":
        return np.dtype(np.float64)
    return np.dtype(np.uint64 if dtype.kind == "u" else np.int64)


def sentinels(dtype: np.dtype) -> tuple[Any, Any]:
    """The (min, max) identities: what min and max hold where no element was valid."""
    if dtype.kind == "f":
        return np.inf, -np.inf
    info = np.iinfo(dtype)
    return info.max, info.min


class Partial:
    """The state of ``aggregation`` over output cells: ``count`` and the named ``arrays``, each
    of the cells' shape (and, for fields of a fixed shape, that shape after it)."""

    __slots__ = ("aggregation", "count", "arrays")

    def __init__(self, aggregation: Aggregation, count: np.ndarray,
                 arrays: dict[str, np.ndarray]) -> None:
        self.aggregation = aggregation
        self.count = count
        self.arrays = arrays

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def __getattr__(self, name: str) -> np.ndarray:
        # Fields read as attributes too (``partial.sum``), where the aggregation has them.
        if name in Partial.__slots__ or name.startswith("__"):
            raise AttributeError(name)  # not set yet (unpickling)
        try:
            return self.arrays[name]
        except KeyError:
            raise AttributeError(f"this partial has no field {name!r}") from None

    def __repr__(self) -> str:
        return (f"Partial({self.aggregation.op}, shape={self.shape}, "
                f"fields={sorted(self.arrays)})")

    @property
    def shape(self) -> tuple[int, ...]:
        return self.count.shape

    @property
    def nbytes(self) -> int:
        return self.count.nbytes + sum(a.nbytes for a in self.arrays.values())

    def replace(self, count: np.ndarray | None = None, **arrays: np.ndarray) -> Partial:
        """This partial with ``count`` and the named arrays replaced."""
        return Partial(self.aggregation, self.count if count is None else count,
                       {**self.arrays, **arrays})

    def map(self, func: Any) -> Partial:
        """``func`` applied to the count and every array (cutting, stacking, copying)."""
        return Partial(self.aggregation, func(self.count),
                       {name: func(values) for name, values in self.arrays.items()})

    def merge(self, other: Partial, region: tuple[Any, ...] = ()) -> None:
        """Fold ``other`` into ``self[region]`` in place (slices, and at most one array of
        distinct ascending positions: the groups of a grouped reduction)."""
        self.aggregation.merge(self, other, region)

    def cut(self, region: tuple[slice, ...]) -> Partial:
        """The partials of the cells in ``region`` (views, not copies)."""
        return self.map(lambda values: values[region])


def owned(partial: Partial) -> Partial:
    """``partial`` with every field a writable array of its own (a whole-chunk reduction gives
    numpy scalars), fit to merge others into."""
    return partial.map(np.array)

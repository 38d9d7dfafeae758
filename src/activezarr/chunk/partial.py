"""Partial results of a reduction and their exact combination across chunks (Chan et al.)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

import numpy as np


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


@dataclass(slots=True)
class Partial:
    """Per-output-element partials; absent fields were not requested."""

    count: np.ndarray
    sum: np.ndarray | None = None
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    m2: np.ndarray | None = None
    wsum: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.count.shape

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays().values())

    def _arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: np.dtype, names: tuple[str, ...],
              accumulate: str) -> Partial:
        """The identity partial: combining it with any partial gives that partial."""
        lo, hi = sentinels(dtype)
        native = dtype.newbyteorder("=")
        make = {
            "sum": lambda: np.zeros(shape, accumulator_dtype(dtype, accumulate)),
            "min": lambda: np.full(shape, lo, native),
            "max": lambda: np.full(shape, hi, native),
            "m2": lambda: np.zeros(shape, np.float64),
            "wsum": lambda: np.zeros(shape, np.float64),
        }
        return cls(np.zeros(shape, np.int64), **{n: make[n]() for n in names if n != "count"})

    def affine(self, scale: float, offset: float) -> Partial:
        """Partials of ``scale * x + offset`` from those of ``x``, in float64 (CF unpacking).

        Sums scale and shift, ``m2`` scales by the square, and a negative scale swaps min and
        max: where ``x`` had its max, the result has its min.
        """
        lo, hi = (self.min, self.max) if scale >= 0 else (self.max, self.min)
        # A weighted sum shifts by the offset times the weights of the valid elements.
        weight = self.count if self.wsum is None else self.wsum

        def mapped(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else scale * values.astype(np.float64) + offset

        with np.errstate(over="ignore", invalid="ignore"):
            return Partial(
                self.count,
                sum=None if self.sum is None
                else scale * self.sum.astype(np.float64) + offset * weight,
                min=mapped(lo), max=mapped(hi),
                m2=None if self.m2 is None else scale * scale * self.m2, wsum=self.wsum,
            )

    def merge(self, other: Partial, region: tuple[Any, ...] = ()) -> None:
        """Fold ``other`` into ``self[region]`` in place (slices, and at most one array of
        distinct ascending positions: the groups of a grouped reduction)."""
        n_a = self.count[region]
        n_b = other.count
        if self.m2 is not None:
            assert self.sum is not None and other.sum is not None and other.m2 is not None
            n = n_a + n_b
            with np.errstate(invalid="ignore", divide="ignore"):
                delta = other.sum / n_b - self.sum[region] / n_a
                extra = np.where((n_a > 0) & (n_b > 0), delta * delta * (n_a * (n_b / n)), 0.0)
            self.m2[region] = self.m2[region] + other.m2 + extra
        if self.sum is not None:
            assert other.sum is not None  # partials that merge hold the same fields
            self.sum[region] = np.add(self.sum[region], other.sum, dtype=self.sum.dtype,
                                      casting="unsafe")
        if self.min is not None:
            assert other.min is not None
            self.min[region] = np.minimum(self.min[region], other.min)
        if self.max is not None:
            assert other.max is not None
            self.max[region] = np.maximum(self.max[region], other.max)
        if self.wsum is not None:
            assert other.wsum is not None
            self.wsum[region] = self.wsum[region] + other.wsum
        self.count[region] = n_a + n_b

    def cut(self, region: tuple[slice, ...]) -> Partial:
        """The partials of the cells in ``region`` (views, not copies)."""
        return Partial(**{name: values[region] for name, values in self._arrays().items()})

    @classmethod
    def stack(cls, parts: list[Partial], axis: int) -> Partial:
        """One partial with ``parts`` side by side along a new ``axis`` (one per group)."""
        names = parts[0]._arrays()
        return cls(**{name: np.stack([getattr(p, name) for p in parts], axis=axis)
                      for name in names})


def owned(partial: Partial) -> Partial:
    """``partial`` with every field a writable array of its own (a whole-chunk reduction gives
    numpy scalars), fit to merge others into."""
    return dataclasses.replace(partial, **{name: np.array(values)
                                           for name, values in partial._arrays().items()})

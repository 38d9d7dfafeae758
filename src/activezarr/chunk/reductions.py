"""Reductions: which partials each needs, and how to finish them into numpy's answer.

Third parties add reductions through the ``activezarr.reductions`` entry-point group, with a
subclass of :class:`Reduction`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from ..errors import UnknownReductionError
from ..plugins import Registry
from .partial import Partial

reductions: Registry[type[Reduction]] = Registry("activezarr.reductions", "reduction",
                                                 UnknownReductionError)


class Reduction(ABC):
    """One reduction; instances hold its options (``ddof``...), validated on construction."""

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]]
    #: "wide" sums in int64/uint64/float64 (exact integers); "float" in float64 (numpy's mean).
    accumulate: ClassVar[str] = "wide"
    #: Whether the reduction of no elements at all is a value (numpy.ma: a sum is 0, a count 0)
    #: rather than masked; over elements that are all missing it is masked either way.
    defined_when_empty: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"{self.name}() got unexpected option(s) {sorted(options)}")

    @abstractmethod
    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype numpy gives this reduction of an array of ``dtype``."""

    @abstractmethod
    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        """(values, mask) from the combined partials; masked elements have no valid data."""


def _numpy_dtype(func: Any, dtype: np.dtype) -> np.dtype:
    return func(np.zeros(1, dtype.newbyteorder("="))).dtype


@reductions.register("sum")
class Sum(Reduction):
    name = "sum"
    fields = ("count", "sum")
    defined_when_empty = True

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return _numpy_dtype(np.sum, dtype)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        assert acc.sum is not None  # every field in ``fields`` is present
        return acc.sum, acc.count == 0


@reductions.register("min")
class Min(Reduction):
    name = "min"
    fields = ("count", "min")

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype.newbyteorder("=")

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        extreme = getattr(acc, self.name)  # the field named like the reduction: min or max
        assert extreme is not None
        return extreme, acc.count == 0


@reductions.register("max")
class Max(Min):
    name = "max"
    fields = ("count", "max")


@reductions.register("count")
class Count(Reduction):
    name = "count"
    fields = ("count",)
    defined_when_empty = True

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.intp)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        return acc.count, np.zeros(acc.count.shape, bool)


@reductions.register("mean")
class Mean(Reduction):
    name = "mean"
    fields = ("count", "sum")
    accumulate = "float"

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return _numpy_dtype(np.mean, dtype)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):
            return acc.sum / acc.count, acc.count == 0


@reductions.register("var")
class Var(Reduction):
    name = "var"
    fields = ("count", "sum", "m2")
    accumulate = "float"

    def __init__(self, ddof: int = 0, **options: Any) -> None:
        super().__init__(**options)
        if isinstance(ddof, bool) or not isinstance(ddof, (int, np.integer)) or ddof < 0:
            raise ValueError(f"ddof must be a non-negative integer, got {ddof!r}")
        self.ddof = int(ddof)

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return _numpy_dtype(np.var, dtype)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        dof = acc.count - self.ddof
        assert acc.m2 is not None
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.maximum(acc.m2, 0.0) / dof, dof <= 0


@reductions.register("std")
class Std(Var):
    name = "std"

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        variance, mask = super().finish(acc)
        return np.sqrt(variance), mask


def get_reduction(name: str, **options: Any) -> Reduction:
    """An instance of the reduction registered as ``name``, with its options."""
    if not isinstance(name, str):
        raise TypeError(f"a reduction is named by a string, got {name!r}")
    return reductions.get(name)(**options)


@reductions.register("weighted_sum")
class WeightedSum(Reduction):
    """xarray's ``weighted(w).sum()``: the sum of weight * value over valid elements (0 if none)."""

    name = "weighted_sum"
    fields = ("count", "sum", "wsum")
    accumulate = "float"
    defined_when_empty = True

    def result_dtype(self, dtype: np.dtype) -> np.dtype:
        return np.dtype(np.float64)

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        assert acc.sum is not None
        return acc.sum, np.zeros(acc.sum.shape, bool)


@reductions.register("weighted_mean")
class WeightedMean(WeightedSum):
    """xarray's ``weighted(w).mean()``: masked where the valid elements' weights sum to 0."""

    name = "weighted_mean"
    defined_when_empty = False

    def finish(self, acc: Partial) -> tuple[np.ndarray, np.ndarray]:
        assert acc.sum is not None and acc.wsum is not None
        with np.errstate(invalid="ignore", divide="ignore"):
            return acc.sum / acc.wsum, acc.wsum == 0

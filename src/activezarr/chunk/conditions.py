"""Conditions on decoded values (``x > 298.15``) as masks of stored values, exact.

A reduction "where the value is above 298.15" reduces the valid elements that meet the
condition; the others are missing. The storage side masks stored values (PROTOCOL.md's
``missing``), so the client turns each condition into the stored values that fail it. CF
decoding (``_Unsigned``, then ``scale * x + offset`` in floating point) is monotone in the
stored value, increasing or (a negative ``scale_factor``) decreasing, rounding included, so
the stored values meeting a comparison are one run of the stored dtype's values in order (the
complement of one for ``!=``). Its ends are found by bisecting the stored dtype's values in
order, each end tried with numpy's own comparison of its decoded value: the mask is numpy's
``decoded > 298.15`` exactly, dtype promotion and rounding included, and it travels as
``valid_min``/``valid_max`` (``missing_values`` for ``!=``), which every storage side applies.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .ranks import from_keys, key_dtype, sort_keys
from .spec import MissingSpec

#: The comparisons a condition may make, as numpy makes them.
COMPARISONS: dict[str, np.ufunc] = {">": np.greater, ">=": np.greater_equal, "<": np.less,
                                     "<=": np.less_equal, "==": np.equal, "!=": np.not_equal}
#: Most stored values one ``!=`` condition may exclude (they travel as ``missing_values``).
MAX_EXCLUDED = 1024
#: Stored values -> their decoded values (numpy arrays of one dtype each).
Decoder = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Condition:
    """``decoded <op> threshold``, compared by numpy as ``decoded_array > threshold`` is."""

    op: str
    threshold: Any

    def __post_init__(self) -> None:
        if self.op not in COMPARISONS:
            raise ValueError(f"a condition compares with one of {' '.join(COMPARISONS)}, "
                             f"not {self.op!r}")
        if isinstance(self.threshold, (bool, np.bool_)) or not isinstance(
                self.threshold, numbers.Real):
            raise TypeError(f"a condition compares the values with a number, not "
                            f"{type(self.threshold).__name__} {self.threshold!r}")

    def __str__(self) -> str:
        return f"x {self.op} {self.threshold!r}"


@dataclass(frozen=True)
class Where:
    """Conditions every element reduced must meet (``&``: all of them)."""

    conditions: tuple[Condition, ...]

    @classmethod
    def of(cls, where: Any) -> Where:
        """``where`` as given: a :class:`Where`, ``(op, threshold)`` or a list of those."""
        if isinstance(where, Where):
            return where
        if isinstance(where, tuple) and len(where) == 2 and isinstance(where[0], str):
            return cls((Condition(*where),))
        if isinstance(where, Iterable) and not isinstance(where, (str, bytes)):
            items = [cls.of(item).conditions for item in where]
            if items:
                return cls(tuple(c for conditions in items for c in conditions))
        raise TypeError(f"where takes (op, number), e.g. ('>', 298.15), or a list of them; "
                        f"got {where!r}")

    def __and__(self, other: Where) -> Where:
        if not isinstance(other, Where):
            return NotImplemented
        return Where(self.conditions + other.conditions)

    def __or__(self, other: Any) -> Where:
        raise TypeError("conditions join with & only: the values meeting either of two are "
                        "no interval of stored values; reduce each and combine")

    __ror__ = __or__

    def __invert__(self) -> Where:
        raise TypeError("a condition cannot be negated with ~: compare the other way "
                        "(x <= t for ~(x > t))")

    def __bool__(self) -> bool:
        raise TypeError("a condition has no truth value: join conditions with &, not 'and'")

    def __str__(self) -> str:
        return " & ".join(map(str, self.conditions))

    def mask(self, dtype: np.dtype, decode: Decoder, decreasing: bool) -> MissingSpec:
        """The stored values of ``dtype`` whose decoded values fail a condition (they are
        then missing); ``decreasing`` says decoding reverses the stored order."""
        spec = MissingSpec()
        for condition in self.conditions:
            spec = union(spec, _Domain(dtype, decode, decreasing).failing(condition))
        return spec


def union(a: MissingSpec, b: MissingSpec) -> MissingSpec:
    """The rules masking what ``a`` or ``b`` masks (bounds crossing mask everything)."""
    low = [v for v in (a.valid_min, b.valid_min) if v is not None]
    high = [v for v in (a.valid_max, b.valid_max) if v is not None]
    return MissingSpec(values=tuple(dict.fromkeys((*a.values, *b.values))),
                       valid_min=max(low) if low else None,
                       valid_max=min(high) if high else None, nan=a.nan or b.nan)


class _Domain:
    """The values of a stored dtype in order (NaN left out), as keys ``lo..hi`` that sort as
    the values do, and a condition's run of them."""

    def __init__(self, dtype: np.dtype, decode: Decoder, decreasing: bool) -> None:
        self.dtype = np.dtype(dtype).newbyteorder("=")
        self.decode = decode
        self.decreasing = decreasing
        if self.dtype.kind == "f":
            ends = sort_keys(np.array([-np.inf, np.inf], self.dtype))
            self.lo, self.hi = int(ends[0]), int(ends[1])
        else:
            self.lo, self.hi = 0, int(np.iinfo(key_dtype(self.dtype)).max)

    def value(self, key: int) -> Any:
        """The stored value of ``key`` as a Python number (exact in JSON)."""
        return from_keys(np.array([key], key_dtype(self.dtype)), self.dtype)[0].item()

    def meets(self, condition: Condition, key: int) -> bool:
        stored = from_keys(np.array([key], key_dtype(self.dtype)), self.dtype)
        with np.errstate(all="ignore"):
            return bool(COMPARISONS[condition.op](self.decode(stored), condition.threshold)[0])

    def first(self, test: Callable[[int], bool]) -> int:
        """The first key meeting ``test``, which holds from some key on (``hi + 1``: none)."""
        lo, hi = self.lo, self.hi + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if test(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def run(self, condition: Condition) -> tuple[int, int]:
        """The keys ``(first, last)`` of the stored values meeting ``condition`` (an ordering
        or ``==``); ``first > last`` when none does."""
        if condition.op == "==":
            above = self.run(Condition(">=", condition.threshold))
            below = self.run(Condition("<=", condition.threshold))
            return max(above[0], below[0]), min(above[1], below[1])
        rising = (condition.op in (">", ">=")) != self.decreasing
        if rising:  # met from some key on
            return self.first(lambda k: self.meets(condition, k)), self.hi
        return self.lo, self.first(lambda k: not self.meets(condition, k)) - 1

    def failing(self, condition: Condition) -> MissingSpec:
        """The rules masking the stored values whose decoded values fail ``condition``."""
        nan = self.dtype.kind == "f"
        if condition.op == "!=":
            first, last = self.run(Condition("==", condition.threshold))
            if last - first >= MAX_EXCLUDED:
                raise ValueError(f"{condition} excludes {last - first + 1} stored values, "
                                 f"more than {MAX_EXCLUDED}: reduce without it and subtract")
            return MissingSpec(values=tuple(self.value(k) for k in range(first, last + 1)))
        first, last = self.run(condition)
        if first > last:  # none meets it: crossed bounds mask every value
            return MissingSpec(valid_min=self.value(self.hi - 1),
                               valid_max=self.value(self.lo + 1), nan=nan)
        # NaN meets no ordering and no ==, as in numpy: masked too.
        return MissingSpec(valid_min=None if first == self.lo else self.value(first),
                           valid_max=None if last == self.hi else self.value(last), nan=nan)


@dataclass(frozen=True)
class PackedBins:
    """Histogram bins on stored values that count exactly what numpy's bins ``edges`` count of
    the decoded values: ``edges`` half-integers around runs of stored integers (so numpy's
    closed last bin changes nothing), and for each of their bins the decoded bin it counts
    (None: a gap between runs, counted by nothing)."""

    edges: tuple[float, ...]
    counts_for: tuple[int | None, ...]

    @classmethod
    def of(cls, edges: Sequence[float], dtype: np.dtype, decode: Decoder,
           decreasing: bool) -> PackedBins:
        """The stored bins of decoded ``edges`` (ascending) for values of integer ``dtype``
        decoded by ``decode``, monotone (``decreasing`` where it reverses the order)."""
        dtype = np.dtype(dtype)
        if dtype.kind not in "iu" or dtype.itemsize > 4:
            raise ValueError(f"histograms of values packed as {dtype} are not available (bin "
                             "edges on stored values are exact for integers of up to 32 bits)")
        # numpy's histogram compares values and edges in float64 (not as a condition does,
        # with the edge a float32 where the values are)
        domain = _Domain(dtype, lambda stored: decode(stored).astype(np.float64), decreasing)
        runs = []
        for i, (low, high) in enumerate(zip(edges, edges[1:])):
            last = i == len(edges) - 2  # numpy's last bin holds its right edge
            a = domain.run(Condition(">=", low))
            b = domain.run(Condition("<=" if last else "<", high))
            first, end = max(a[0], b[0]), min(a[1], b[1])
            if first <= end:
                runs.append((domain.value(first), domain.value(end), i))
        if not runs:  # nothing can fall in any bin: one bin below every stored value
            below = domain.value(domain.lo)
            return cls((below - 1.5, below - 0.5), (None,))
        runs.sort()
        stored: list[float] = [runs[0][0] - 0.5]
        counts_for: list[int | None] = []
        for first, end, i in runs:
            if stored[-1] != first - 0.5:
                stored.append(first - 0.5)
                counts_for.append(None)
            stored.append(end + 0.5)
            counts_for.append(i)
        return cls(tuple(stored), tuple(counts_for))

    def decoded_counts(self, counts: np.ndarray, nbins: int) -> np.ndarray:
        """The decoded bins' counts (bins last) from the stored bins' ``counts``."""
        out = np.zeros(counts.shape[:-1] + (nbins,), counts.dtype)
        for j, i in enumerate(self.counts_for):
            if i is not None:
                out[..., i] = counts[..., j]
        return out

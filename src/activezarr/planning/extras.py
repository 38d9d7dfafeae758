"""Weights and group labels of a reduction, cut into each chunk task's own share.

A weighted reduction sends each chunk the weights of its own region; a grouped one sends the
group label of each of its positions along the grouped dimension, and merges the chunk's
partials into the output cells of the groups present in it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..chunk.result import group_keys
from ..chunk.spec import MAX_GROUPS
from .chunks import ChunkTask
from .selection import DimSelection


@dataclass(frozen=True)
class Extras:
    """Weights over every dimension of a selection (size 1 where broadcast), and group labels
    (``-1``: in no group) along ``group_dim`` with ``ngroups`` groups in the output."""

    weights: np.ndarray | None = None
    group_dim: int | None = None
    labels: np.ndarray | None = None
    ngroups: int = 0

    @classmethod
    def build(cls, dims: Sequence[DimSelection], weights: Any = None,
              groups: Any = None) -> Extras:
        """From the user's ``weights`` (broadcastable to the selection's visible shape) and
        ``groups`` (``(axis, labels)`` or ``(axis, labels, ngroups)``, axis among the visible)."""
        visible = [d for d, sel in enumerate(dims) if not sel.dropped]
        # Chunks see positions in ascending order: a reversed dimension's weights and labels,
        # given in the user's order, are turned around.
        flip = tuple(i for i, d in enumerate(visible) if dims[d].reversed)
        full = None
        if weights is not None:
            w = np.asarray(weights, dtype=np.float64)
            shape = tuple(dims[d].size for d in visible)
            if w.ndim > len(shape):
                raise ValueError(f"weights of shape {w.shape} have more dimensions than the "
                                 f"selection {shape}")
            w = w.reshape((1,) * (len(shape) - w.ndim) + w.shape)
            try:
                np.broadcast_shapes(w.shape, shape)
            except ValueError:
                raise ValueError(f"weights of shape {w.shape} do not broadcast to the "
                                 f"selection's shape {shape}") from None
            if not np.isfinite(w).all():
                raise ValueError("weights cannot contain missing (NaN) or infinite values")
            w = np.flip(w, tuple(i for i in flip if w.shape[i] > 1))
            full = w.reshape(tuple(w.shape[visible.index(d)] if d in visible else 1
                                   for d in range(len(dims))))
        if groups is None:
            return cls(weights=full)
        axis, labels, *rest = groups
        if not -len(visible) <= axis < len(visible):
            raise np.exceptions.AxisError(int(axis), len(visible))
        dim = visible[axis % len(visible)]
        codes = np.asarray(labels)
        if dims[dim].reversed:
            codes = codes[::-1]
        if codes.dtype.kind not in "iu" or codes.shape != (dims[dim].size,):
            raise ValueError(f"group labels must be {dims[dim].size} integers (one per position "
                             f"along axis {axis}), got {codes.dtype} of shape {codes.shape}")
        ngroups = int(rest[0]) if rest else int(codes.max(initial=-1)) + 1
        if not 0 <= ngroups <= MAX_GROUPS or codes.max(initial=-1) >= ngroups:
            raise ValueError(f"group labels must lie below ngroups={ngroups} "
                             f"(at most {MAX_GROUPS})")
        return cls(weights=full, group_dim=dim, labels=np.maximum(codes, -1).astype(np.int64),
                   ngroups=ngroups)

    def box(self, spans: Sequence[tuple[int, int]]) -> Extras:
        """These extras for the part of the selection at ``spans`` (positions per dimension)."""
        weights = labels = None
        if self.weights is not None:
            weights = self.weights[tuple(slice(*s) if self.weights.shape[d] > 1 else slice(None)
                                         for d, s in enumerate(spans))]
        if self.labels is not None:
            assert self.group_dim is not None
            labels = self.labels[slice(*spans[self.group_dim])]
        return dataclasses.replace(self, weights=weights, labels=labels)

    def output_shape(self, shape: tuple[int, ...], kept: Sequence[int]) -> tuple[int, ...]:
        """The output shape with the grouped dimension's extent replaced by the groups."""
        if self.group_dim is None:
            return shape
        out = list(shape)
        out[list(kept).index(self.group_dim)] = self.ngroups
        return tuple(out)

    def attach(self, tasks: Iterable[ChunkTask], kept: Sequence[int]) -> Iterator[ChunkTask]:
        """``tasks`` with their own weights and labels, grouped regions pointing at groups."""
        if self.weights is None and self.labels is None:
            yield from tasks  # nothing to attach (most reductions): no work per chunk
            return
        for task in tasks:
            own = self.box(task.spans)
            task.weights = own.weights
            if own.labels is not None and self.group_dim is not None:
                task.labels = own.labels
                region = list(task.region)
                region[list(kept).index(self.group_dim)] = group_keys(own.labels)
                task.region = tuple(region)
            yield task

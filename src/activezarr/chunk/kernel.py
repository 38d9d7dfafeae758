"""The chunk kernel: stored bytes -> decoded array -> selection -> missing mask -> partials.

Pure numpy and numcodecs, no zarr: the same code runs in every storage-side process. What the
partials hold, and how they are computed, is the spec's aggregation's.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from .aggregation import Aggregation
from .codecs import CodecChain
from .missing import is_missing, missing_mask
from .partial import Partial
from .reductions import aggregation_of
from .spec import ChunkSpec, Selection

#: Decoded bytes reduced at once by :meth:`ChunkKernel.reduce_together`: well within one core's
#: L2 cache (1 MiB here), so that the copies that build the stack, the unshuffle and the
#: reduction each find it there. A 4 MiB stack, spilling to memory, took 25-30% more CPU per
#: chunk on 64 KiB netCDF chunks.
STACK_BYTES = 2**19


def kept_shape(shape: Sequence[int], axes: Collection[int]) -> tuple[int, ...]:
    """``shape`` without the reduced ``axes``: the shape of a partial (one output cell each)."""
    return tuple(n for i, n in enumerate(shape) if i not in axes)


class ChunkKernel:
    """Decodes and reduces the chunks of one array; built once, reused for every chunk."""

    def __init__(self, spec: ChunkSpec) -> None:
        self.spec = spec
        self.dtype = np.dtype(spec.dtype)
        self.chain = CodecChain(spec.codecs)
        self.nbytes = math.prod(spec.shape) * self.dtype.itemsize
        self.axes = spec.reduced_axes
        self.aggregation = aggregation_of(spec)
        #: Chunks :meth:`reduce_together` decodes into one array at most.
        self.stack_chunks = max(1, STACK_BYTES // max(1, self.nbytes))

    def empty(self, shape: tuple[int, ...]) -> Partial:
        """The identity partial of ``shape`` (what the partials of chunks merge into)."""
        return self.aggregation.empty(shape)

    def read(self, result: Mapping[str, Any]) -> Partial:
        """The partial a storage side's response map stands for."""
        # The request said the chunk's order as C or F (a transpose never reaches a server else).
        return self.aggregation.decode(result, self.spec.memory_order or "C", self.spec.axis)

    def decode(self, raw: Any, key: str | None = None) -> np.ndarray:
        """The chunk as an array of its logical shape (stored order undone)."""
        return self._logical(self.chain.decode(raw, self.nbytes, key).view(self.dtype))

    def _logical(self, flat: np.ndarray) -> np.ndarray:
        """Elements in stored order, one chunk per row of ``flat`` (or one chunk, 1-D), as
        arrays of the chunk's logical shape."""
        order, shape = self.spec.order, self.spec.shape
        lead = flat.shape[:-1]
        if order == "C":
            return flat.reshape((*lead, *shape))
        stored = tuple(reversed(range(len(shape)))) if order == "F" else tuple(order)
        data = flat.reshape((*lead, *(shape[i] for i in stored)))
        return data.transpose((*range(len(lead)), *(len(lead) + int(i)
                                                    for i in np.argsort(stored))))

    def reduce(self, raw: Any, selection: Selection, key: str | None = None, *,
               weights: np.ndarray | None = None, labels: np.ndarray | None = None,
               spans: Sequence[tuple[int, int]] = ()) -> Partial:
        """Partials of ``selection`` (``((start, stop, step), ...)``) of one stored chunk.

        ``weights`` (broadcastable to the selection) and ``labels`` (one group label per
        selected position along ``spec.group_axis``) are what weighted and grouped specs need;
        ``spans`` where the selection sits in the whole one (positional aggregations).
        """
        data = self.decode(raw, key)[tuple(slice(*s) for s in selection)]
        return self.partial(data, weights, labels, spans)

    def stacks(self, weights: np.ndarray | None, labels: np.ndarray | None) -> bool:
        """Whether a chunk with these weights and labels may be reduced together with others
        of the same selection landing in the same output cells (:meth:`reduce_together`)."""
        return weights is None and labels is None and not self.aggregation.positional

    def reduce_together(self, raws: Sequence[Any], selection: Selection,
                        keys: Sequence[str | None]) -> Partial:
        """The merged partial of the same ``selection`` of chunks (at most
        :attr:`stack_chunks`) landing in the same output cells, decoded into one array and
        reduced at once.

        The same state as merging each chunk's partial, with one numpy call per step for all
        of them instead of one per chunk: between threads of one process, each such call is a
        hand-off of the GIL, which on small chunks cost more than the arithmetic.
        """
        rows = self.chain.decode_stack(raws, self.nbytes, keys).view(self.dtype)
        stack = self._logical(rows)[(slice(None), *(slice(*s) for s in selection))]
        return self.aggregation.reduce(stack, self._missing(stack),
                                       (0, *(a + 1 for a in self.axes)))

    def partial(self, data: np.ndarray, weights: np.ndarray | None = None,
                labels: np.ndarray | None = None, spans: Sequence[tuple[int, int]] = ()
                ) -> Partial:
        """Partials of selected, decoded ``data``, weighted and grouped as the spec says."""
        spec = self.spec
        if spec.weighted != (weights is not None):
            raise ValueError("weights are needed by, and only by, a weighted spec")
        if (spec.group_axis is not None) != (labels is not None):
            raise ValueError("group labels are needed by, and only by, a grouped spec")
        if weights is not None and (weights.ndim != data.ndim or any(
                w not in (1, n) for w, n in zip(weights.shape, data.shape))):
            raise ValueError(f"weights of shape {weights.shape} do not broadcast to the "
                             f"selection's {data.shape}")
        mask = self._missing(data)
        aggregation = self.at(spans)
        if labels is not None:
            assert spec.group_axis is not None
            if labels.shape != (data.shape[spec.group_axis],):
                raise ValueError(
                    f"{labels.shape[0] if labels.ndim == 1 else labels.shape} group labels for "
                    f"{data.shape[spec.group_axis]} positions along axis {spec.group_axis}")
            return aggregation.grouped(data, mask, self.axes, spec.group_axis, labels, weights)
        return aggregation.reduce(data, mask, self.axes, weights)

    def _missing(self, data: np.ndarray) -> np.ndarray | None:
        """The mask of ``data``'s missing elements; None when none is missing (numpy's plain
        reductions are twice as fast as masked ones)."""
        mask = missing_mask(data, self.spec.missing)
        return mask if mask is not None and mask.any() else None

    def at(self, spans: Sequence[tuple[int, int]]) -> Aggregation:
        """The aggregation of a chunk whose selection sits at ``spans`` in the whole one."""
        return self.aggregation.at([start for start, _ in spans]) if spans else self.aggregation

    def fill(self, value: Any, selection: Selection, *, weights: np.ndarray | None = None,
             labels: np.ndarray | None = None, spans: Sequence[tuple[int, int]] = ()
             ) -> Partial:
        """Partials of ``selection`` of a chunk that was never written (all ``value``)."""
        shape = tuple(
            len(range(*slice(*s).indices(n))) for s, n in zip(selection, self.spec.shape)
        )
        if weights is not None or labels is not None:
            return self.partial(np.full(shape, value, self.dtype), weights, labels, spans)
        return self.at(spans).constant(value, shape, self.axes,
                                         is_missing(value, self.dtype, self.spec.missing))

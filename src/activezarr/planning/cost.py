"""What each path would move, before anything runs: the active path's partials against a plain
read of the chunks, from the layout, the output shape, the fields and the batching alone.

The figures are for the network to the client, framing included; the active server's answers
are modelled as ``combine`` and ``lean`` make them (PROTOCOL.md's Batch). A plain read's bytes
are the chunks' decoded size when they are compressed (the stored size is unknown before a
listing): that errs towards the active path, never away from it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..chunk.result import COMPRESS_FROM, OP_FIELDS
from ..chunk.spec import ChunkSpec
from ..protocol import choose_op
from .array_layout import ArrayLayout
from .chunks import _pieces, chunk_count
from .selection import DimSelection

#: An HTTP response's status line and headers: an active server's 200; an S3 GET's
#: (measured against moto; AWS sends a few headers fewer).
FRAMING = 125
S3_FRAMING = 550
#: CBOR keys and small values of one result map; of one ``{"combined": n, ...}`` answer.
RESULT_MAP = 150
COMBINED_ITEM = 28


@dataclass(frozen=True)
class Traits:
    """How a backend answers: whether its storage side merges partials sharing an output
    region (and packs counts, and answers unwritten chunks itself), and chunks per call."""

    combines: bool
    batch_chunks: int


@dataclass(frozen=True)
class Estimate:
    """The bytes each path would move to the client, and the one the planner picks."""

    chunks: int
    partials: int
    requests: int
    active_bytes: int
    plain_bytes: int

    @property
    def path(self) -> str:
        return "plain" if self.active_bytes > self.plain_bytes else "active"

    @property
    def reason(self) -> str:
        """Why the path was picked, in words for the report."""
        verb = "would move more than" if self.path == "plain" else "moves less than"
        return (f"the active path {verb} a plain read: about {self.active_bytes} bytes of "
                f"partials against {self.plain_bytes} bytes of chunks")

    def __str__(self) -> str:
        return (f"{self.path}: {self.chunks} chunks, {self.partials} partials in "
                f"{self.requests} requests; active ≈ {self.active_bytes} B, plain ≈ "
                f"{self.plain_bytes} B")


def estimate(layout: ArrayLayout, dims: Sequence[DimSelection], spec: ChunkSpec,
             traits: Traits) -> Estimate:
    """The bytes of both paths for reducing ``dims`` of ``layout`` as ``spec`` says."""
    reduced = spec.reduced_axes
    per_dim = [_pieces(sel, n) for sel, n in zip(dims, layout.chunk_shape)]
    k = chunk_count(layout, dims)
    kept = [d for d in range(len(dims)) if d not in reduced]
    regions = math.prod(len(per_dim[d]) for d in kept)
    stacked = math.prod(len(per_dim[d]) for d in reduced)
    out_cells = math.prod(dims[d].size for d in kept)
    batch = max(1, traits.batch_chunks)
    if traits.combines and k:
        starts = np.arange(0, k, batch)
        partials = regions + int(np.count_nonzero(starts % stacked))
        cells = out_cells * partials / max(1, regions)
    else:
        partials, cells = k, out_cells * stacked
    requests = -(-k // batch)
    # ``lean`` compresses only arrays of COMPRESS_FROM bytes or more.
    compressed = traits.combines and 8 * cells / max(1, partials) >= COMPRESS_FROM
    cell_bytes = _cell_bytes(layout, spec, dims, traits.combines, stacked, batch, compressed)
    answers = partials * RESULT_MAP + (k - partials) * COMBINED_ITEM
    active = int(cells * cell_bytes) + answers + requests * FRAMING
    plain = k * (layout.chunk_nbytes + S3_FRAMING)
    return Estimate(k, partials, requests, active, plain)


def _cell_bytes(layout: ArrayLayout, spec: ChunkSpec, dims: Sequence[DimSelection],
                lean: bool, stacked: int, batch: int, compressed: bool) -> float:
    """Bytes per output cell of one partial: the fields the op returns, the counts as sent."""
    op = choose_op(spec.fields, ("stats",))
    assert op is not None
    itemsize = layout.dtype.itemsize
    per_chunk = math.prod(min(dims[d].size, layout.chunk_shape[d]) for d in spec.reduced_axes)
    top = per_chunk * (min(stacked, batch) if lean else 1)
    sum_bytes = 8 * (_zstd_ratio(layout.dtype, top) if compressed else 1.0)
    sizes = {"sum": sum_bytes, "min": itemsize, "max": itemsize, "m2": 8, "count": 0}
    total = float(sum(sizes[f] for f in OP_FIELDS[op]))
    width = next(n for n in (1, 2, 4, 8) if top < 256 ** n)
    if not lean:
        return total + width + 1  # a CBOR list of integers
    # Nothing can be missing: every count is the same, sent as one number.
    return total if spec.missing.is_empty else total + width


def _zstd_ratio(dtype: np.dtype, terms: int) -> float:
    """What zstd leaves of 64-bit sums of ``terms`` values of ``dtype`` (``lean`` compresses
    them): the significant bits of such a sum, of 64 (zstd gains back about what sign and
    exponent take). Measured on noisy float32 fields (sums of 1 to 256 terms) within 15%;
    data with fewer significant bits (rounded, packed) compress further, so the estimate
    errs high for them."""
    if dtype.kind == "f":
        bits = np.finfo(dtype).nmant + 1
    else:
        bits = 8 * dtype.itemsize
    return min(1.0, (bits + math.log2(max(1, terms))) / 64)

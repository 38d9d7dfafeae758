"""What each path would move, before anything runs: the active path's partials against a plain
read of the chunks, from the layout, the output shape, the fields and the batching alone.

Each backend describes its storage side's answers in :class:`Traits`: whether partials of one
output region merge within a request, how many chunks a request carries, how a partial is
encoded (``lean`` CBOR, plain CBOR, or arrays handed over in memory), the framing per answer and
what the run reads besides the answers (the capability document, probes for unwritten chunks).
The figures are what ``Report.bytes_from_storage`` counts: storage to client. Request bodies
are not counted there; the weights and group labels they carry are estimated apart
(``request_bytes``) and weigh in the choice of path, since they cross the network too.

A plain read's bytes are the chunks' stored size, unknown before a listing where they are
compressed: float chunks are taken to keep their mantissas' bits (noise does; smooth or
rounded fields compress further), others their decoded size. Both err towards the active path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ..chunk.codec_bounds import COMPRESSORS
from ..chunk.reductions import aggregation_of
from ..chunk.result import COMPRESS_FROM, group_keys
from ..chunk.spec import ChunkSpec
from .array_layout import ArrayLayout
from .chunks import _Piece, _pieces, chunk_count
from .extras import Extras
from .selection import DimSelection

#: An HTTP response's status line and headers: an active server's 200; an S3 GET's
#: (measured against moto; AWS sends a few headers fewer).
FRAMING = 125
S3_FRAMING = 550
#: CBOR keys and small values of one result map (lean, as our server sends it; plain, as
#: the OSTs do); of one ``{"combined": n, ...}`` answer.
RESULT_MAP = 122
PLAIN_RESULT_MAP = 86
COMBINED_ITEM = 28
#: Of the lean result map, ``"stored_bytes": n`` (the OSTs and the OSS leave it out: their
#: requests state the bytes they read).
STORED_BYTES_FIELD = 18
#: The capability document of our active server with its framing, fetched once per process.
CAPABILITIES = 1_050
#: An S3 HEAD answer (framing only): s3fs asks one before reading a whole object. One key of
#: an S3 listing (XML); a listing page's framing.
S3_HEAD = 500
S3_LISTED_KEY = 235
S3_PAGE = 1_000
#: A HEAD costs about as much as this many keys of a listing (bytes; a page lists 1,000).
HEADS_PER_LISTED_KEY = 4
#: JSON characters per weight (a float64 with its separator) and per group label.
JSON_WEIGHT = 20
JSON_LABEL = 3
#: At most the characters of a packed weight (``weights-packed``): the base64 of a float64 that
#: zstd does not shrink (brackets of quantile rounds, whole numbers, take 0.1 to 2.5 bytes).
PACKED_WEIGHT = 11
#: What zstd leaves of packed counts (few distinct values, long runs).
COUNTS_ZSTD = 0.05
#: Above this many chunks the batches' output regions are counted in closed form, not one by
#: one (grouped regions are then taken as never shared by two runs of chunks).
_ENUMERATE_UP_TO = 2**22

Encoding = Literal["lean", "cbor", "memory"]


@dataclass(frozen=True)
class Traits:
    """How a backend's storage side answers, as the cost model needs it.

    ``encoding``: ``lean`` (PROTOCOL.md's lean CBOR: counts packed, large arrays zstd),
    ``cbor`` (counts a CBOR list), ``memory`` (partials handed over as arrays, int64 counts).
    ``answers_per_chunk``: answers each chunk makes (several where parts of it reduce apart).
    ``setup_bytes``: read once before the chunks (a capability document not yet fetched).
    ``servers``: servers a batch's chunks spread over, each answering once per output region
    it holds (the ost path's OSTs; one active server takes a whole batch).
    ``lookup_bytes``: read per stored object to find where it lives (the ost path's layouts),
    and ``lookup_framing`` once per batch (the fixed part of one layouts answer).
    ``combined_item``: the answer of a request merged into another's (``combine``).
    ``probes``: unwritten chunks found by one HEAD per key or a listing (s3 without ``absent``).
    ``plain_framing``: framing of each chunk read plainly. ``moves_chunks``: the backend
    itself reads the chunks (the client backend): active and plain are the same read.
    ``index_framing``: framing of each shard index read, where the report counts those reads
    (over S3); None where it does not (local, or a file system the client does not meter).
    ``local``: nothing crosses a network (the file backend's pool hands partials over in this
    process); the estimate is made and reported, but a plain read would save no link, so the
    path is kept. ``packs_weights``: weights travel packed (``weights-packed``), once per batch
    for the chunks that share them (stacked along the dimensions they are broadcast over).
    """

    combines: bool
    batch_chunks: int
    encoding: Encoding = "lean"
    framing: int = FRAMING
    result_map: int = RESULT_MAP
    answers_per_chunk: int = 1
    setup_bytes: int = 0
    servers: int = 1
    lookup_bytes: int = 0
    lookup_framing: int = 0
    combined_item: int = COMBINED_ITEM
    probes: bool = False
    plain_framing: int = S3_FRAMING + S3_HEAD
    moves_chunks: bool = False
    local: bool = False
    index_framing: int | None = None
    packs_weights: bool = False


@dataclass(frozen=True)
class Estimate:
    """The bytes each path would move, and the one the planner picks."""

    chunks: int
    partials: int
    requests: int
    active_bytes: int
    plain_bytes: int
    #: Bytes the active path sends storage-wards that grow with the data: weights, labels.
    request_bytes: int = 0
    #: Of ``active_bytes``, those read once per process (the capability document): counted in
    #: this run's report, but left out of the choice, as every later reduction gains by them.
    setup_bytes: int = 0
    #: Handed over in this process: the path is kept whatever the bytes (``Traits.local``).
    local: bool = False

    @classmethod
    def of_rounds(cls, rounds: Sequence[Estimate]) -> Estimate:
        """The estimate of reductions run one after another over the same chunks (a
        quantile's rounds): their answers and requests add up; a plain read reads the chunks
        once and does every round in the client."""
        first = rounds[0]
        return cls(sum(r.chunks for r in rounds), sum(r.partials for r in rounds),
                   sum(r.requests for r in rounds), sum(r.active_bytes for r in rounds),
                   first.plain_bytes, sum(r.request_bytes for r in rounds), first.setup_bytes,
                   first.local)

    @property
    def path(self) -> str:
        marginal = self.active_bytes - self.setup_bytes + self.request_bytes
        return "plain" if marginal > self.plain_bytes and not self.local else "active"

    @property
    def reason(self) -> str:
        """Why the path was picked, in words for the report."""
        if self.local:
            return (f"nothing crosses a network: about {self.active_bytes} bytes of partials "
                    f"are handed over here (a plain read: {self.plain_bytes} bytes of chunks)")
        total = self.active_bytes - self.setup_bytes + self.request_bytes
        verb = ("would move more than" if self.path == "plain" else
                "moves as much as" if total == self.plain_bytes else "moves less than")
        sent = (f" (and {self.request_bytes} bytes of weights and labels sent)"
                if self.request_bytes else "")
        return (f"the active path {verb} a plain read: about {self.active_bytes} bytes of "
                f"partials{sent} against {self.plain_bytes} bytes of chunks")

    def __str__(self) -> str:
        sent = f" + {self.request_bytes} B sent" if self.request_bytes else ""
        return (f"{self.path}: {self.chunks} chunks, {self.partials} partials in "
                f"{self.requests} requests; active ≈ {self.active_bytes} B{sent}, plain ≈ "
                f"{self.plain_bytes} B")


@dataclass(frozen=True)
class _PartialsSent:
    """The partials the storage side sends back and their output cells, in all."""

    partials: int
    cells: float


def estimate(layout: ArrayLayout, dims: Sequence[DimSelection], spec: ChunkSpec,
             traits: Traits, extras: Extras | None = None) -> Estimate:
    """The bytes of both paths for reducing ``dims`` of ``layout`` as ``spec`` says, with the
    weights and group labels of ``extras``."""
    extras = extras or Extras()
    k = chunk_count(layout, dims)
    indexes = _indexes(layout, dims, traits)  # read on either path
    plain = int(k * (stored_chunk_bytes(layout) + traits.plain_framing)) + indexes
    if traits.moves_chunks:
        return Estimate(k, k, k, plain, plain, local=traits.local)
    batch = max(1, traits.batch_chunks)
    parts = traits.answers_per_chunk
    sent = _partials_sent(layout, dims, spec, extras, batch, traits.combines, traits.servers,
                          parts)
    partials = sent.partials
    batches = -(-k // batch)
    requests = batches * min(parts * batch, traits.servers) if traits.combines \
        else batches * parts
    cells = sent.cells
    per_partial = cells / max(1, partials)
    stacked = k / max(1, sent.partials) if traits.combines else 1
    values = cells * _cell_bytes(layout, spec, traits.encoding, per_partial, stacked)
    if traits.encoding == "memory":
        overhead = 0
    else:
        overhead = partials * traits.result_map + requests * traits.framing
        if traits.combines:
            overhead += max(0, k * parts - partials) * traits.combined_item
    active = (int(values) + overhead + traits.setup_bytes + _probes(layout, k, traits)
              + _objects(layout, dims, k) * traits.lookup_bytes
              + batches * traits.lookup_framing + indexes)
    return Estimate(k, partials, requests, active, plain,
                    _sent(layout, dims, extras, traits.packs_weights and batch or 0),
                    traits.setup_bytes, traits.local)


def _partials_sent(layout: ArrayLayout, dims: Sequence[DimSelection], spec: ChunkSpec,
                   extras: Extras, batch: int, combines: bool, servers: int, parts: int
                   ) -> _PartialsSent:
    """Partials and output cells the chunks' answers hold, batch by batch.

    Chunks come region by region (:func:`.chunks.plan_chunks`); where the storage side
    combines, each of the ``servers`` a batch's chunks (``parts`` answers each) spread over
    answers once per output region it holds. A grouped dimension's region is the set of groups
    present, so chunks far apart (every January) share one.
    """
    reduced = spec.reduced_axes
    per_dim = [_pieces(sel, n) for sel, n in zip(dims, layout.chunk_shape)]
    kept = [d for d in range(len(dims)) if d not in reduced]
    k = chunk_count(layout, dims)
    stacked = math.prod(len(per_dim[d]) for d in reduced)
    ids, cells = _regions(per_dim, kept, extras)
    if not combines:
        return _PartialsSent(k * parts, float(cells[ids].sum()) * stacked * parts)
    if k and k <= _ENUMERATE_UP_TO:
        labels = np.repeat(ids, stacked)
        pairs, chunks = np.unique(np.arange(k) // batch * (int(ids.max()) + 1) + labels,
                                  return_counts=True)
        answering = np.minimum(chunks * parts, servers)
        return _PartialsSent(int(answering.sum()),
                        float((cells[pairs % (int(ids.max()) + 1)] * answering).sum()))
    regions = len(ids)
    runs = regions + int(np.count_nonzero(np.arange(0, k, batch) % stacked)) if k else 0
    partials = runs * min(servers, max(1, k // max(1, runs)) * parts)
    return _PartialsSent(partials, float(cells[ids].mean()) * partials if regions else 0.0)


def _regions(per_dim: Sequence[Sequence[_Piece]], kept: Sequence[int],
             extras: Extras) -> tuple[np.ndarray, np.ndarray]:
    """For each run of chunks sharing output cells, in order, its region's label; and each
    label's output cells. A grouped dimension's chunks are labelled by the groups they hold."""
    if not kept:
        return np.zeros(1, np.int64), np.ones(1)
    labels = [np.arange(len(per_dim[d])) for d in kept]
    sizes = [np.array([p.out[1] - p.out[0] for p in per_dim[d]], np.float64) for d in kept]
    if extras.group_dim is not None and extras.labels is not None:
        i = kept.index(extras.group_dim)
        present = [frozenset(group_keys(extras.labels[slice(*p.out)]).tolist())
                   for p in per_dim[extras.group_dim]]
        seen: dict[frozenset[int], int] = {}
        labels[i] = np.array([seen.setdefault(s, len(seen)) for s in present], np.int64)
        sizes[i] = np.array([len(s) for s in present], np.float64)
    ids = np.ravel_multi_index([g.ravel() for g in np.meshgrid(*labels, indexing="ij")],
                               [int(lab.max(initial=0)) + 1 for lab in labels])
    cells = np.ones(len(ids))
    for grid in np.meshgrid(*sizes, indexing="ij"):
        cells *= grid.ravel()
    per_label = np.zeros(int(ids.max(initial=0)) + 1)
    per_label[ids] = cells
    return ids, per_label


def _cell_bytes(layout: ArrayLayout, spec: ChunkSpec, encoding: Encoding,
                per_partial: float, stacked: float) -> float:
    """Bytes per output cell of one partial: the state's arrays as its aggregation sends
    them, the counts as sent."""
    aggregation = aggregation_of(spec)
    per_chunk = math.prod(layout.chunk_shape[d] for d in spec.reduced_axes)
    top = per_chunk * max(1.0, stacked)
    width = next(n for n in (1, 2, 4, 8) if top < 256 ** n)
    if encoding == "memory":
        return 8 + aggregation.cell_bytes(memory=True, zstd_ratio=1.0)  # int64 counts
    lean = encoding == "lean"
    # ``lean`` compresses arrays of COMPRESS_FROM bytes or more.
    compressed = lean and 8 * per_partial >= COMPRESS_FROM
    ratio = _zstd_ratio(layout.dtype, top) if compressed else 1.0
    total = aggregation.cell_bytes(memory=False, zstd_ratio=ratio)
    if not lean:
        return total + width + 1  # a CBOR list of integers
    if spec.missing.is_empty:
        return total  # nothing can be missing: every count is the same, sent as one number
    packed = width * per_partial >= COMPRESS_FROM
    return total + width * (COUNTS_ZSTD if packed else 1.0)


def stored_chunk_bytes(layout: ArrayLayout) -> float:
    """A chunk's stored bytes, as far as the metadata tells."""
    if layout.chunk_nbytes < 1024 or not any(c.get("id") in COMPRESSORS for c in layout.codecs):
        return layout.chunk_nbytes  # a small block gains too little to pay the frame
    return layout.chunk_nbytes * _zstd_ratio(layout.dtype, 1, width=8 * layout.dtype.itemsize)


def _zstd_ratio(dtype: np.dtype, terms: float, width: int = 64) -> float:
    """What zstd leaves of ``width``-bit sums of ``terms`` values of ``dtype`` (``lean``
    compresses 64-bit ones): the significant bits of such a sum, of ``width`` (zstd gains
    back about what sign and exponent take, and a little more). Measured on noisy float32 fields (sums of 1 to 256 terms) within 15%;
    data with fewer significant bits (rounded, packed) compress further, so the estimate
    errs high for them."""
    if dtype.kind == "f":
        bits = np.finfo(dtype).nmant + 1
    else:
        bits = 8 * dtype.itemsize
    return min(1.0, (bits + math.log2(max(1.0, terms))) / width)


def _probes(layout: ArrayLayout, chunks: int, traits: Traits) -> int:
    """Bytes of finding which chunks were written, as the s3 backend does without ``absent``:
    one HEAD per chunk for a small part of the array, else one listing of it."""
    if not traits.probes or not chunks:
        return 0
    if chunks * HEADS_PER_LISTED_KEY <= layout.stored_objects:
        return chunks * S3_HEAD
    objects = layout.stored_objects
    return objects * S3_LISTED_KEY + -(-objects // 1000) * S3_PAGE


def _indexes(layout: ArrayLayout, dims: Sequence[DimSelection], traits: Traits) -> int:
    """Bytes of the shard indexes read to find the inner chunks, one per shard touched."""
    index = layout.shard_index
    if index is None or traits.index_framing is None:
        return 0
    return _objects(layout, dims, 0) * (index.nbytes + traits.index_framing)


def _objects(layout: ArrayLayout, dims: Sequence[DimSelection], chunks: int) -> int:
    """Stored objects the selection touches: its shards, or its ``chunks`` when unsharded."""
    index = layout.shard_index
    if index is None:
        return chunks
    return math.prod(
        len({p.chunk // n for p in _pieces(sel, c)})
        for sel, c, n in zip(dims, layout.chunk_shape, index.chunks_per_shard))


def _sent(layout: ArrayLayout, dims: Sequence[DimSelection], extras: Extras,
          packed_batch: int = 0) -> int:
    """Bytes of weights and group labels the requests carry, over all chunks: JSON, or packed
    in batches of ``packed_batch`` chunks (0: not packed)."""
    total = 0
    per_dim = [_pieces(sel, n) for sel, n in zip(dims, layout.chunk_shape)]
    if extras.weights is not None:
        # each chunk gets the weights of its region; a broadcast dimension sends one
        stacked = math.prod(len(per_dim[d]) for d in range(len(dims))
                            if extras.weights.shape[d] == 1)
        weights = math.prod(sel.size for d, sel in enumerate(dims)
                            if extras.weights.shape[d] > 1) * stacked
        if packed_batch:  # chunks stacked along broadcast dimensions send theirs once a batch
            total += PACKED_WEIGHT * weights // min(packed_batch, stacked)
        else:
            total += JSON_WEIGHT * weights
    if extras.labels is not None and extras.group_dim is not None:
        others = math.prod(len(p) for d, p in enumerate(per_dim) if d != extras.group_dim)
        total += JSON_LABEL * dims[extras.group_dim].size * others
    return total

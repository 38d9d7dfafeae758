"""What the processes of the simulated file system say to each other; no I/O.

Reductions speak PROTOCOL.md (:mod:`activezarr.protocol`). The one extension, ``extents``,
asks an OST to reduce the runs of a chunk it holds instead of a byte range of one object.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from ...chunk.reductions import BUILTIN_AGGREGATIONS
from ...protocol import BatchItem, ChunkRequest
from .striping import Extent, FileLayout

#: Header carrying the cluster's token, which every call but ``/healthz`` must show.
TOKEN_HEADER = "X-Cluster-Token"
#: Environment variable handing the token to the cluster's processes and to clients.
TOKEN_VARIABLE = "ACTIVEZARR_OST_TOKEN"
#: Most stripes one file may have, so that no read or layout walks millions of extents.
MAX_STRIPES = 1 << 16
#: Most bytes one read may ask of an OST.
MAX_READ = 1 << 30
Offset = Annotated[StrictInt, Field(ge=0, le=2**62)]
#: The PROTOCOL.md operations (every built-in aggregation, no ``select``) and extensions the
#: OSTs and the OSS serve; OSTs add ``extents``.
OPS = tuple(BUILTIN_AGGREGATIONS)
EXTENSIONS = ("stats", "codecs", "accumulate", "accumulate-float", "missing-combined",
              "dtypes", "healthz", "weights", "groups", "missing-nan", "batch", "combine",
              "lean", "weights-packed")
#: Most items in one ``/v2/batch`` to an OST or the OSS, and most bytes of its body.
MAX_BATCH = 1024
MAX_BATCH_BODY = 32 * 2**20
#: Bytes the batches of one OST or OSS hold at once (reads, decoding, results), and how long
#: an item waits for them before its answer is a 503.
MAX_MEMORY = 1 << 30
MEMORY_WAIT = 30.0


def partial_bytes(fields: int, cells: int) -> int:
    """Memory a batch reserves for one partial before reading (what the client sizes its
    requests by): a count and each of ``fields`` per output cell, and the answer's map."""
    return 2 * 8 * fields * cells + 256
#: The ``limits`` of the capability document.
LIMITS = {"max_batch": MAX_BATCH, "max_body": MAX_BATCH_BODY, "max_memory": MAX_MEMORY}
#: Header naming the link a read crosses: ``storage`` (OST to OSS) or ``lan`` (to the client).
LINK_HEADER = "X-Link"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterMap(_Model):
    """The MDS's description of the cluster: where every server is and the defaults."""

    osts: tuple[str, ...]
    oss: str | None = None
    stripe_size: int = Field(gt=0)
    stripe_count: int = Field(ge=-1)
    lan_rate: float | None = None  # bytes per second between storage and the client


class CreateRequest(_Model):
    """Open a new version of ``path``; ``None`` settings take the cluster's defaults."""

    path: str = Field(min_length=1)
    size: int = Field(ge=0)
    stripe_size: int | None = Field(None, gt=0)
    stripe_count: int | None = Field(None, ge=-1)


class CommitRequest(_Model):
    """Make a created layout the current version of ``path`` (the objects are written)."""

    path: str = Field(min_length=1)
    layout: FileLayout


class PathRequest(_Model):
    path: str  # "" is the root


class PathsRequest(_Model):
    """Paths to stat at once, at most a batch's worth."""

    paths: list[str] = Field(max_length=MAX_BATCH)


class Entry(_Model):
    """A file or a directory, as ``ls`` and ``info`` return them."""

    name: str
    type: str  # "file" or "directory"
    size: int = 0
    layout: FileLayout | None = None


class ReadRequest(_Model):
    """Byte ranges ``[offset, length]`` of one object, returned concatenated."""

    ranges: list[tuple[Offset, Offset]] = Field(max_length=MAX_STRIPES)

    @model_validator(mode="after")
    def _bounded(self) -> ReadRequest:
        total = sum(length for _, length in self.ranges)
        if total > MAX_READ:
            raise ValueError(f"ranges ask for {total} bytes, more than {MAX_READ}")
        return self


class ObjectRanges(ReadRequest):
    """Byte ranges of the object ``fid``."""

    fid: str = Field(min_length=1, max_length=256)


class ReadManyRequest(_Model):
    """Byte ranges of many objects of one OST, returned concatenated in order: the OSS
    gathers a batch's chunks with one such read per OST."""

    reads: list[ObjectRanges] = Field(max_length=MAX_BATCH)

    @model_validator(mode="after")
    def _bounded(self) -> ReadManyRequest:
        total = sum(length for read in self.reads for _, length in read.ranges)
        if total > MAX_READ:
            raise ValueError(f"reads ask for {total} bytes, more than {MAX_READ}")
        return self


class PartRequest(ChunkRequest):
    """A PROTOCOL.md request for the runs of one chunk held by one OST (``extents``).

    ``url`` names the object (``.../objects/{fid}``); each extent is ``[offset in the object,
    length, offset in the chunk]``. Uncompressed chunks may be split over OSTs: the response
    adds ``loose``, the ``[offset in the chunk, bytes]`` of elements cut by the extents' ends.
    A compressed chunk, and a weighted or grouped request, must be wholly in the extents.
    """

    extents: list[tuple[Offset, Offset, Offset]] = Field(min_length=1, max_length=MAX_STRIPES)

    @model_validator(mode="after")
    def _extents_in_chunk(self) -> PartRequest:
        nbytes = self.decoded_nbytes if not self.codec_configs() else None
        total = sum(length for _, length, _ in self.extents)
        if (self.weights is not None or self.groups is not None) and not self._whole(nbytes):
            raise ValueError("weights and groups need the whole chunk in the extents (a chunk "
                             "spread over OSTs goes to the OSS)")
        if total > MAX_READ:
            raise ValueError(f"extents cover {total} bytes, more than {MAX_READ}")
        if nbytes is not None and any(start + length > nbytes
                                      for _, length, start in self.extents):
            raise ValueError(f"extents reach past the chunk's {nbytes} bytes")
        return self

    def _whole(self, nbytes: int | None) -> bool:
        """Whether the extents hold the chunk from its first byte, without a gap (and all of
        it, where its size is known)."""
        position = 0
        for _, length, start in sorted(self.extents, key=lambda e: e[2]):
            if start != position:
                return False
            position += length
        return nbytes is None or position == nbytes

    @staticmethod
    def extents_of(extents: list[Extent]) -> list[tuple[int, int, int]]:
        """The ``extents`` field for extents of one chunk on one OST."""
        return [(e.offset, e.length, e.start) for e in extents]


class PartItem(BatchItem, PartRequest):
    """One item of an OST's ``/v2/batch``: an ``extents`` request with its ``op``."""

    @model_validator(mode="after")
    def _shaped(self) -> PartItem:
        if self.shape is None:
            raise ValueError("requests with extents need the chunk's shape")
        return self


class WholeItem(BatchItem):
    """One item of the OSS's ``/v2/batch``: a whole chunk of an ``ost://`` file. ``shape`` and
    ``size`` are required, so that the memory it needs is known before anything is read."""

    @model_validator(mode="after")
    def _sized(self) -> WholeItem:
        if self.shape is None or self.size is None:
            raise ValueError("batch items need the chunk's shape and size")
        if self.interface_type != "ost":
            raise ValueError(f"interface_type {self.interface_type!r} is not served here")
        return self

"""Merging the byte ranges of a batch that lie close together in one object into one read.

Inner chunks of a shard sit side by side in one object: one GET serves them all.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...protocol import ChunkRequest

#: Bytes between two ranges still worth reading rather than paying another round trip.
MAX_GAP = 64 * 1024


@dataclass
class Read:
    """One upstream read and the parts of it each batch position decodes."""

    request: ChunkRequest
    #: (batch position, start, stop) in the bytes read; stop None: to the end.
    parts: list[tuple[int, int, int | None]] = field(default_factory=list)


def plan_reads(requests: Sequence[tuple[int, ChunkRequest]], max_bytes: int) -> list[Read]:
    """Reads covering ``requests`` (batch position, request): ranges of one object merged."""
    reads: list[Read] = []
    ranged: dict[tuple[str, str], list[tuple[int, ChunkRequest]]] = defaultdict(list)
    for position, request in requests:
        if request.size is None:
            reads.append(Read(request, [(position, 0, None)]))
        else:
            ranged[(request.interface_type, request.url)].append((position, request))
    for group in ranged.values():
        group.sort(key=lambda item: item[1].offset or 0)
        current: Read | None = None
        start = end = 0
        for position, request in group:
            offset = request.offset or 0
            stop = offset + (request.size or 0)  # not None: grouped above
            if current is None or offset > end + MAX_GAP or max(end, stop) - start > max_bytes:
                current, start, end = Read(request), offset, stop
                reads.append(current)
            end = max(end, stop)
            current.parts.append((position, offset - start, stop - start))
            current.request = current.request.model_copy(update={"offset": start,
                                                                 "size": end - start})
    return reads

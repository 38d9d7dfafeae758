"""Which path serves a chunk, decided from its file's layout before anything is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from ..wire.striping import Extent, FileLayout

Path = Literal["ost", "oss", "client"]
Kind = Literal["uncompressed", "single-ost", "spread"]
#: Where a compressed chunk spread over several OSTs reduces.
SpreadPolicy = Literal["oss", "client"]
SPREAD_POLICIES: tuple[str, ...] = get_args(SpreadPolicy)


@dataclass(frozen=True)
class Placement:
    """How one chunk sits on the stripes and the path that reduces it.

    ``uncompressed`` chunks reduce on their OSTs in parallel (part chunks); a ``single-ost``
    compressed chunk on its OST; a ``spread`` compressed chunk on the OSS or the client.
    """

    kind: Kind
    path: Path
    extents: tuple[Extent, ...]

    @property
    def osts(self) -> tuple[int, ...]:
        return tuple(sorted({e.ost for e in self.extents}))


def place(layout: FileLayout, offset: int, size: int, *, compressed: bool,
          spread: str = "oss") -> Placement:
    """The placement of the chunk stored at ``[offset, offset + size)`` of a file."""
    extents = tuple(layout.extents(offset, size))
    if not compressed:
        return Placement("uncompressed", "ost", extents)
    if len({e.ost for e in extents}) <= 1:
        return Placement("single-ost", "ost", extents)
    return Placement("spread", spread, extents)  # type: ignore[arg-type]

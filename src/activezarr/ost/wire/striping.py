"""Round-robin striping: where each byte of a file lives (OST, offset in that OST's object)."""

from __future__ import annotations

from collections import defaultdict

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Extent(BaseModel):
    """A run of a file's bytes stored contiguously in one object.

    ``start`` is where the run begins in the caller's range (a chunk's byte 0 is its start).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ost: int = Field(ge=0)
    offset: int = Field(ge=0)   # in the object
    length: int = Field(ge=0)
    start: int = Field(ge=0)


class FileLayout(BaseModel):
    """What the MDS keeps per file: its size and how its bytes are striped over OST objects.

    Every file has one object per OST it is striped over, all named ``fid``; ``osts[0]`` is the
    first OST, and stripe ``s`` lives on ``osts[s % stripe_count]``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fid: str = Field(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$", max_length=128)
    size: int = Field(ge=0, le=2**62)
    stripe_size: int = Field(gt=0, le=2**40)
    osts: tuple[int, ...] = Field(min_length=1, max_length=4096)

    @model_validator(mode="after")
    def _valid(self) -> FileLayout:
        if len(set(self.osts)) != len(self.osts) or min(self.osts) < 0:
            raise ValueError(f"layout {self.fid} names OSTs {list(self.osts)}: each once, none "
                             "negative")
        return self

    @property
    def stripes(self) -> int:
        return -(-self.size // self.stripe_size)

    @property
    def stripe_count(self) -> int:
        return len(self.osts)

    def extents(self, offset: int, length: int) -> list[Extent]:
        """The extents holding bytes ``[offset, offset + length)``, in file order.

        Neighbouring stripes on one OST that are contiguous in its object make a single extent.
        """
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"byte range ({offset}, {length}) is outside file {self.fid} "
                             f"of {self.size} bytes")
        out: list[Extent] = []
        end = offset + length
        position = offset
        while position < end:
            stripe, within = divmod(position, self.stripe_size)
            run = min(self.stripe_size - within, end - position)
            ost = self.osts[stripe % self.stripe_count]
            object_offset = (stripe // self.stripe_count) * self.stripe_size + within
            last = out[-1] if out else None
            if last and last.ost == ost and last.offset + last.length == object_offset:
                out[-1] = last.model_copy(update={"length": last.length + run})
            else:
                out.append(Extent(ost=ost, offset=object_offset, length=run,
                                  start=position - offset))
            position += run
        return out

    def objects(self, data: bytes) -> dict[int, bytes]:
        """``data`` (the whole file) cut into the object each OST stores."""
        pieces: dict[int, list[bytes]] = {ost: [] for ost in self.osts}
        for extent in self.extents(0, len(data)):
            pieces[extent.ost].append(data[extent.start:extent.start + extent.length])
        return {ost: b"".join(parts) for ost, parts in pieces.items()}


def by_ost(extents: list[Extent] | tuple[Extent, ...]) -> dict[int, list[Extent]]:
    """Extents grouped by the OST holding them, each group in file order."""
    groups: dict[int, list[Extent]] = defaultdict(list)
    for extent in extents:
        groups[extent.ost].append(extent)
    return dict(groups)

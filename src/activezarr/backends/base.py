"""What a backend is: something that reduces a batch of chunks where their bytes are."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from zarr.abc.store import Store

from ..chunk.kernel import ChunkKernel
from ..chunk.partial import Partial
from ..errors import UnknownBackendError
from ..planning.array_layout import ArrayLayout
from ..planning.chunks import ChunkTask
from ..planning.cost import S3_FRAMING, S3_HEAD, Traits
from ..plugins import Registry


@dataclass(frozen=True)
class ChunkJob:
    """What every chunk of one reduction shares."""

    kernel: ChunkKernel
    layout: ArrayLayout
    store: Store
    #: Chunks the selection touches (0: unknown), so that finding which exist costs in
    #: proportion to them, not to the array.
    chunks: int = 0


@dataclass
class BatchResult:
    """Partials of a batch, in task order; None marks a chunk that was never written.

    ``failed`` maps the positions the storage side could not serve, for the client to reduce,
    to the reason the storage side (a server's error message, a reader's) gave.
    ``links`` counts bytes on links other than the one to the client (see :class:`Report`).
    """

    partials: list[Partial | None]
    path: str
    #: Positions whose partial the storage side merged into another position's (``combine``).
    combined: set[int] = field(default_factory=set)
    bytes_stored: int = 0
    bytes_from_storage: int = 0
    requests: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    links: Counter[str] = field(default_factory=Counter)
    #: The path of each position that did not take ``path``: a batch may send its chunks down
    #: several (the ost backend's OSTs, OSS and client).
    paths: dict[int, str] = field(default_factory=dict)

    def path_counts(self, size: int) -> Counter[str]:
        """Chunks per path among the batch's ``size`` positions, leaving out those that failed."""
        return Counter(self.paths.get(i, self.path) for i in range(size) if i not in self.failed)


class Backend(ABC):
    """Reduces chunks storage-side. Subclasses register in ``activezarr.backends``."""

    name: ClassVar[str]
    #: Stored bytes one :meth:`reduce` call should cover: small chunks travel together.
    batch_bytes: ClassVar[int] = 4 * 2**20
    max_batch_chunks: ClassVar[int] = 256
    #: Stored bytes per call when the storage side merges the partials of chunks sharing an
    #: output region (0: it does not): the answer no longer grows with the batch.
    combine_batch_bytes: ClassVar[int] = 0
    #: The ``active`` options this backend understands; any other is an error.
    option_names: ClassVar[frozenset[str]] = frozenset({"backend", "deadline"})

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        self.store = store
        self.options = dict(options or {})
        self.check_options(self.options)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Refuse options this backend does not know: a typo would otherwise read client-side."""
        unknown = sorted(set(options) - cls.option_names)
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for the "
                             f"{cls.name} backend; known: {', '.join(sorted(cls.option_names))}")
        deadline = options.get("deadline")
        if deadline is not None and not (isinstance(deadline, int | float) and deadline > 0):
            raise ValueError(f"deadline must be a positive number of seconds, got {deadline!r}")

    @classmethod
    def configured(cls, options: Mapping[str, Any]) -> bool:
        """Whether ``options`` are enough for this backend; if not, the client path reads."""
        return True

    @classmethod
    def batch_chunks(cls, chunk_nbytes: int) -> int:
        """Chunks per :meth:`reduce` call: what keeps a call's stored bytes near the target,
        larger where the storage side combines (its answer does not grow with the batch)."""
        target = max(cls.batch_bytes, cls.combine_batch_bytes)
        return max(1, min(cls.max_batch_chunks, target // max(1, chunk_nbytes)))

    async def traits(self, layout: ArrayLayout) -> Traits | None:
        """What the cost model needs to know of this backend's answers for ``layout``; None
        where it has no model of them (the backend is then always used)."""
        return None

    @abstractmethod
    async def reduce(self, job: ChunkJob, tasks: Sequence[ChunkTask]) -> BatchResult:
        """Partials of ``tasks``; raise StorageUnavailableError when the storage side is down."""

    async def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections and pools."""


backends: Registry[type[Backend]] = Registry("activezarr.backends", "backend",
                                             UnknownBackendError)


def check_active_options(protocol: str, active: Mapping[str, Any]) -> None:
    """Backend options that no backend would read are an error, not a silent client read."""
    name = active.get("backend", protocol)
    if name in backends or "backend" in active:
        backends.get(name).check_options(active)  # an unknown name lists the known ones
    elif active:
        raise ValueError(f"no active backend serves {protocol!r} stores, so the options "
                         f"{sorted(active)} would do nothing; backends: "
                         f"{', '.join(backends.names())}")

def plain_framing(store: Store) -> int:
    """Framing of one chunk read plainly from ``store``: an S3 HEAD's and GET's, or nothing where
    the bytes are handed over by a local or in-process filesystem (the client meters no more)."""
    return S3_FRAMING + S3_HEAD if {"s3", "s3a"} & _protocols(getattr(store, "fs", None)) else 0


def _protocols(fs: Any) -> set[str]:
    """The protocols whose bytes ``fs`` reads: its own, an active:: or kerchunk target's."""
    fs = getattr(fs, "sync_fs", fs)
    if getattr(fs, "target", None) is not None:
        return _protocols(fs.target)
    if getattr(fs, "fss", None) is not None:
        return set().union(*(_protocols(t) for t in fs.fss.values()))
    protocol = getattr(fs, "protocol", ())
    return {protocol} if isinstance(protocol, str) else set(protocol)


def region_labels(tasks: Sequence[ChunkTask]) -> list[int]:
    """One label per task, shared by the tasks whose partials land in the same output cells
    (a grouped dimension's region is the array of the groups present: the same groups)."""
    seen: dict[tuple[Any, ...], int] = {}
    return [seen.setdefault(tuple(_cells(r) for r in task.region), len(seen)) for task in tasks]


def _cells(region: Any) -> Any:
    return (region.start, region.stop) if isinstance(region, slice) else tuple(region.tolist())

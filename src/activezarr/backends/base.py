"""What a backend is: something that reduces a batch of chunks where their bytes are."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from zarr.abc.store import Store

from ..chunk.kernel import ChunkKernel
from ..chunk.partial import Partial
from ..errors import UnknownBackendError, first_problem
from ..planning.array_layout import ArrayLayout
from ..planning.chunks import ChunkTask
from ..planning.cost import S3_FRAMING, S3_HEAD, Traits
from ..plugins import Registry
from ..transport.traffic import protocols


class Options(BaseModel):
    """The ``active`` options every backend takes; each backend's model adds its own. Each
    field's description is what the option does and its default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: str | None = Field(None, description="the backend, if not the store's protocol's")
    deadline: float | None = Field(None, gt=0, description="seconds any one reduction may "
                                   "take (unbounded by default)")

    @classmethod
    def parse(cls, options: Mapping[str, Any], backend: str) -> Self:
        """``options`` as this model; the first problem is one ValueError naming the option
        and listing the valid ones."""
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            valid = ", ".join(sorted(cls.model_fields))
            unknown = sorted(set(options) - set(cls.model_fields))
            if unknown:
                raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for the "
                                 f"{backend} backend; known: {valid}") from None
            name, why, given = first_problem(exc)
            raise ValueError(f"option {name!r} of the {backend} backend: {why}, got "
                             f"{given!r}; known: {valid}") from None


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
    #: Request bodies sent storage-wards (what per-cell inputs such as brackets cost).
    bytes_to_storage: int = 0
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
    #: The ``active`` options this backend understands: their types, bounds and defaults.
    options_model: ClassVar[type[Options]] = Options
    options: Options

    def __init__(self, store: Store, options: Mapping[str, Any] | None = None) -> None:
        self.store = store
        self.options = self.check_options(options or {})

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> Options:
        """``options`` read by :attr:`options_model`; an unknown or ill-typed one is an error
        (a typo would otherwise read client-side)."""
        return cls.options_model.parse(options, cls.name)

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
    return S3_FRAMING + S3_HEAD if {"s3", "s3a"} & protocols(getattr(store, "fs", None)) else 0


def region_labels(tasks: Sequence[ChunkTask]) -> list[int]:
    """One label per task, shared by the tasks whose partials land in the same output cells
    (a grouped dimension's region is the array of the groups present: the same groups)."""
    seen: dict[tuple[Any, ...], int] = {}
    return [seen.setdefault(tuple(_cells(r) for r in task.region), len(seen)) for task in tasks]


def _cells(region: Any) -> Any:
    return (region.start, region.stop) if isinstance(region, slice) else tuple(region.tolist())

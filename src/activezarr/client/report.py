"""What one reduction cost: chunks, requests and bytes, by storage path; and the reports of
every reduction inside a ``with collect_reports()`` block, lazy ones on dask workers too."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class Report:
    """Counters of the last reduction.

    ``bytes_from_storage`` is everything the reduction pulled over the network (HTTP bodies with
    their framing: partials, chunks, listings, metadata) or, for local storage, the partials
    (or chunks, on the client path) handed over; ``bytes_stored`` the encoded size of the chunks
    involved; ``fallbacks`` the chunks the client reduced because storage could not, and
    ``fallback_reasons`` how many of them each reason the storage side gave accounts for.
    ``links`` counts bytes by the link they crossed: ``lan`` (storage side to client, the same
    as ``bytes_from_storage``), and where a backend reads them itself, ``disk_read`` (from
    storage media) and ``storage`` (between storage servers, e.g. OST to OSS).
    """

    backend: str = "client"
    chunks: int = 0
    requests: int = 0
    bytes_from_storage: int = 0
    #: Request bodies sent to servers (the other way): what weights and brackets cost.
    bytes_to_storage: int = 0
    bytes_stored: int = 0
    fallbacks: int = 0
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    paths: dict[str, int] = field(default_factory=dict)
    links: dict[str, int] = field(default_factory=dict)
    #: The planner's estimate of ``bytes_from_storage`` on the path it picked (0: none made),
    #: and why it picked that path (``paths`` has ``plain`` where it read plainly).
    estimated_bytes: int = 0
    plan_reason: str = ""

    def add(self, counts: dict[str, int], key: str, n: int) -> None:
        """Add ``n`` to ``counts[key]`` (``paths``, ``links``...), keeping zero counts out."""
        if n:
            counts[key] = counts.get(key, 0) + n

    @property
    def reduction_factor(self) -> float:
        """How many stored bytes each byte sent to the client stood for."""
        return self.bytes_stored / self.bytes_from_storage if self.bytes_from_storage else float("inf")

    def __str__(self) -> str:
        paths = ", ".join(f"{k}={v}" for k, v in sorted(self.paths.items())) or "none"
        links = ", ".join(f"{k}={v}" for k, v in sorted(self.links.items())) or "none"
        return (
            f"backend={self.backend} chunks={self.chunks} requests={self.requests} "
            f"bytes_from_storage={self.bytes_from_storage} bytes_to_storage="
            f"{self.bytes_to_storage} bytes_stored={self.bytes_stored} "
            f"fallbacks={self.fallbacks} seconds={self.seconds:.3f} paths: {paths} links: {links}"
            + (f"\nplanned: {self.plan_reason}" if self.plan_reason else "")
            + "".join(f"\nfell back ({n} chunk(s)): {why}"
                      for why, n in self.fallback_reasons.items())
        )

    @classmethod
    def total(cls, reports: Iterable[Report]) -> Report:
        """The reports of several reductions (or of the parts of one) summed: counts and bytes
        add up, ``seconds`` too (time spent, not elapsed); backends and plan reasons listed."""
        total = cls(backend="")
        backends: list[str] = []
        reasons: list[str] = []
        for report in reports:
            for f in fields(cls):
                value = getattr(report, f.name)
                if isinstance(value, dict):
                    counts = getattr(total, f.name)
                    for key, n in value.items():
                        total.add(counts, key, n)
                elif isinstance(value, (int, float)):
                    setattr(total, f.name, getattr(total, f.name) + value)
            backends += [report.backend] if report.backend not in backends else []
            reasons += [report.plan_reason] if report.plan_reason not in reasons else []
        total.backend = "+".join(backends) or "client"
        total.plan_reason = "; ".join(r for r in reasons if r)
        return total


#: The dask.distributed event topic under which workers send the reports of what they finished.
TOPIC = "activezarr-report"
#: The collections open in this process, and the lock of that list (dask's threads use it).
_collecting: list[Reports] = []
_lock = threading.Lock()


@dataclass
class Reports:
    """The reports of every reduction that finished while :func:`collect_reports` was open."""

    each: list[Report] = field(default_factory=list)

    @property
    def total(self) -> Report:
        """All of them summed (:meth:`Report.total`)."""
        return Report.total(self.each)

    def __str__(self) -> str:
        return f"{len(self.each)} reduction(s): {self.total}"


@contextmanager
def collect_reports() -> Iterator[Reports]:
    """Collect the :class:`Report` of every reduction finishing inside the ``with`` block.

    Eager ones (``ActiveReduction``, ``da.active``, weighted and grouped) report as they end;
    lazy ones (``compute=False``, :mod:`activezarr.dask`) when computed, one report each,
    summed over the graph's leaves. On a ``dask.distributed`` cluster each reduction's report
    travels with its partials to the task that finishes it, which sends it to the scheduler as
    a structured event (``Worker.log_event``); the block fetches those at its end
    (``Client.get_events``). It sees every reduction of this process, and of the default
    client's cluster, finishing while it is open.
    """
    reports = Reports()
    seen = _last_event()
    with _lock:
        _collecting.append(reports)
    try:
        yield reports
    finally:
        with _lock:
            _collecting.remove(reports)
        reports.each += _cluster_reports(seen)


def publish(report: Report) -> None:
    """Hand a finished reduction's report to the open collections: on a distributed worker, to
    the scheduler (the client's collections fetch it), otherwise to this process's."""
    worker = _worker()
    if worker is not None:
        worker.log_event(TOPIC, {"report": asdict(report)})
        return
    with _lock:
        for reports in _collecting:
            reports.each.append(report)


def _worker() -> Any:
    """The dask.distributed worker running this code, or None (distributed is never imported
    here: code that runs on one has imported it)."""
    if "distributed" not in sys.modules:
        return None
    from distributed import get_worker

    try:
        return get_worker()
    except ValueError:
        return None


def _client() -> Any:
    """The default dask.distributed client of this process, or None."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _last_event() -> float | None:
    """The scheduler's time of the last report event it holds (None: no client or none)."""
    client = _client()
    events = client.get_events(TOPIC) if client is not None else ()
    return max((stamp for stamp, _ in events), default=None)


def _cluster_reports(after: float | None) -> list[Report]:
    """The reports workers sent after the scheduler time ``after`` (all when None)."""
    client = _client()
    if client is None:
        return []
    return [Report(**message["report"]) for stamp, message in client.get_events(TOPIC)
            if after is None or stamp > after]

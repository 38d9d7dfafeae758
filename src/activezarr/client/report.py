"""What one reduction cost: chunks, requests and bytes, by storage path."""

from __future__ import annotations

from dataclasses import dataclass, field


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
            f"bytes_from_storage={self.bytes_from_storage} bytes_stored={self.bytes_stored} "
            f"fallbacks={self.fallbacks} seconds={self.seconds:.3f} paths: {paths} links: {links}"
            + (f"\nplanned: {self.plan_reason}" if self.plan_reason else "")
            + "".join(f"\nfell back ({n} chunk(s)): {why}"
                      for why, n in self.fallback_reasons.items())
        )

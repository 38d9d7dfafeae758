"""Prometheus metrics of one server (its own registry, so several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("activezarr_requests", "Chunk requests by operation", ["op"],
                                registry=self.registry)
        self.errors = Counter("activezarr_errors", "Error responses by status", ["status"],
                              registry=self.registry)
        self.upstream_reads = Counter("activezarr_upstream_reads", "Reads from storage",
                                      registry=self.registry)
        self.bytes_upstream = Counter("activezarr_upstream_bytes", "Bytes read from storage",
                                      registry=self.registry)
        self.bytes_returned = Counter("activezarr_returned_bytes", "Response body bytes",
                                      registry=self.registry)
        self.latency = Histogram("activezarr_request_seconds", "Chunk request latency", ["op"],
                                 registry=self.registry)
        self.inflight = Gauge("activezarr_inflight", "Requests being served",
                              registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

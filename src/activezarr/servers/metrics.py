"""Prometheus metrics of every server (each its own registry, so apps can share a process)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

#: The ``Content-Type`` of every ``/metrics`` answer: the text format generate_latest writes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: What the simulated file system's servers count: bytes by the link they crossed.
LINK_BYTES = "activezarr_link_bytes"


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
        self.stopped_requests = Counter(
            "activezarr_stopped_requests", "Requests whose work was stopped: past the request "
            "timeout (deadline) or their client gone (disconnected)", ["reason"],
            registry=self.registry)
        self.stopped_chunks = Counter("activezarr_stopped_chunks", "Chunks of stopped requests "
                                      "left unread or undecoded", registry=self.registry)
        self.inflight = Gauge("activezarr_inflight", "Requests being served",
                              registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Links(Collector):
    def __init__(self, links: Mapping[str, int]) -> None:
        self.links = links

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(LINK_BYTES, "Bytes by link: disk_read, disk_write, storage "
                                     "(OST to OSS), lan (storage to client)", labels=["link"])
        for link, n in sorted(self.links.items()):
            family.add_metric([link], n)
        yield family


def links_exposition(links: Mapping[str, int]) -> bytes:
    """The Prometheus text of a server's bytes by link."""
    return generate_latest(_Links(links))


def parse_links(text: str) -> Tally[str]:
    """Bytes by link, read back from :func:`links_exposition`'s text."""
    totals: Tally[str] = Tally()
    for family in text_string_to_metric_families(text):
        if family.name == LINK_BYTES:
            for sample in family.samples:
                if sample.name == f"{LINK_BYTES}_total":
                    totals[sample.labels["link"]] += int(sample.value)
    return totals

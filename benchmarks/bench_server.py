"""The active server on loopback: per-request overhead, batching, decode+reduce throughput.

The same measurements as ``server_speed.py`` (which see), as asv ``track_`` benchmarks. Each
``setup`` starts moto's S3 and ``activezarr serve`` on free loopback ports and writes the test
chunks to a temporary directory; ``teardown`` stops both servers and removes the directory.
"""

from __future__ import annotations

try:
    from . import server_speed
except ImportError:  # imported as a top-level module (benchmarks/ on sys.path)
    import server_speed


class _Servers:
    timeout = 120
    rounds = 5

    def setup(self, *params) -> None:
        self.rig = server_speed.Rig().__enter__()

    def teardown(self, *params) -> None:
        rig = self.__dict__.pop("rig", None)
        if rig is not None:
            rig.__exit__(None, None, None)


class RequestOverhead(_Servers):
    """Median wall time of one ``POST /v2/sum`` on a 64 KiB float64 chunk."""

    params = (["s3", "file"],)
    param_names = ("interface_type",)

    def track_median_ms(self, iface: str) -> float:
        return self.rig.overhead_ms(iface, 40 * self.rounds)

    track_median_ms.unit = "ms"


class Batch(_Servers):
    """100 requests on 1 KiB chunks one by one over one ``/v2/batch`` (median times; target 5)."""

    def track_speedup(self) -> float:
        return self.rig.batch_speedup(self.rounds)[2]

    track_speedup.unit = "speed-up"


class Throughput(_Servers):
    """Server over in-process (1 thread) decode+reduce throughput, 64 zlib chunks of 512 KiB.

    Target 0.7. Median times of a ``/v2/batch`` of the 64 chunks and of ``ChunkKernel.reduce``
    on the same bytes in this process.
    """

    def track_ratio(self) -> float:
        return self.rig.throughput_ratio(self.rounds)[2]

    track_ratio.unit = "ratio"

"""Each backend against plain zarr + numpy over chunk sizes, codecs and queries (asv).

Backends: ``zarr`` (plain zarr + numpy), ``file``, ``s3`` and ``ost``; ``Codec`` leaves out
``ost`` and ``Query`` leaves out ``file`` to keep ``asv run --quick`` within minutes (each case
is a process of its own that starts servers). ``time_`` benchmarks time the query; ``track_bytes`` / ``track_requests`` record what the query
moved from storage (for ``zarr``: what the client backend, which fetches whole stored chunks as
zarr does, reports). A 16 MiB float32 field per case; every ``setup`` starts the servers its
backend needs on loopback (moto + ``activezarr serve``, or an OST cluster) and writes the array.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import zarr3

import activezarr

try:
    from . import _cases
except ImportError:  # imported as a top-level module (benchmarks/ on sys.path)
    import _cases

LAT, LON, TIME = 64, 128, 512            # 32 KiB a day, 16 MiB in all
DAY = LAT * LON * 4
CHUNKS = {"64K": 2, "1M": 32, "16M": 512}   # days per chunk; plots.py sweeps finer
CODECS = {
    "none": {"compressors": None},
    "zstd": {"compressors": [zarr.codecs.ZstdCodec(level=1)]},
    "blosc": {"compressors": [zarr.codecs.BloscCodec(cname="lz4", shuffle="shuffle")]},
    "zlib+shuffle": {"compressors": [zarr3.Shuffle(elementsize=4), zarr3.Zlib(level=1)]},
}
QUERIES = {"mean": (..., None), "point": ((slice(None), slice(20, 21), slice(30, 31)), (1, 2)),
           "box": ((slice(None), slice(16, 32), slice(16, 80)), None),
           "timemean": (..., 0)}
BACKENDS = ["zarr", "file", "s3", "ost"]
KEYS = {"key": "bench", "secret": "bench"}


@contextlib.contextmanager
def _place(backend: str, root: Path) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(url, storage options, active options) of a fresh place for ``backend``'s array."""
    if backend in ("zarr", "file"):
        yield str(root / "a.zarr"), {}, {}
    elif backend == "ost":
        from activezarr.ost import Cluster, ClusterConfig
        with Cluster(ClusterConfig(root=root / "ost", osts=4)) as cluster:
            yield f"{cluster.url}/a.zarr", {}, {}
    else:
        from moto.server import ThreadedMotoServer

        from activezarr.servers.processes import active_server
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        try:
            endpoint = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"
            import boto3
            boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                         aws_secret_access_key="bench", region_name="us-east-1"
                         ).create_bucket(Bucket="bench")
            with active_server("--upstream", endpoint) as (server, _):
                yield "s3://bench/a.zarr", {"endpoint_url": endpoint, **KEYS}, {"server": server}
        finally:
            moto.stop()


class _Backends:
    timeout = 300
    number = 1
    repeat = (1, 3, 20.0)
    warmup_time = 0

    def _setup(self, backend: str, chunk: str, codec: str) -> None:
        with contextlib.ExitStack() as stack:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            self._write(backend, *stack.enter_context(_place(backend, root)), chunk, codec)
            self._stack = stack.pop_all()

    def _write(self, backend: str, url: str, options: dict[str, Any], active: dict[str, Any],
               chunk: str, codec: str) -> None:
        store = activezarr.ActiveStore.from_url(url, storage_options=options, active=active)
        data = _cases.field_block(0, (TIME, LAT, LON), (TIME, LAT, LON),
                                  np.random.default_rng(0))
        array = zarr.create_array(store, shape=data.shape, dtype="float32", fill_value=0.0,
                                  chunks=(CHUNKS[chunk], LAT, LON), overwrite=True,
                                  **CODECS[codec])
        array[...] = data
        self.plain = zarr.open_array(store, mode="r")
        client = activezarr.ActiveStore.from_url(url, storage_options=options,
                                                 active={"backend": "client"})
        self.red = activezarr.ActiveReduction(
            zarr.open_array(client if backend == "zarr" else store, mode="r"), fallback=False)
        self.backend = backend

    def teardown(self, *params: Any) -> None:
        self._stack.close()

    def _query(self, name: str) -> Any:
        index, axis = QUERIES[name]
        if self.backend == "zarr":
            return np.asarray(self.plain[index]).mean(axis=axis)
        return self.red[index].mean(axis=axis)

    def _track(self, name: str, what: str) -> int:
        index, axis = QUERIES[name]
        red = self.red[index] if index is not ... else self.red
        red.mean(axis=axis)
        return int(getattr(self.red.last_report if index is ... else red.last_report, what))


class ChunkSize(_Backends):
    """Whole-array mean, zstd, over chunk sizes from 64 KiB to 16 MiB."""

    params = (BACKENDS, ["64K", "16M"])
    param_names = ("backend", "chunk")

    def setup(self, backend: str, chunk: str) -> None:
        self._setup(backend, chunk, "zstd")

    def time_mean(self, backend: str, chunk: str) -> None:
        self._query("mean")

    def track_bytes(self, backend: str, chunk: str) -> int:
        return self._track("mean", "bytes_from_storage")

    def track_requests(self, backend: str, chunk: str) -> int:
        return self._track("mean", "requests")


class Codec(_Backends):
    """Whole-array mean, 1 MiB chunks, over codecs."""

    params = (["zarr", "file", "s3"], list(CODECS))
    param_names = ("backend", "codec")

    def setup(self, backend: str, codec: str) -> None:
        self._setup(backend, "1M", codec)

    def time_mean(self, backend: str, codec: str) -> None:
        self._query("mean")

    def track_bytes(self, backend: str, codec: str) -> int:
        return self._track("mean", "bytes_from_storage")


class Query(_Backends):
    """The compare.py queries a reduction can say, 64 KiB zstd chunks."""

    params = (["zarr", "s3", "ost"], list(QUERIES))
    param_names = ("backend", "query")

    def setup(self, backend: str, query: str) -> None:
        self._setup(backend, "64K", "zstd")

    def time_query(self, backend: str, query: str) -> None:
        self._query(query)

    def track_bytes(self, backend: str, query: str) -> int:
        return self._track(query, "bytes_from_storage")

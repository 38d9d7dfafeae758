"""netCDF files in S3 through kerchunk, and failover: what crosses the network, and how long a
stalled server costs.

Run from the repository:  python benchmarks/object_stores.py [--netcdf ../shared/data/netcdf]

It starts moto's S3 and two ``activezarr serve`` processes on free loopback ports, uploads the
netCDF files, references them with kerchunk, and prints for each file the whole-variable mean
through the active server and through a plain client read: chunks, requests,
``bytes_from_storage`` (HTTP framing included) and wall time (the second of two runs). Then it
stops (SIGSTOP) one server of two and times a 64-chunk sum with ``timeout`` 1 and 3 s: a stalled
server costs one timeout, not one per batch.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import kerchunk.hdf
import numpy as np
import zarr
from moto.server import ThreadedMotoServer

import activezarr
from activezarr.servers.processes import active_server

VARIABLES = {"CMIP6-test.nc": "tas", "obs4MIPS_CERES-EBAF_L3B_Ed2-8_rlut.nc": "rlut",
             "test1.nc": "tas", "cesm2_native.nc": "TREFHT", "daily_data_masked.nc": "ta"}
KEYS = {"key": "bench", "secret": "bench"}


@contextlib.contextmanager
def s3() -> Iterator[tuple[str, dict[str, str]]]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # any free port
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        yield endpoint, {"endpoint_url": endpoint, **KEYS}
    finally:
        server.stop()


def timed_mean(array: zarr.Array) -> tuple[activezarr.Report, float]:
    red = activezarr.ActiveReduction(array, fallback=False)
    red.mean()  # warm-up: capability document, sessions
    start = time.perf_counter()
    red.mean()
    return red.last_report, time.perf_counter() - start


def netcdf_table(netcdf: Path, server: str, options: dict[str, str]) -> None:
    client = boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1",
                          aws_access_key_id=KEYS["key"], aws_secret_access_key=KEYS["secret"])
    client.create_bucket(Bucket="netcdf-files")
    print(f"{'file':40} {'path':9} {'chunks':>6} {'requests':>8} {'bytes':>10} {'ms':>6}")
    for name, variable in VARIABLES.items():
        client.upload_file(str(netcdf / name), "netcdf-files", name)
        refs = kerchunk.hdf.SingleHdf5ToZarr(f"s3://netcdf-files/{name}",
                                             storage_options=options,
                                             inline_threshold=0).translate()
        for active in ({"server": server}, {"backend": "client"}):
            store = activezarr.ActiveStore.from_url("reference://", active=active,
                                                    storage_options={
                                                        "fo": refs, "remote_protocol": "s3",
                                                        "remote_options": options})
            array = zarr.open_array(store, path=variable, mode="r", zarr_format=2)
            report, seconds = timed_mean(array)
            path = ",".join(report.paths)
            print(f"{name:40} {path:9} {report.chunks:6} {report.requests:8} "
                  f"{report.bytes_from_storage:10,} {seconds * 1000:6.0f}")


def stalled_server(live: str, stalled: str, process_id: int, options: dict[str, str]) -> None:
    shape, chunks = (64 * 128, 1024), (128, 1024)
    data = (np.arange(np.prod(shape)) % 1000).astype("float32").reshape(shape)
    boto3.client("s3", endpoint_url=options["endpoint_url"], region_name="us-east-1",
                 aws_access_key_id=KEYS["key"],
                 aws_secret_access_key=KEYS["secret"]).create_bucket(Bucket="arrays")
    url = "s3://arrays/many.zarr"
    zarr.create_array(activezarr.ActiveStore.from_url(url, storage_options=options),
                      shape=shape, chunks=chunks, dtype="float32")[...] = data
    os.kill(process_id, signal.SIGSTOP)
    try:
        for timeout in (1, 3):
            array = activezarr.open_array(url, storage_options=options, active={
                "server": [stalled, live], "timeout": timeout, "concurrency": 2})
            red = activezarr.ActiveReduction(array, fallback=False, max_concurrency=2)
            start = time.perf_counter()
            assert np.isclose(red.sum(), data.sum(dtype=np.float64))
            report = red.last_report
            print(f"one of two servers stalled, timeout {timeout} s: {report.chunks} chunks in "
                  f"{time.perf_counter() - start:.2f} s, {report.requests} requests, "
                  f"{report.fallbacks} fallbacks")
    finally:
        os.kill(process_id, signal.SIGCONT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netcdf", type=Path,
                        default=Path(__file__).resolve().parents[2] / "shared/data/netcdf")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request
    with s3() as (endpoint, options), \
            active_server("--upstream", endpoint) as (live, _), \
            active_server("--upstream", endpoint) as (stalled, process):
        netcdf_table(args.netcdf, live, options)
        stalled_server(live, stalled, process.pid, options)


if __name__ == "__main__":
    main()

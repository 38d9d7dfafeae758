"""The storage side of compare.py: one dataset in every form, and the servers that serve it.

The dataset is a daily temperature-like field ``tas(time, lat, lon)``, float32, chunked a few
days per chunk, written once as zarr (zstd) and as netCDF4 (zlib + shuffle, same chunks), put
locally, in S3 (moto), referenced with kerchunk, and in an OST cluster; the local files are
also served by a plain HTTP file server (what a plain read over the link has without S3) and
are below the active server's ``--allow-root``. ``Rig.where`` is everything a client child
needs to reach it, as JSON.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import threading
from dataclasses import asdict, dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import boto3
import kerchunk.hdf
import numpy as np
import pandas as pd
import xarray as xr
from moto.server import ThreadedMotoServer

import activezarr
from activezarr.ost import Cluster, ClusterConfig
from activezarr.servers.processes import active_server

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cases

MiB = 2**20
KEYS = {"key": "bench", "secret": "bench"}
BUCKET = "bench"


@dataclass(frozen=True)
class Shape:
    """The dataset's shape: ``size`` MiB of float32 on a (lat, lon) grid, ``days`` per chunk."""

    size_mib: int = 256
    lat: int = 192
    lon: int = 384
    days: int = 4
    small_chunk_kib: int = 64  # the netCDF file of many small chunks (PyActiveStorage's worst)

    @property
    def time(self) -> int:
        return math.ceil(self.size_mib * MiB / (self.lat * self.lon * 4))


def dataset(shape: Shape) -> xr.Dataset:
    rng = np.random.default_rng(0)
    full = (shape.time, shape.lat, shape.lon)
    data = _cases.field_block(0, full, full, rng)
    return xr.Dataset(
        {"tas": (("time", "lat", "lon"), data, {"units": "K"})},
        coords={"time": pd.date_range("2000-01-01", periods=shape.time, freq="D"),
                "lat": np.linspace(-89.5, 89.5, shape.lat),
                "lon": np.linspace(0, 360, shape.lon, endpoint=False)})


def _zarr_encoding(chunks: tuple[int, ...]) -> dict[str, Any]:
    from zarr.codecs import ZstdCodec
    return {"tas": {"chunks": chunks, "compressors": [ZstdCodec(level=1)], "_FillValue": None}}


def _nc_encoding(chunks: tuple[int, ...]) -> dict[str, Any]:
    return {"tas": {"chunksizes": chunks, "zlib": True, "complevel": 1, "shuffle": True,
                    "_FillValue": None}}


def write_small_netcdf(ds: xr.Dataset, shape: Shape, path: Path) -> Path:
    """The netCDF4 file of many small chunks: a quarter of the data, each chunk one time step
    of ``shape.small_chunk_kib`` KiB of whole (lat, lon) rows."""
    rows = min(shape.lat, max(1, shape.small_chunk_kib * 1024 // (shape.lon * 4)))
    ds.isel(time=slice(0, max(1, shape.time // 4))).to_netcdf(
        path, engine="netcdf4", encoding=_nc_encoding((1, rows, shape.lon)))
    return path


class _Files(SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a connection serves many chunks

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per chunk would drown the table


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: socketserver's backlog of 5 drops the SYNs of a client opening more connections at
    #: once, and TCP retries them only after a second.
    request_queue_size = 128


@contextlib.contextmanager
def file_server(root: Path, host: str) -> Any:
    """A plain HTTP server of the files under ``root``; yields its URL."""
    server = _Server((host, 0), functools.partial(_Files, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Rig:
    """Writes the dataset and starts moto, the active server and an OST cluster on ``host``."""

    def __init__(self, root: Path, shape: Shape, host: str) -> None:
        self.root, self.shape, self.host = root, shape, host
        self._stack = contextlib.ExitStack()
        self.where: dict[str, Any] = {}

    def __enter__(self) -> Self:
        with contextlib.ExitStack() as stack:
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            moto = ThreadedMotoServer(ip_address=self.host, port=0, verbose=False)
            moto.start()
            stack.callback(moto.stop)
            endpoint = f"http://{self.host}:{moto.get_host_and_port()[1]}"
            server, _ = stack.enter_context(active_server(
                "--upstream", endpoint, "--allow-root", str(self.root), host=self.host,
                env={"AWS_ACCESS_KEY_ID": KEYS["key"], "AWS_SECRET_ACCESS_KEY": KEYS["secret"]}))
            cluster = stack.enter_context(Cluster(ClusterConfig(
                root=self.root / "ost", osts=4, host=self.host)))
            http = stack.enter_context(file_server(self.root, self.host))
            # the cluster's token: each client child is another process (and namespace)
            self.where = {"endpoint": endpoint, "server": server, "ost": cluster.url,
                          "ost_token": cluster.token, "http_zarr": f"{http}/tas.zarr",
                          "shape": asdict(self.shape), **self._write(endpoint, cluster.url)}
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _write(self, endpoint: str, ost: str) -> dict[str, str]:
        s = self.shape
        chunks = (s.days, s.lat, s.lon)
        ds = dataset(s)
        local = self.root / "tas.zarr"
        ds.to_zarr(local, encoding=_zarr_encoding(chunks), zarr_format=3, consolidated=False)
        nc = self.root / "tas.nc"
        ds.to_netcdf(nc, engine="netcdf4", encoding=_nc_encoding(chunks))
        nc_small = write_small_netcdf(ds, s, self.root / "tas-small.nc")
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEYS["key"],
                          aws_secret_access_key=KEYS["secret"], region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        for path in local.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), BUCKET, f"tas.zarr/{path.relative_to(local)}")
        s3.upload_file(str(nc), BUCKET, "tas.nc")
        store = activezarr.ActiveStore.from_url(f"{ost}/tas.zarr")
        ds.to_zarr(store, encoding=_zarr_encoding(chunks), zarr_format=3, consolidated=False)
        opts = {"endpoint_url": endpoint, **KEYS}
        refs = {
            "refs_s3": kerchunk.hdf.SingleHdf5ToZarr(f"s3://{BUCKET}/tas.nc",
                                                     storage_options=opts).translate(),
            "refs_local": kerchunk.hdf.SingleHdf5ToZarr(str(nc)).translate(),
            "refs_local_small": kerchunk.hdf.SingleHdf5ToZarr(str(nc_small)).translate(),
        }
        for name, value in refs.items():
            (self.root / f"{name}.json").write_text(json.dumps(value))
        return {"zarr": str(local), "nc": str(nc), "nc_small": str(nc_small),
                "s3_zarr": f"s3://{BUCKET}/tas.zarr", "s3_nc": f"s3://{BUCKET}/tas.nc",
                **{name: str(self.root / f"{name}.json") for name in refs}}

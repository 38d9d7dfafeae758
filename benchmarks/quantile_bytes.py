"""Bytes an exact quantile moves, both ways, against the bytes stored (issue 18's case).

A year of daily float32 on a 0.5-degree grid, ``(365, 180, 360)``, chunked 30 days by 90 x 90
(zarr, zstd), in moto's S3 behind the active server; the 0.9 quantile over time, storage side.
Prints the stored bytes, the request bodies sent (``bytes_to_storage``: the cells' brackets),
the answers (``bytes_from_storage``), their total as a share of the stored bytes, and the
rounds' requests. Run: ``python benchmarks/quantile_bytes.py [--method approximate]
[--over all]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

import boto3
import numpy as np
import zarr
from moto.server import ThreadedMotoServer

import activezarr
from activezarr.servers.processes import active_server

KEYS = {"key": "bench", "secret": "bench"}
BUCKET = "quantiles"


def daily(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Daily temperatures (K): a seasonal cycle by latitude, weather noise, 5% NaN holes."""
    rng = np.random.default_rng(seed)
    days, ny, nx = shape
    season = 10 * np.sin(2 * np.pi * np.arange(days) / 365)[:, None, None]
    base = 300 - 40 * np.abs(np.linspace(-1, 1, ny))[None, :, None]
    data = (base + season + 5 * rng.standard_normal(shape)).astype(np.float32)
    data[rng.random(shape) < 0.05] = np.nan
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="exact", choices=("exact", "approximate"))
    parser.add_argument("--q", type=float, default=0.9)
    parser.add_argument("--over", default="time", choices=("time", "all"),
                        help="per grid cell over time (the issue's case), or of the whole array")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    data = daily((365, 180, 360))
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    endpoint = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "t.zarr"
            zarr.create_array(str(path), shape=data.shape, chunks=(30, 90, 90), dtype="f4",
                              fill_value=np.nan)[...] = data
            s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=KEYS["key"],
                              aws_secret_access_key=KEYS["secret"])
            s3.create_bucket(Bucket=BUCKET)
            for f in path.rglob("*"):
                if f.is_file():
                    s3.put_object(Bucket=BUCKET, Key=f"t.zarr/{f.relative_to(path).as_posix()}",
                                  Body=f.read_bytes())
            with active_server("--upstream", endpoint) as (url, _):
                store = activezarr.ActiveStore.from_url(
                    f"s3://{BUCKET}/t.zarr", active={"server": url}, storage_options={
                        "key": KEYS["key"], "secret": KEYS["secret"],
                        "client_kwargs": {"endpoint_url": endpoint}})
                red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"), skipna=True)
                axis = 0 if args.over == "time" else None
                got = red.quantile(args.q, axis=axis, method=args.method)
    finally:
        moto.stop()
    report = red.last_report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanquantile(data, args.q, axis=axis)
    moved = report.bytes_to_storage + report.bytes_from_storage
    print(f"method={args.method} q={args.q} over {args.over} equal to numpy: "
          f"{np.array_equal(np.ma.filled(got, np.nan), expected, equal_nan=True)}")
    print(f"stored {report.bytes_stored} B; requests {report.bytes_to_storage} B; answers "
          f"{report.bytes_from_storage} B; moved {moved} B = "
          f"{100 * moved / report.bytes_stored:.2f}% of stored; {report.requests} HTTP requests, "
          f"{report.fallbacks} fallbacks; paths {report.paths}")


if __name__ == "__main__":
    main()

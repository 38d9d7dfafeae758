"""Bytes and time that scale with the question: the active path against plain zarr, side by
side in one run, with the planner's estimate next to what each run reported.

Run from the repository:  python benchmarks/scaling.py [--quick]

It starts moto's S3 and one ``activezarr serve`` on loopback ports and prints one row per case:
``bytes_from_storage`` of the active path (HTTP framing included) and of plain zarr (every
response s3fs received, counted the same way), their ratio to the stored bytes, wall times
(best of three) and the planner's estimate with its error.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr
from object_stores import KEYS, s3

import activezarr
from activezarr.client import traffic
from activezarr.client.sync import run_sync
from activezarr.servers.processes import active_server

BUCKET = "scaling"


@dataclass
class Row:
    case: str
    stored: int
    active: activezarr.Report
    active_s: float
    plain_bytes: int
    plain_s: float
    estimate: int
    path: str

    def __str__(self) -> str:
        a = self.active
        error = (self.estimate - a.bytes_from_storage) / max(1, a.bytes_from_storage)
        return (f"{self.case:<34} path={self.path:<6} stored={self.stored:>11} "
                f"active={a.bytes_from_storage:>9} ({a.bytes_from_storage / self.stored:.2e}) "
                f"plain={self.plain_bytes:>10} ({self.plain_bytes / self.stored:.2e}) "
                f"est={self.estimate:>9} ({error:+.0%})  t_active={self.active_s * 1e3:7.1f} ms "
                f"t_plain={self.plain_s * 1e3:7.1f} ms ({self.active_s / self.plain_s:.2f}x)")


def best(run: Callable[[], Any], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def plain_bytes(array: zarr.Array, read: Callable[[], Any]) -> int:
    """What plain zarr pulls over the network for ``read()``, framing included."""

    async def watch() -> None:
        await traffic.watch(array.store.fs)

    run_sync(watch())
    with traffic.metered() as meter:
        read()
    return meter.nbytes


def case(name: str, url: str, options: dict[str, Any], server: str, selection: Any,
         op: str, axis: Any, stored: int) -> Row:
    store = activezarr.ActiveStore.from_url(url, storage_options=options,
                                            active={"server": server})
    array = zarr.open_array(store, mode="r")
    red = activezarr.ActiveReduction(array, missing=None, fallback=False)
    plan = red[selection].plan(op, axis)
    assert plan is not None
    red[selection].reduce(op, axis)  # warm-up: capability document, sessions
    active_s = best(lambda: red[selection].reduce(op, axis))
    report = red.last_report
    assert report is not None
    plain = zarr.open_array(zarr.storage.FsspecStore.from_url(
        url, storage_options=options, read_only=True), mode="r")
    numpy_op = getattr(np, op)
    plain_s = best(lambda: numpy_op(plain[selection], axis=axis))
    moved = plain_bytes(plain, lambda: numpy_op(plain[selection], axis=axis))
    return Row(name, stored or report.bytes_stored, report, active_s, moved, plain_s,
               plan.active_bytes, plan.path)


def write(url: str, options: dict[str, Any], data: Callable[[int], np.ndarray],
          shape: tuple[int, ...], chunks: tuple[int, ...], written: int, **kwargs: Any) -> int:
    """An array of ``shape``: its first ``written`` rows of chunks written; its stored bytes."""
    array = zarr.create_array(zarr.storage.FsspecStore.from_url(url, storage_options=options),
                              shape=shape, chunks=chunks, dtype="float32", fill_value=0,
                              **kwargs)
    for start in range(0, written, chunks[0]):
        stop = min(written, start + chunks[0])
        array[start:stop] = data(stop - start)
    return int(array.nbytes_stored())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller big arrays")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # moto's request log
    rng = np.random.default_rng(0)
    with s3() as (endpoint, options), active_server("--upstream", endpoint) as (server, _):
        import boto3
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id=KEYS["key"],
                     aws_secret_access_key=KEYS["secret"]).create_bucket(Bucket=BUCKET)
        rows = []

        def url(name: str) -> str:
            return f"s3://{BUCKET}/{name}.zarr"

        def noise(n: int, width: int = 256) -> np.ndarray:
            return rng.normal(280, 5, (n, width)).astype("float32")

        stored = write(url("point3k"), options, noise, (3000, 256), (1, 256), 3000)
        rows.append(case("one chunk of 3,000", url("point3k"), options, server,
                         np.s_[5:6], "mean", None, stored))
        stored = write(url("point100k"), options, noise, (100_000, 256), (1, 256), 50)
        rows.append(case("one chunk of 100,000 (50 written)", url("point100k"), options,
                         server, np.s_[5:6], "mean", None, stored))
        days = 60 if args.quick else 365
        lat = np.cos(np.deg2rad(np.linspace(-90, 90, 180)))[:, None]

        def daily(n: int) -> np.ndarray:
            field = 250 + 40 * lat + rng.normal(0, 2, (n, 180, 360))
            return np.round(field, 1).astype("float32")

        stored = write(url("daily"), options, daily, (days, 180, 360), (1, 180, 360), days)
        rows.append(case(f"daily ({days},180,360) time mean", url("daily"), options, server,
                         np.s_[...], "mean", 0, stored))
        rows_256 = 64 if args.quick else 256
        stored = write(url("big"), options, lambda n: noise(n, 4096 * 64).reshape(n, 64, 4096),
                       (rows_256, 64, 4096), (1, 64, 4096), rows_256)
        rows.append(case(f"{rows_256} MiB whole-array mean", url("big"), options, server,
                         np.s_[...], "mean", None, stored))
        stored = write(url("tiny"), options, lambda n: noise(n, 64), (256, 64), (16, 16), 256)
        rows.append(case("tiny chunks, no axis reduced", url("tiny"), options, server,
                         np.s_[...], "sum", (), stored))
        for row in rows:
            print(row)


if __name__ == "__main__":
    main()

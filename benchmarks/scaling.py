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
from activezarr.servers.processes import active_server
from activezarr.transport import traffic
from activezarr.transport.sync import run_sync

BUCKET = "scaling"
#: Month (0-11) of each day of a year starting on 1 January.
MONTHS = np.repeat(np.arange(12), [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


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


def climatology(values: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Per calendar month, the mean of each cell over its days (plain numpy)."""
    return np.stack([values[months == m].mean(axis=0) for m in range(12)])


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


def case(name: str, url: str, options: dict[str, Any], server: str,
         active: Callable[[activezarr.ActiveReduction], Any],
         plain_read: Callable[[zarr.Array], Any], stored: int) -> Row:
    """``active(red)`` against ``plain_read(array)`` (the same answer from plain zarr)."""
    store = activezarr.ActiveStore.from_url(url, storage_options=options,
                                            active={"server": server})
    array = zarr.open_array(store, mode="r")
    red = activezarr.ActiveReduction(array, missing=None, fallback=False)
    active(red)  # warm-up: capability document, sessions
    active_s = best(lambda: active(red))
    report = red.last_report
    assert report is not None
    plain = zarr.open_array(zarr.storage.FsspecStore.from_url(
        url, storage_options=options, read_only=True), mode="r")
    plain_s = best(lambda: plain_read(plain))
    moved = plain_bytes(plain, lambda: plain_read(plain))
    return Row(name, stored or report.bytes_stored, report, active_s, moved, plain_s,
               report.estimated_bytes, report.backend)


def reduction(selection: Any, op: str, axis: Any, **options: Any
              ) -> tuple[Callable[[activezarr.ActiveReduction], Any], Callable[[zarr.Array], Any]]:
    """The active call and its plain numpy equivalent, for numpy-named ops."""
    return (lambda red: red[selection].reduce(op, axis, **options),
            lambda array: getattr(np, op)(array[selection], axis=axis))


def write(url: str, options: dict[str, Any], data: Callable[[int], np.ndarray],
          shape: tuple[int, ...], chunks: tuple[int, ...], written: int, **kwargs: Any) -> int:
    """An array of ``shape``: its first ``written`` rows of chunks written; its stored bytes."""
    array = zarr.create_array(zarr.storage.FsspecStore.from_url(url, storage_options=options),
                              shape=shape, chunks=chunks, dtype="float32", fill_value=0,
                              **kwargs)
    for start in range(0, written, chunks[0]):
        stop = min(written, start + chunks[0])
        array[start:stop] = data(stop - start)
    stored = int(array.nbytes_stored())
    # that listing stays in s3fs's cache, sparing plain reads the HEAD s3fs sends before
    # reading a whole object: a fresh session would send it
    array.store.fs.invalidate_cache()
    return stored


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
                         *reduction(np.s_[5:6], "mean", None), stored))
        stored = write(url("point100k"), options, noise, (100_000, 256), (1, 256), 50)
        rows.append(case("one chunk of 100,000 (50 written)", url("point100k"), options,
                         server, *reduction(np.s_[5:6], "mean", None), stored))
        days = 60 if args.quick else 365
        lat = np.cos(np.deg2rad(np.linspace(-90, 90, 180)))[:, None]

        def daily(n: int) -> np.ndarray:
            field = 250 + 40 * lat + rng.normal(0, 2, (n, 180, 360))
            return np.round(field, 1).astype("float32")

        stored = write(url("daily"), options, daily, (days, 180, 360), (1, 180, 360), days)
        rows.append(case(f"daily ({days},180,360) time mean", url("daily"), options, server,
                         *reduction(np.s_[...], "mean", 0), stored))
        rows.append(case("daily, cos(lat)-weighted mean per step", url("daily"), options,
                         server, lambda red: red.reduce("weighted_mean", (1, 2), weights=lat),
                         lambda a: (a[...] * lat).sum((1, 2)) / (lat.sum() * 360), stored))
        months = MONTHS[:days]
        rows.append(case("daily, monthly climatology (12,180,360)", url("daily"), options,
                         server, lambda red: red.reduce("mean", 0, groups=(0, months, 12)),
                         lambda a: climatology(a[...], months), stored))
        rows_256 = 64 if args.quick else 256
        stored = write(url("big"), options, lambda n: noise(n, 4096 * 64).reshape(n, 64, 4096),
                       (rows_256, 64, 4096), (1, 64, 4096), rows_256)
        rows.append(case(f"{rows_256} MiB whole-array mean", url("big"), options, server,
                         *reduction(np.s_[...], "mean", None), stored))
        stored = write(url("tiny"), options, lambda n: noise(n, 64), (256, 64), (16, 16), 256)
        rows.append(case("tiny chunks, no axis reduced", url("tiny"), options, server,
                         *reduction(np.s_[...], "sum", ()), stored))
        for row in rows:
            print(row)


if __name__ == "__main__":
    main()

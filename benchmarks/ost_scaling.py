"""Where should a reduction run on a striped file system? Measurements on real clusters.

1. Scaling: with each OST's disk limited to ``--disk-rate`` MB/s, the throughput of an active
   whole-array mean of uncompressed data for 1, 2, 4 and 8 OSTs (target: >= 0.7 x N at N = 4).
2. Paths: with the client's LAN limited to ``--lan-rate`` MB/s, the ost and oss paths against
   the client path, in time and LAN bytes.
3. Batching (``--baseline SRC``): a daily time series on the ost path, reduced by this tree and
   by the tree whose ``src`` directory is SRC (e.g. a worktree of the commit before batching:
   ``git worktree add /tmp/base fd7639b``), side by side in one run: requests, LAN bytes, time.
   Each tree runs in its own process with its own cluster (its own servers).

Run: ``python benchmarks/ost_scaling.py [--disk-rate 20] [--lan-rate 50] [--size-mb 64]``
or  ``python benchmarks/ost_scaling.py --baseline /tmp/base/src [--lan-rate 50]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zarr

import activezarr
from activezarr.ost import Cluster, ClusterConfig

MiB = 2**20
CHUNKS = (1024, 1024)  # 4 MiB float32 chunks


def _data(size_mb: int) -> np.ndarray:
    """Float32 noise rounded to 0.01: compresses somewhat, like real fields."""
    rows = size_mb * MiB // (4 * CHUNKS[1])
    rng = np.random.default_rng(0)
    return np.round(rng.normal(280, 10, size=(rows, CHUNKS[1])), 2).astype("<f4")


def _write(url: str, data: np.ndarray, stripe_size: int, compressors: Any) -> None:
    store = activezarr.ActiveStore.from_url(url, storage_options={"stripe_size": stripe_size})
    array = zarr.create_array(store, shape=data.shape, dtype=data.dtype, chunks=CHUNKS,
                              compressors=compressors)
    array[...] = data


def _mean(url: str, repeat: int, **active: Any) -> tuple[float, activezarr.Report]:
    """Best time of ``repeat`` whole-array means, and the report of the last."""
    store = activezarr.ActiveStore.from_url(url, active=active)
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"), missing=None,
                                     fallback=False)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        red.mean()
        best = min(best, time.perf_counter() - start)
    assert red.last_report is not None
    return best, red.last_report


def scaling(osts: list[int], disk_rate: float, size_mb: int, repeat: int) -> None:
    data = _data(size_mb)
    print(f"\nActive mean of {data.nbytes / 1e6:.0f} MB uncompressed float32 (4 MiB chunks, "
          f"1 MiB stripes), each OST disk at {disk_rate} MB/s")
    print(f"{'OSTs':>5} {'seconds':>8} {'MB/s':>8} {'speed-up':>9} {'per OST':>8}")
    base = None
    for n in osts:
        with tempfile.TemporaryDirectory() as root, \
                Cluster(ClusterConfig(root=Path(root), osts=n, disk_rate=disk_rate)) as cluster:
            url = f"{cluster.url}/scaling.zarr"
            _write(url, data, MiB, None)
            seconds, report = _mean(url, repeat)
        rate = report.bytes_stored / seconds / 1e6
        base = base or rate
        print(f"{n:>5} {seconds:>8.2f} {rate:>8.1f} {rate / base:>8.2f}x {rate / base / n:>8.2f}")


def paths(lan_rate: float, size_mb: int, repeat: int) -> None:
    data = _data(size_mb)
    zstd = zarr.codecs.ZstdCodec()
    print(f"\nWhole-array mean of {data.nbytes / 1e6:.0f} MB float32 on 4 OSTs, client LAN at "
          f"{lan_rate} MB/s")
    print(f"{'data':<34} {'path':<7} {'seconds':>8} {'stored MB':>10} {'LAN bytes':>11} "
          f"{'LAN %':>7}")
    cases = [
        ("uncompressed, 1 MiB stripes", MiB, None, {}),
        ("uncompressed, 1 MiB stripes", MiB, None, {"backend": "client"}),
        ("zstd, 8 MiB stripes (single OST)", 8 * MiB, zstd, {}),
        ("zstd, 1 MiB stripes (spread)", MiB, zstd, {"spread_compressed": "oss"}),
        ("zstd, 1 MiB stripes (spread)", MiB, zstd, {"spread_compressed": "client"}),
    ]
    with tempfile.TemporaryDirectory() as root, \
            Cluster(ClusterConfig(root=Path(root), osts=4, lan_rate=lan_rate)) as cluster:
        written = set()
        for name, stripe, compressors, active in cases:
            url = f"{cluster.url}/{name.split(',')[0]}-{stripe}.zarr"
            if url not in written:
                _write(url, data, stripe, compressors)
                written.add(url)
            seconds, report = _mean(url, repeat, **active)
            path = "+".join(sorted(report.paths))
            share = 100 * report.bytes_from_storage / report.bytes_stored
            print(f"{name:<34} {path:<7} {seconds:>8.2f} {report.bytes_stored / 1e6:>10.1f} "
                  f"{report.bytes_from_storage:>11} {share:>6.2f}%")


#: A daily field: 365 steps of (90, 180) float32, one step per chunk (64.8 kB).
DAILY = (365, 90, 180)
#: (name, stripe size, compressors, active options, axis) of the batching cases.
BATCHING = [
    ("uncompressed, 1 MiB stripes: mean", MiB, None, {}, None),
    ("uncompressed, 1 MiB stripes: time mean", MiB, None, {}, 0),
    ("zstd, 16 KiB stripes (OSS): time mean", 16 * 1024, "zstd", {}, 0),
    ("zstd, 16 KiB stripes (client): time mean", 16 * 1024, "zstd",
     {"spread_compressed": "client"}, 0),
]


def measure_batching(lan_rate: float, repeat: int) -> dict[str, dict[str, float]]:
    """The batching cases with whichever activezarr this process imports."""
    data = np.random.default_rng(0).normal(280, 10, size=DAILY).astype("<f4")
    out = {}
    with tempfile.TemporaryDirectory() as root, \
            Cluster(ClusterConfig(root=Path(root), osts=4, lan_rate=lan_rate)) as cluster:
        for name, stripe, codec, active, axis in BATCHING:
            url = f"{cluster.url}/daily-{stripe}-{codec}.zarr"
            if url not in out:
                store = activezarr.ActiveStore.from_url(url,
                                                        storage_options={"stripe_size": stripe})
                zarr.create_array(store, shape=DAILY, dtype="<f4", chunks=(1, *DAILY[1:]),
                                  compressors=zarr.codecs.ZstdCodec() if codec else None
                                  )[...] = data
                out[url] = {}
            red = activezarr.ActiveReduction(
                zarr.open_array(activezarr.ActiveStore.from_url(url, active=active), mode="r"),
                missing=None, fallback=False)
            best = float("inf")
            for _ in range(repeat):
                start = time.perf_counter()
                got = red.mean(axis=axis)
                best = min(best, time.perf_counter() - start)
            np.testing.assert_allclose(got, data.mean(axis=axis, dtype="f8"), rtol=1e-5)
            report = red.last_report
            assert report is not None
            out[name] = {"seconds": best, "requests": report.requests,
                         "lan": report.bytes_from_storage, "stored": report.bytes_stored}
    return {name: figures for name, figures in out.items() if figures}


def batching(baseline: str, lan_rate: float, repeat: int) -> None:
    """This tree against ``baseline`` (a ``src`` directory), each in its own process."""
    here = str(Path(__file__).resolve().parents[1] / "src")
    runs = {}
    for tree, src in (("before", baseline), ("after", here)):
        env = {**os.environ, "PYTHONPATH": src}
        child = subprocess.run(
            [sys.executable, __file__, "--measure-batching", "--lan-rate", str(lan_rate),
             "--repeat", str(repeat)], env=env, check=True, capture_output=True, text=True)
        runs[tree] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"\nDaily {DAILY} float32 on 4 OSTs, client LAN at {lan_rate} MB/s: "
          f"before = {baseline}, after = this tree (best of {repeat})")
    print(f"{'case':<40} {'requests':>15} {'LAN bytes':>23} {'LAN / stored':>17} "
          f"{'seconds':>13} {'speed-up':>8}")
    for name in runs["after"]:
        b, a = runs["before"][name], runs["after"][name]
        print(f"{name:<40} {b['requests']:>7} {a['requests']:>7} {b['lan']:>11} {a['lan']:>11} "
              f"{b['lan'] / b['stored']:>8.2%} {a['lan'] / a['stored']:>8.2%} "
              f"{b['seconds']:>6.2f} {a['seconds']:>6.2f} {b['seconds'] / a['seconds']:>7.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--disk-rate", type=float, default=20.0, help="MB/s per OST disk")
    parser.add_argument("--lan-rate", type=float, default=50.0, help="MB/s of the client LAN")
    parser.add_argument("--size-mb", type=int, default=64, help="dataset size")
    parser.add_argument("--osts", default="1,2,4,8", help="OST counts to scale over")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--baseline", help="src directory of the tree to compare batching with")
    parser.add_argument("--measure-batching", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_batching:
        print(json.dumps(measure_batching(args.lan_rate, args.repeat)))
        return
    if args.baseline:
        batching(args.baseline, args.lan_rate, args.repeat)
        return
    scaling([int(n) for n in args.osts.split(",")], args.disk_rate, args.size_mb, args.repeat)
    paths(args.lan_rate, args.size_mb, args.repeat)


if __name__ == "__main__":
    main()

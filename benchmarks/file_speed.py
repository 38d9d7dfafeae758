"""Time ``ActiveReduction(arr).mean()`` (file backend) against ``arr[...].mean()`` (zarr + numpy).

Run from anywhere:  python benchmarks/file_speed.py [--scale N] [--rounds N] [--dir PATH]

For each case it writes the array once (float32, smooth field + noise), then alternates the two
ways of taking the whole-array mean ``--rounds`` times after one warm-up each, and prints the
best time of each, the throughput (logical, decoded bytes per second) and the ratio
active/zarr, with the issue's target for that case. The best time is the estimate least
disturbed by other load on the machine (as ``timeit`` recommends); the ratio of the median
times is printed too. Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cases

#: The issue's targets: active throughput at least this multiple of zarr + numpy's.
TARGETS = {"large_zstd": 0.8, "large8_zstd": 0.8, "small_zstd": 2.0, "small_raw": 2.0}


def measure(case, root: str, rounds: int) -> dict:
    t0 = time.perf_counter()
    path = _cases.build(case, root)
    built = time.perf_counter() - t0
    active, plain = _cases.open_active(path), _cases.open_plain(path)
    got, red = _cases.active_mean(active)
    want = _cases.zarr_numpy_mean(plain)
    if not np.isclose(got, want, rtol=1e-5):
        raise AssertionError(f"{case.name}: active mean {got} != zarr+numpy mean {want}")
    times = _cases.side_by_side(active, plain, rounds)
    t_active, t_plain = times["active"], times["zarr"]
    ta, tz = min(t_active), min(t_plain)
    return {"built": built, "ta": ta, "tz": tz, "ratio": tz / ta,
            "median_ratio": statistics.median(t_plain) / statistics.median(t_active),
            "stored": red.last_report.bytes_stored}


def _verdict(target: float | None, ok: bool) -> str:
    return "" if target is None else f">={target:.1f} {'ok' if ok else 'MISS'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=2,
                        help="size multiplier: 1 = 128 MiB large-chunk / 64 MiB small-chunk arrays")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per method")
    parser.add_argument("--dir", help="where to write the arrays (default: a temp dir, removed)")
    parser.add_argument("--cases", nargs="*", help="only these cases")
    args = parser.parse_args(argv)

    selected = [case for name, case in _cases.cases(args.scale).items()
                if not args.cases or name in args.cases]
    with tempfile.TemporaryDirectory(prefix="activezarr-compare-") as tmp:
        root = args.dir or tmp
        print(f"cpus={os.cpu_count()}  rounds={args.rounds}  data in {root}\n")
        header = (f"{'case':<12} {'chunk':>8} {'chunks':>6} {'size MiB':>8} {'stored':>7} "
                  f"{'active s':>9} {'zarr s':>8} {'active MB/s':>11} {'zarr MB/s':>10} "
                  f"{'ratio':>6} {'median':>7} {'target':>9}")
        print(header)
        print("-" * len(header))
        failed = False
        for case in selected:
            r = measure(case, root, args.rounds)
            target = TARGETS.get(case.name)
            ok = target is None or r["ratio"] >= target
            failed |= not ok
            mb = case.nbytes / 1e6
            print(f"{case.name:<12} {case.chunk_nbytes // 1024:>5}KiB {case.nchunks:>6} "
                  f"{case.nbytes / _cases.MiB:>8.0f} {r['stored'] / case.nbytes:>6.0%} "
                  f"{r['ta']:>9.3f} {r['tz']:>8.3f} {mb / r['ta']:>11.0f} {mb / r['tz']:>10.0f} "
                  f"{r['ratio']:>6.2f} {r['median_ratio']:>7.2f} "
                  f"{_verdict(target, ok):>9}",
                  flush=True)
    print("\nratio = active throughput / zarr+numpy throughput, from the best times; "
          "median = the same from the median times;\nstored = stored bytes / logical bytes; "
          f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

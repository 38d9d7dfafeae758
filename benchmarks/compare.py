"""activezarr against what users would pick instead: one dataset, one run, measured side by side.

Run from a checkout:  python benchmarks/compare.py [--lan 100mbit] [--size 256] [--repeat 3]

Writes a daily ``tas(time, lat, lon)`` float32 field (``--size`` MiB, a few days per chunk) as
zarr and as netCDF4, locally, in S3 (moto), behind a plain HTTP file server and in an OST
cluster, starts the active server, and answers each query (``_queries.LEGEND``) with each
method, each case in a subprocess of its own. For each it prints the wall time (opening
included), the CPU time of the client process (all its threads: steadier than wall time on a
loaded machine, but blind to work done by servers), the bytes that reached the client over the
network, all bytes the client process read (the kernel's ``rchar``: files and sockets, after
imports), the child's peak memory (its ``VmHWM``; ``ru_maxrss`` would count the parent's pages
at fork) and whether its answer matches the others. ``--repeat N`` runs every case N times,
the methods of a query in turn, and keeps the run of median wall time.

As root, the client runs in a network namespace joined to the storage side's by a veth pair
(``--lan RATE``: shaped with tc tbf, e.g. ``100mbit``, ``1gbit``; without it: unshaped), so
network bytes are the kernel's count of what crossed the link. Without root it says so and runs
on loopback, where network bytes are not measured. ``--json FILE`` keeps the results for
``plots.py``. A method that cannot say a query is skipped with the reason printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _netns
import _queries

#: Each method, and the method it is measured against (same place, plain read).
METHODS = {
    "zarr-local": "plain zarr + numpy, local files",
    "zarr-s3": "plain zarr + numpy, S3",
    "zarr-http": "plain zarr + numpy, the local files from a plain HTTP file server",
    "xarray-dask-s3": "xarray + dask on the client, S3",
    "pas-local": "PyActiveStorage, local netCDF4",
    "pas-server": "PyActiveStorage, netCDF4 in S3, our server as its Reductionist",
    "az-file": "activezarr file backend, local zarr",
    "az-file-server": "activezarr file backend, the active server reading its own files "
                      "(--allow-root)",
    "az-nc-local": "activezarr reference backend, the same local netCDF4",
    "az-s3": "activezarr s3 backend (active server in front of S3)",
    "az-reference": "activezarr reference backend, netCDF4 in S3 via kerchunk",
    "az-ost": "activezarr ost backend (OSTs reduce their own stripes)",
    "pas-local-small": "PyActiveStorage, local netCDF4 of small chunks",
    "az-nc-local-small": "activezarr reference backend, the same small-chunk netCDF4",
}
BASELINE = {"zarr-local": None, "zarr-s3": None, "zarr-http": None, "xarray-dask-s3": "zarr-s3",
            "pas-local": "zarr-local", "pas-server": "zarr-s3", "az-file": "zarr-local",
            "az-file-server": "zarr-http",
            "az-nc-local": "pas-local", "az-s3": "zarr-s3", "az-reference": "zarr-s3",
            "az-ost": "zarr-s3", "pas-local-small": None, "az-nc-local-small": "pas-local-small"}
SMALL = {"pas-local-small", "az-nc-local-small"}


def _proc(path: str, field: str) -> int:
    """A counter the kernel keeps for this process (``/proc/self/io`` or ``status``)."""
    fields = dict(line.split(":", 1) for line in Path(path).read_text().splitlines())
    return int(fields[field].split()[0])


def _rchar() -> int:
    """Bytes this process has read so far (files and sockets)."""
    return _proc("/proc/self/io", "rchar")


def _cpu() -> float:
    """CPU seconds of this process so far, all threads, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(method: str, query: str, where_file: str) -> int:
    """One case, in this process: print a JSON line of seconds, answer digest and rchar."""
    where = json.loads(Path(where_file).read_text())
    _queries.prepare(method)
    rchar, cpu = _rchar(), _cpu()
    start = time.perf_counter()
    try:
        answer = _queries.run(method, query, where)
    except _queries.Unsupported as exc:
        print(json.dumps({"skip": str(exc)}))
        return 0
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cpu": _cpu() - cpu, "shape": list(answer.shape),
                      "rchar": _rchar() - rchar,
                      "peak_mib": _proc("/proc/self/status", "VmHWM") / 1024,
                      "answer": answer.ravel()[:100000].tolist()}))
    return 0


def _spawn(method: str, query: str, where_file: Path, namespace: bool, timeout: float,
           env: dict[str, str] | None = None) -> dict[str, Any]:
    """One case in a child process (``env``: its environment, if not this one's)."""
    command = [sys.executable, os.path.abspath(__file__), "--child", method, query,
               str(where_file)]
    if namespace:
        command = _netns.in_namespace(_netns.CLIENT, command)
    before = _netns.bytes_to_client() if namespace else None
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return {"error": f"timed out after {timeout:.0f} s"}
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().strip().splitlines()
        if process.returncode or not lines:
            return {"error": err.read().decode().strip().splitlines()[-1:] or ["no output"]}
    result = json.loads(lines[-1])
    if before is not None:
        result["net_bytes"] = _netns.bytes_to_client() - before
    return result


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time (the last one if any did not finish), with all the times."""
    if any("seconds" not in r for r in runs):
        return runs[-1]
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "runs": [r["seconds"] for r in runs]}


def _check(results: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Mark each answer against the first answer of its query (zarr + numpy where it ran)."""
    reference: dict[tuple[str, bool], np.ndarray] = {}
    for (method, query), r in results.items():
        if "answer" not in r:
            continue
        got = np.asarray(r.pop("answer")).reshape(r["shape"] if len(r["shape"]) and
                                                  np.prod(r["shape"]) <= 100000 else -1)
        want = reference.setdefault((query, method in SMALL), got)
        r["check"] = "ok" if got.shape == want.shape and np.allclose(
            got, want, rtol=1e-4, equal_nan=True) else "DIFF"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(results: dict[tuple[str, str], dict[str, Any]], queries: list[str]) -> None:
    header = (f"{'query':<11} {'method':<18} {'seconds':>8} {'cpu s':>6} {'net bytes':>13} "
              f"{'read bytes':>13} {'peak MiB':>8} {'vs plain':>9} {'check':>5}")
    print(header + "\n" + "-" * len(header))
    for query in queries:
        for method in METHODS:
            r = results.get((method, query))
            if r is None:
                continue
            if "seconds" not in r:
                print(f"{query:<11} {method:<18} skipped: {r.get('skip') or r.get('error')}")
                continue
            base = results.get((BASELINE[method], query), {}) if BASELINE[method] else {}
            speedup = base["seconds"] / r["seconds"] if "seconds" in base else None
            print(f"{query:<11} {method:<18} {r['seconds']:>8.2f} {r['cpu']:>6.2f} "
                  f"{_fmt(r.get('net_bytes'), ',d'):>13} {r['rchar']:>13,d} "
                  f"{r['peak_mib']:>8.0f} {_fmt(speedup, '.1f') + ('x' if speedup else ''):>9} "
                  f"{r.get('check', '-'):>5}", flush=True)
    print()
    for method, what in METHODS.items():
        print(f"  {method:<18} {what}" + (f"; vs plain = time of {BASELINE[method]} / this time"
                                           if BASELINE[method] else ""))
    for query, what in _queries.LEGEND.items():
        print(f"  {query:<18} {what}")


def run_all(args: argparse.Namespace, host: str, namespace: bool) -> dict[str, Any]:
    from _rig import Rig, Shape
    shape = Shape(size_mib=args.size, days=args.days, lat=args.lat, lon=args.lon)
    methods = args.methods or list(METHODS)
    queries = args.queries or list(_queries.QUERIES)
    with tempfile.TemporaryDirectory(prefix="activezarr-compare-") as tmp:
        t0 = time.perf_counter()
        with Rig(Path(tmp), shape, host) as rig:
            where_file = Path(tmp) / "where.json"
            where_file.write_text(json.dumps(rig.where))
            print(f"dataset: {shape.time} x {shape.lat} x {shape.lon} float32 "
                  f"({shape.size_mib} MiB), {shape.days} days per chunk "
                  f"({shape.days * shape.lat * shape.lon * 4 / 2**20:.2f} MiB), written in "
                  f"{time.perf_counter() - t0:.0f} s; link: {args.link}; cpus: {os.cpu_count()}"
                  f"\n", flush=True)
            runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for query in queries:
                for _ in range(args.repeat):
                    for method in methods:
                        if method in SMALL and query != "mean" or any(
                                "seconds" not in r for r in runs.get((method, query), ())):
                            continue  # a case that skipped or failed once is not run again
                        r = _spawn(method, query, where_file, namespace, args.timeout)
                        runs.setdefault((method, query), []).append(r)
                        if "skip" in r or "error" in r:
                            print(f"  {method} {query}: {r.get('skip') or r.get('error')}",
                                  flush=True)
    results = {case: _median(done) for case, done in runs.items()}
    _check(results)
    print_table(results, queries)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return {"link": args.link, "size_mib": args.size, "days": args.days,
            "repeat": args.repeat, "load": os.getloadavg()[0],
            "results": [{"method": m, "query": q, **r} for (m, q), r in results.items()]}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lan", help="link rate for tc tbf, e.g. 100mbit, 1gbit (needs root)")
    p.add_argument("--size", type=int, default=256, help="dataset size in MiB (default 256)")
    p.add_argument("--days", type=int, default=4, help="time steps per chunk (default 4)")
    p.add_argument("--lat", type=int, default=192)
    p.add_argument("--lon", type=int, default=384)
    p.add_argument("--methods", nargs="*", choices=list(METHODS))
    p.add_argument("--queries", nargs="*", choices=list(_queries.QUERIES))
    p.add_argument("--quick", action="store_true",
                   help="a 4 MiB dataset on a small grid: checks the machinery in seconds")
    p.add_argument("--loopback", action="store_true", help="no namespaces even as root")
    p.add_argument("--repeat", type=int, default=1,
                   help="runs of each case; the one of median wall time is kept (default 1)")
    p.add_argument("--timeout", type=float, default=900, help="seconds per case")
    p.add_argument("--json", help="write the results here (for plots.py)")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.lat, args.lon = 4, 32, 64
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        return child(*args.child)
    if args.inside:  # the storage side, already in its namespace
        args.link = args.lan or "veth, unshaped"
        out = run_all(args, _netns.STORE_IP, namespace=True)
    else:
        why = "--loopback" if args.loopback else _netns.can_emulate()
        if why is None:
            with _netns.lan(args.lan):
                command = [sys.executable, os.path.abspath(__file__), "--inside",
                           *(argv if argv is not None else sys.argv[1:])]
                return subprocess.run(_netns.in_namespace(_netns.STORE, command)).returncode
        print(f"no network emulation ({why}): loopback, network bytes not measured")
        args.link = "loopback"
        out = run_all(args, "127.0.0.1", namespace=False)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The server benchmarks' workloads on two revisions of the active server, paired.

Run:  python benchmarks/server_ab.py BEFORE AFTER [--rounds N] [--shape NAME ...]

BEFORE and AFTER are git revisions of this repository (``e489932``, ``HEAD``, ``main~3``) or
directories holding an ``activezarr`` package (``src``: the working tree, changes included).
Each revision's ``src`` is exported with ``git archive`` to a temporary directory (removed on
exit; the repository is not touched), and each runs as its own ``activezarr serve`` process on
loopback (``PYTHONPATH`` naming its ``src``), both serving the same chunks of one
``server_speed.Rig``; this interpreter's packages serve both, so use a venv the newer revision
installs into.

The shapes are ``bench_server.py``'s (asv): one 64 KiB request through ``s3`` (moto) and
``file``, 100 requests of 1 KiB one by one, a batch of the same 100, and a batch of 64 zlib
chunks of 512 KiB. Every round runs each shape once on each server, back to back, the order
swapped each round, so that whatever else loads the machine falls on both alike; the first
round warms up and is not counted. Prints per shape the median wall time of each, the median
of the rounds' AFTER/BEFORE ratios (what to judge by: 1.05 is 5 % slower) with their
quartiles, the ratio of the fastest runs (``best``: least disturbed by other work), the same
median ratio for the server's CPU time, and the load average before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import server_speed

REPO = Path(__file__).resolve().parent.parent
#: The asv server shapes: what one timed run of each does, on the server named.
SHAPES: dict[str, Callable[[server_speed.Rig, str], object]] = {
    "overhead s3 (20 x 64 KiB)": lambda rig, s: [rig.single("s3", s) for _ in range(20)],
    "overhead file (20 x 64 KiB)": lambda rig, s: [rig.single("file", s) for _ in range(20)],
    "100 singles of 1 KiB": lambda rig, s: rig.singles(s),
    "batch of 100 x 1 KiB": lambda rig, s: rig.small_batch(s),
    "batch of 64 x 512 KiB zlib": lambda rig, s: rig.big_batch(s),
}


def _source(revision: str, into: Path) -> Path:
    """The ``src`` directory of ``revision``: a directory given as is, else exported from git."""
    given = Path(revision)
    if (given / "activezarr").is_dir():
        return given.resolve()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", revision,
                              "src"], capture_output=True, check=False)
    if archive.returncode:
        raise SystemExit(f"{revision!r} is neither a git revision of {REPO} nor a directory "
                         f"holding activezarr: {archive.stderr.decode().strip()}")
    into.mkdir()
    with tempfile.TemporaryFile() as tar:
        tar.write(archive.stdout)
        tar.seek(0)
        with tarfile.open(fileobj=tar) as files:
            files.extractall(into, filter="data")
    return into / "src"


def _imports_from(src: Path) -> None:
    """Refuse to measure a server that would import activezarr from elsewhere."""
    where = subprocess.run(
        [sys.executable, "-c", "import activezarr; print(activezarr.__file__)"],
        env={**os.environ, "PYTHONPATH": str(src)}, capture_output=True, text=True, check=True)
    if not Path(where.stdout.strip()).is_relative_to(src):
        raise SystemExit(f"with PYTHONPATH={src} activezarr comes from {where.stdout.strip()}")


@contextlib.contextmanager
def _sources(before: str, after: str) -> Iterator[dict[str, Path]]:
    with tempfile.TemporaryDirectory(prefix="activezarr-server-ab-") as tmp:
        sources = {"before": _source(before, Path(tmp) / "before"),
                   "after": _source(after, Path(tmp) / "after")}
        for src in sources.values():
            _imports_from(src)
        yield sources


Runs = dict[tuple[str, str], list[tuple[float, float]]]


def _cpu(process: psutil.Process) -> float:
    """CPU seconds of ``process``'s threads: to the nanosecond where Linux's schedstat is (the
    clock ticks ``cpu_times`` counts are 10 ms, too coarse for one batch)."""
    try:
        return sum(int(Path(f"/proc/{process.pid}/task/{thread.id}/schedstat").read_text()
                       .split()[0]) for thread in process.threads()) / 1e9
    except (OSError, ValueError, IndexError):  # not Linux, or a thread gone meanwhile
        times = process.cpu_times()
        return times.user + times.system


def measure(rig: server_speed.Rig, shapes: list[str], rounds: int) -> Runs:
    """(wall s, server CPU s) of each run, by (server, shape), the warm-up round left out."""
    processes = {name: psutil.Process(p.pid) for name, p in rig.processes.items()}
    runs: Runs = {}
    for round_ in range(rounds + 1):
        for shape in shapes:
            order = ["before", "after"] if round_ % 2 else ["after", "before"]
            for server in order:
                cpu0, start = _cpu(processes[server]), time.perf_counter()
                SHAPES[shape](rig, server)
                wall, cpu = time.perf_counter() - start, _cpu(processes[server]) - cpu0
                if round_:
                    runs.setdefault((server, shape), []).append((wall, cpu))
    return runs


def _median(runs: list[tuple[float, float]], i: int) -> float:
    """Median of the runs' wall times (``i`` 0) or CPU times (1), in ms."""
    return 1e3 * statistics.median(run[i] for run in runs)


def _ratios(before: list[tuple[float, float]], after: list[tuple[float, float]],
            i: int) -> list[float]:
    """Each round's after/before ratio of wall (``i`` 0) or CPU (1) times."""
    return [a[i] / b[i] for a, b in zip(after, before) if b[i] > 0]


def report(runs: Runs, shapes: list[str]) -> str:
    width = max(map(len, shapes))
    lines = [f"{'shape':<{width}}  {'before ms':>9}  {'after ms':>9}  {'ratio':>6}  "
             f"{'quartiles':>11}  {'best':>6}  {'CPU before':>10}  {'CPU after':>9}  "
             f"{'ratio':>6}"]
    for shape in shapes:
        before, after = runs["before", shape], runs["after", shape]
        wall, cpu = _ratios(before, after, 0), _ratios(before, after, 1)
        low, _, high = statistics.quantiles(wall, n=4) if len(wall) > 1 else (wall[0],) * 3
        best = min(a for a, _ in after) / min(b for b, _ in before)
        lines.append(f"{shape:<{width}}  {_median(before, 0):9.1f}  {_median(after, 0):9.1f}  "
                     f"{statistics.median(wall):6.3f}  {low:5.2f}-{high:5.2f}  {best:6.3f}  "
                     f"{_median(before, 1):10.1f}  {_median(after, 1):9.1f}  "
                     f"{statistics.median(cpu) if cpu else float('nan'):6.3f}")
    return "\n".join(lines)


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="git revision, or a directory holding activezarr")
    parser.add_argument("after", help="git revision, or a directory holding activezarr")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--shape", action="append", choices=list(SHAPES),
                        help="only this shape (repeatable; default: every one)")
    args = parser.parse_args(argv)
    shapes = args.shape or list(SHAPES)
    with _sources(args.before, args.after) as sources:
        load = _load()
        servers = {name: {"PYTHONPATH": str(src)} for name, src in sources.items()}
        with server_speed.Rig(servers) as rig:
            runs = measure(rig, shapes, max(1, args.rounds))
    print(f"before = {args.before}, after = {args.after}; medians of {args.rounds} paired "
          f"rounds; ratio: of after/before per round; CPU: the server process's")
    print(report(runs, shapes))
    print(f"load average (1, 5, 15 min): {load} before, {_load()} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale out, measured: K active servers and W dask workers, each node on its own bounded link.

Run from a checkout, as root:  python benchmarks/scale_out.py [--rate 50mbit] [--repeat 3]
(``--replot``: only redraw from the JSON; ``--quick --loopback``: the machinery in a minute).

It models a site (``_star.py``): S3 (moto) in a hub namespace, and K active servers and W dask
workers, each in a namespace of its own whose link to the object store is shaped at ``--rate``.
Servers, workers and scheduler talk over the unshaped rest of the hub (the site's compute
network), so the per-node links to storage, not two cores, bound the runs. For each query
(whole-array mean, monthly climatology), each W in ``--workers`` and each K in ``--servers`` it
times ``activezarr.dask.reduce`` with the K servers listed, on the first W workers only, and
the same query read plainly by xarray + dask on the same W workers; W = 0 is one client process
without dask (``ActiveReduction``). Every run's answer is checked against numpy; every run
records the bytes the object store sent (the kernel's count per link), the 1-minute load
average and how busy the machine's CPUs were while it ran (``/proc/stat``: other helpers'
work included). A run during which this process was frozen (a virtual machine paused) or dask
lost a worker is set aside (``spoilt`` in the JSON) and run again, the worker started again.
Then, with links unshaped, the per-chunk cost against chunk size next to the
decoder floor (zstd-decoding the same stored chunks on both cores), and a server killed
mid-run at K = 4: the answer and the time it cost. Writes ``benchmarks/results/scale_out.json``
and ``docs/scale_out.png``, ``docs/chunk_cost.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _netns
import _star

HERE = Path(__file__).resolve().parent
SERVER_PORT = 8080
QUERIES = ("mean", "climatology")
#: Chunk sizes (KiB) of the per-chunk cost sweep, on a (lat, lon) grid of 32 KiB a day.
SWEEP_KIB = (64, 256, 1024, 4096)
#: Seconds this process may go without running during a run (a machine paused or frozen)
#: before the run is no measure of the system and is run again.
PAUSE_LIMIT = 5.0
#: Runs of a case at most, when runs are spoilt (a pause, a dask worker lost).
TRIES = 3


# -- the machine --------------------------------------------------------------------------------

def _cpu_ticks() -> tuple[int, int]:
    """(idle, total) jiffies of the whole machine so far: every process, not only ours."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return ticks[3] + ticks[4], sum(ticks)


class PauseWatch:
    """The longest time this process went without running while inside (``longest``,
    seconds): a thread that wakes every ``tick`` seconds sees the gap when the machine (a
    virtual machine paused) or the process was frozen, which no run's timing should carry."""

    def __init__(self, tick: float = 0.1) -> None:
        self.tick, self.longest = tick, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick):
            now = time.monotonic()
            self.longest = max(self.longest, now - last - self.tick)
            last = now

    def __enter__(self) -> PauseWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def measured(record: dict[str, Any], links: int) -> Iterator[None]:
    """Fill ``record`` with seconds, store bytes (first ``links`` nodes), load, CPU busy and
    the longest pause of this process (``paused``, seconds)."""
    sent = [_star.bytes_from_store(i) for i in range(links)]
    idle, total = _cpu_ticks()
    start = time.perf_counter()
    try:
        with PauseWatch() as watch:
            yield
    finally:  # a run that failed has its figures too
        record["seconds"] = time.perf_counter() - start
        record["paused"] = watch.longest
        idle2, total2 = _cpu_ticks()
        record["cpu_busy"] = 1 - (idle2 - idle) / max(1, total2 - total)
        record["load"] = os.getloadavg()[0]
        if links:
            record["link_bytes"] = [_star.bytes_from_store(i) - s for i, s in enumerate(sent)]
            record["store_bytes"] = sum(record["link_bytes"])


def started(command: list[str], logs: Path | None, name: str, **options: Any
            ) -> subprocess.Popen[bytes]:
    """``command`` started, its output appended to ``logs/name.log`` (without ``logs``:
    discarded), so that a stall can be read afterwards in the scheduler's and workers' words."""
    if logs is None:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                **options)
    with open(logs / f"{name}.log", "ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, **options)


# -- the storage side ---------------------------------------------------------------------------

def _write(endpoint: str, shape: Any, name: str) -> Any:
    """``tas`` of ``shape`` written to S3 as ``name``; returns the dataset (for the answers)."""
    import _rig
    ds = _rig.dataset(shape)
    ds.to_zarr(f"s3://{_rig.BUCKET}/{name}", storage_options=_options(endpoint),
               encoding=_rig._zarr_encoding((shape.days, shape.lat, shape.lon)),
               zarr_format=3, consolidated=False)
    return ds


def _options(endpoint: str) -> dict[str, Any]:
    import _rig
    return {"endpoint_url": endpoint, **_rig.KEYS}


@contextlib.contextmanager
def object_store(host: str) -> Iterator[str]:
    import logging

    import _rig
    import boto3
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
    moto.start()
    try:
        endpoint = f"http://{host}:{moto.get_host_and_port()[1]}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=_rig.KEYS["key"],
                     aws_secret_access_key=_rig.KEYS["secret"],
                     region_name="us-east-1").create_bucket(Bucket=_rig.BUCKET)
        yield endpoint
    finally:
        moto.stop()


class ServerNodes:
    """``count`` active servers reading ``endpoint``, server i in node i's namespace on a site
    (else on loopback); one killed can be started again at its address."""

    def __init__(self, count: int, endpoint: str, site: bool, logs: Path | None = None
                 ) -> None:
        from activezarr.servers.processes import listening_socket, port_of
        self.endpoint, self.site, self.logs = endpoint, site, logs
        self.addresses = []
        for i in range(count):
            if site:
                self.addresses.append((_star.node_ip(i), SERVER_PORT))
            else:  # a free port, given up just before the server takes it
                with listening_socket() as sock:
                    self.addresses.append(("127.0.0.1", port_of(sock)))
        self.urls = [f"http://{host}:{port}" for host, port in self.addresses]
        self.processes: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(count):
                self.processes.append(self._start(i))
            self._wait(range(count))
        except BaseException:
            self.close()
            raise

    def _start(self, i: int) -> subprocess.Popen[bytes]:
        import _rig
        host, port = self.addresses[i]
        command = [sys.executable, "-m", "activezarr.servers.active", "--host", host, "--port",
                   str(port), "--upstream", self.endpoint]
        return started(_star.on_node(i, command) if self.site else command, self.logs,
                       f"server{i}", env={**os.environ, "AWS_ACCESS_KEY_ID": _rig.KEYS["key"],
                                          "AWS_SECRET_ACCESS_KEY": _rig.KEYS["secret"]})

    def _wait(self, which: Any) -> None:
        from activezarr.protocol import HEALTH_PATH
        from activezarr.servers.processes import wait_healthy
        wait_healthy([self.urls[i] + HEALTH_PATH for i in which],
                     {self.urls[i]: self.processes[i] for i in which}, timeout=300)

    def restart(self, i: int) -> None:
        self.processes[i].wait()
        self.processes[i] = self._start(i)
        self._wait([i])

    def close(self) -> None:
        from activezarr.servers.processes import stop
        for process in self.processes:
            stop(process)


class WorkersLost(Exception):
    """Every worker a run may use was lost: it would wait for them for ever."""


class DaskNodes:
    """A scheduler and ``count`` single-process workers ``w0``... of ``threads`` threads (on
    nodes ``first_node``... of a site), and the client. A worker the scheduler lost (one
    silent past its ``worker-ttl``, as after a machine paused that long, is removed, its
    results computed again elsewhere) is started again by :meth:`restore`, so that W stays W."""

    def __init__(self, count: int, threads: int, first_node: int, tmp: Path, site: bool,
                 logs: Path | None = None) -> None:
        from distributed import Client
        self.count, self.threads, self.first_node, self.site = count, threads, first_node, site
        self.file, self.logs = tmp / "scheduler.json", logs
        self.processes: list[subprocess.Popen[bytes]] = []
        try:
            self.processes.append(started(
                [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                 _star.STORE_IP if site else "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(self.file)], logs, "scheduler"))
            for j in range(count):
                self._start(j)
            deadline = time.monotonic() + 120
            while not self.file.exists():
                if time.monotonic() > deadline or self.processes[0].poll() is not None:
                    raise RuntimeError("the dask scheduler did not start")
                time.sleep(0.2)
            self.client = Client(scheduler_file=str(self.file))
            self.client.wait_for_workers(count, timeout=300)
        except BaseException:
            self.close()
            raise

    def _start(self, j: int) -> None:
        command = [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                   str(self.file), "--nthreads", str(self.threads), "--no-nanny", "--name",
                   f"w{j}", "--no-dashboard", "--memory-limit", "0", "--host",
                   _star.node_ip(self.first_node + j) if self.site else "127.0.0.1"]
        self.processes.append(started(
            _star.on_node(self.first_node + j, command) if self.site else command, self.logs,
            f"w{j}"))

    def _names(self) -> dict[str, str]:
        return {w["name"]: address
                for address, w in self.client.scheduler_info(n_workers=-1)["workers"].items()}

    def addresses(self) -> list[str]:
        """The workers' addresses, ``w0`` first."""
        names = self._names()
        return [names[f"w{j}"] for j in range(self.count)]

    def outcome(self, future: Any, workers: list[str]) -> Any:
        """``future``'s result. Raises :class:`WorkersLost` when none of ``workers``, the only
        ones it may run on, is left (a pause longer than worker-ttl can lose them all);
        KilledWorker when dask gives a task up, its workers lost one after another."""
        while True:
            try:
                return future.result(timeout=1)
            except TimeoutError:
                if not set(workers) & set(self._names().values()):
                    future.cancel()
                    raise WorkersLost(f"every worker of the run was lost: {workers}") from None

    def restore(self) -> list[str]:
        """The names of the workers the scheduler lost, each started again (on its node)."""
        names = self._names()
        lost = [f"w{j}" for j in range(self.count) if f"w{j}" not in names]
        for name in lost:
            self._start(int(name[1:]))
        if lost:
            self.client.wait_for_workers(self.count, timeout=300)
        return lost

    def close(self) -> None:
        from activezarr.servers.processes import stop
        if hasattr(self, "client"):
            self.client.close()
        for process in reversed(self.processes):
            stop(process)


# -- the queries --------------------------------------------------------------------------------

def answer(ds: Any, query: str) -> np.ndarray:
    """numpy's answer to ``query``."""
    data = ds["tas"].values
    if query == "mean":
        return np.asarray(data.mean(dtype=np.float64))
    months = ds["time"].dt.month.values
    return np.stack([data[months == m].mean(axis=0, dtype=np.float64) for m in range(1, 13)])


def active_query(endpoint: str, servers: list[str], name: str, query: str, ds: Any
                 ) -> tuple[Callable[[], Any], Any]:
    """``query`` through ``servers``: its answer computed in this process, and as a dask
    array."""
    import _rig
    import zarr

    import activezarr
    import activezarr.dask as adask
    store = activezarr.ActiveStore.from_url(f"s3://{_rig.BUCKET}/{name}", read_only=True,
                                            active={"server": servers},
                                            storage_options=_options(endpoint))
    red = activezarr.ActiveReduction(zarr.open_array(store, path="tas", mode="r"),
                                     fallback=False)
    options = {} if query == "mean" else {
        "axis": 0, "groups": (0, ds["time"].dt.month.values - 1)}
    return lambda: red.reduce("mean", **options), adask.reduce(red, "mean", **options)


def plain_query(endpoint: str, name: str, query: str) -> Any:
    """The xarray + dask graph of ``query`` read plainly from S3."""
    import _rig
    import xarray as xr
    da = xr.open_zarr(f"s3://{_rig.BUCKET}/{name}", storage_options=_options(endpoint),
                      consolidated=False, chunks={})["tas"]
    return da.mean() if query == "mean" else da.groupby("time.month").mean()


class Runner:
    """Runs and checks one case at a time on the cluster; every record lands in ``records``."""

    def __init__(self, cluster: DaskNodes, servers: list[str], endpoint: str,
                 links: int) -> None:
        self.cluster, self.servers = cluster, servers
        self.endpoint, self.links = endpoint, links
        self.records: list[dict[str, Any]] = []
        #: Runs whose time is no measure of the system (``spoilt`` says why), run again.
        self.spoilt: list[dict[str, Any]] = []

    def run(self, method: str, query: str, k: int, w: int, name: str, ds: Any,
            want: np.ndarray, during: Callable[[], None] | None = None, **extra: Any
            ) -> dict[str, Any]:
        """One run's record, checked against ``want``. A run spoilt by a pause of this
        process or a dask worker lost is kept aside and run again (up to ``TRIES`` runs;
        a run with ``during``, which acts on the servers, is not repeated but marked)."""
        for _ in range(TRIES if during is None else 1):
            record = self._once(method, query, k, w, name, ds, want, during, extra)
            if "spoilt" not in record:
                break
            self.spoilt.append(record)
        self.records.append(record)
        return record

    def _once(self, method: str, query: str, k: int, w: int, name: str, ds: Any,
              want: np.ndarray, during: Callable[[], None] | None, extra: dict[str, Any]
              ) -> dict[str, Any]:
        from distributed import KilledWorker
        record: dict[str, Any] = {"method": method, "query": query, "k": k, "w": w, **extra}
        self.cluster.restore()  # one lost since the last run: W workers from the start
        workers = self.cluster.addresses()[:w]
        try:
            with measured(record, self.links):
                if during is not None:
                    threading.Thread(target=during, daemon=True).start()
                got = self._answer(method, query, k, workers, name, ds)
            record["check"] = "ok" if got.shape == want.shape and np.allclose(
                got, want, rtol=1e-5, equal_nan=True) else "DIFF"
        except (WorkersLost, KilledWorker) as exc:  # the workers lost: a spoilt run, below
            record["check"] = f"failed: {type(exc).__name__}"
        why = [f"paused {record['paused']:.0f} s"] if record["paused"] > PAUSE_LIMIT else []
        lost = self.cluster.restore()
        if lost:
            why.append(f"dask worker(s) {', '.join(lost)} lost (started again)")
        if why:
            record["spoilt"] = "; ".join(why)
        print(f"  {method:<7} {query:<11} K={k:<2} W={w:<2} {record['seconds']:7.2f} s "
              f"{record.get('store_bytes', 0):>12,} B  load {record['load']:4.1f}  "
              f"cpu {record['cpu_busy']:4.0%}  {record['check']}  "
              f"{[round(b / 2**20, 1) for b in record.get('link_bytes', [])]}"
              + (f"  SPOILT: {record['spoilt']}" if why else ""), flush=True)
        return record

    def _answer(self, method: str, query: str, k: int, workers: list[str], name: str, ds: Any
                ) -> np.ndarray:
        if method == "plain":
            lazy = plain_query(self.endpoint, name, query)
        else:
            here, lazy = active_query(self.endpoint, self.servers[:k], name, query, ds)
            if not workers:  # one client process, no dask
                return np.ma.filled(np.ma.asarray(here(), dtype=np.float64), np.nan)
        result = self.cluster.client.compute(lazy, workers=workers, allow_other_workers=False)
        return np.asarray(self.cluster.outcome(result, workers), dtype=np.float64)


# -- the per-chunk cost and the decoder floor ---------------------------------------------------

def decoder_seconds(endpoint: str, name: str) -> tuple[float, int]:
    """(seconds, chunks): zstd-decoding every stored chunk of ``name`` on two threads, the
    chunks already in memory: what no path can go below on this machine."""
    import _rig
    import fsspec
    from numcodecs import Zstd
    fs = fsspec.filesystem("s3", **_options(endpoint))
    keys = fs.find(f"{_rig.BUCKET}/{name}/tas/c")
    stored = list(fs.cat(keys).values())
    codec = Zstd()
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(codec.decode, stored))
        best = min(best, time.perf_counter() - start)
    return best, len(stored)


# -- the whole run ------------------------------------------------------------------------------

def measure(args: argparse.Namespace, site: bool) -> dict[str, Any]:
    import _rig
    host = _star.STORE_IP if site else "127.0.0.1"
    kmax, wmax = max(args.servers), max(args.workers)
    links = kmax + wmax if site else 0
    shape = _rig.Shape(size_mib=args.size, lat=args.lat, lon=args.lon, days=args.days)
    out: dict[str, Any] = {"rate": args.rate if site else "loopback", "shape": asdict(shape),
                           "threads": args.threads, "cpus": os.cpu_count(), "repeat": args.repeat,
                           "sweep_mib": args.sweep_size, "sweep_workers": wmax,
                           "sweep_servers": min(args.sweep_servers, kmax)}
    with tempfile.TemporaryDirectory(prefix="activezarr-scale-") as tmp, \
            object_store(host) as endpoint:
        t0 = time.perf_counter()
        ds = _write(endpoint, shape, "tas.zarr")
        want = {query: answer(ds, query) for query in args.queries}
        stored = sum(_stored_sizes(endpoint, "tas.zarr"))
        out |= {"nbytes": int(ds["tas"].nbytes), "stored_bytes": stored}
        print(f"dataset: {dict(ds['tas'].sizes)} float32, {ds['tas'].nbytes / 2**20:.0f} MiB "
              f"({stored / 2**20:.1f} MiB stored), chunks of {shape.days} days "
              f"({shape.days * shape.lat * shape.lon * 4 / 2**20:.2f} MiB); per-node link "
              f"{out['rate']}; written in {time.perf_counter() - t0:.0f} s", flush=True)
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
        servers = ServerNodes(kmax, endpoint, site, args.logs)
        with contextlib.closing(servers), contextlib.closing(
                DaskNodes(wmax, args.threads, kmax, Path(tmp), site, args.logs)) as dask:
            runner = Runner(dask, servers.urls, endpoint, links)
            for query in args.queries:  # a first run of each kind warms every process up
                runner.run("active", query, kmax, wmax, "tas.zarr", ds, want[query])
                runner.run("plain", query, 0, wmax, "tas.zarr", ds, want[query])
            runner.records.clear()
            for query in args.queries:
                for _ in range(args.repeat):
                    for w in args.workers:
                        if w:  # plain reads need the cluster: W = 0 is activezarr's alone
                            runner.run("plain", query, 0, w, "tas.zarr", ds, want[query])
                        for k in args.servers:
                            runner.run("active", query, k, w, "tas.zarr", ds, want[query])
            out["grid"] = list(runner.records)
            out["killed"] = kill_one(runner, servers, ds, want["mean"], args) \
                if "mean" in want else None
            if site:
                _star.set_rate(links, _star.UNSHAPED)
            runner.records = []
            out["sweep"] = sweep(runner, endpoint, args)
            out["spoilt"] = runner.spoilt
    out["load_end"] = os.getloadavg()[0]
    return out


def _stored_sizes(endpoint: str, name: str) -> list[int]:
    import _rig
    import fsspec
    fs = fsspec.filesystem("s3", **_options(endpoint))
    return [info["size"] for info in fs.find(f"{_rig.BUCKET}/{name}/tas/c", detail=True).values()]


def kill_one(runner: Runner, servers: ServerNodes, ds: Any, want: np.ndarray,
             args: argparse.Namespace) -> dict[str, Any] | None:
    """A whole-array mean at K = 4 (or the most servers there are) on all workers, with one
    server SIGKILLed when 40% of the usual time has passed, ``--repeat`` times (the server is
    started again after each): the answers, and the time it cost."""
    k = min(4, len(servers.urls))
    w = max(args.workers)
    usual = [r["seconds"] for r in runner.records
             if (r["method"], r["query"], r["k"], r["w"]) == ("active", "mean", k, w)]
    if k < 2 or not usual:
        return None
    baseline = statistics.median(usual)
    victim = k - 1
    runs = []
    for _ in range(args.repeat):
        process = servers.processes[victim]
        runs.append(runner.run("active", "mean", k, w, "tas.zarr", ds, want,
                               during=lambda p=process: (time.sleep(0.4 * baseline), p.kill()),
                               killed=servers.urls[victim]))
        servers.restart(victim)
    seconds = statistics.median(r["seconds"] for r in runs)
    return {"k": k, "w": w, "killed": servers.urls[victim], "runs": runs,
            "check": "ok" if all(r["check"] == "ok" for r in runs) else "DIFF",
            "seconds": seconds, "usual": usual, "usual_median": baseline,
            "extra_seconds": seconds - baseline}


def sweep(runner: Runner, endpoint: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per-chunk cost of the whole-array mean against chunk size, links unshaped, on the live
    servers and all workers, next to the decoder floor."""
    import _rig
    rows = []
    for kib in args.sweep:
        lat, lon = 64, 128  # 32 KiB a day
        shape = _rig.Shape(size_mib=args.sweep_size, lat=lat, lon=lon, days=kib // 32)
        name = f"tas-{kib}k.zarr"
        ds = _write(endpoint, shape, name)
        want = answer(ds, "mean")
        floor, chunks = decoder_seconds(endpoint, name)
        row: dict[str, Any] = {"chunk_kib": kib, "chunks": chunks, "decoder_seconds": floor}
        for method in ("active", "plain"):
            k = min(args.sweep_servers, len(runner.servers)) if method == "active" else 0
            runs = [runner.run(method, "mean", k, max(args.workers), name, ds, want,
                               chunk_kib=kib)["seconds"] for _ in range(args.repeat)]
            row[method] = statistics.median(runs)
        rows.append(row)
    return rows


# -- the figures --------------------------------------------------------------------------------

def _median_seconds(grid: list[dict[str, Any]], **match: Any) -> float | None:
    runs = [r["seconds"] for r in grid if all(r.get(k) == v for k, v in match.items())]
    return statistics.median(runs) if runs else None


def table(out: dict[str, Any]) -> str:
    """The grid as text: per query, W and K the median seconds, and the ratio of K = 1's time
    to it; the plain read's seconds per W; the array's MB/s of the best activezarr cell."""
    grid, mb = out["grid"], out["nbytes"] / 1e6
    ks = sorted({r["k"] for r in grid if r["method"] == "active"})
    ws = sorted({r["w"] for r in grid})
    lines = []
    for query in sorted({r["query"] for r in grid}, key=QUERIES.index):
        lines.append(f"{query} of {out['nbytes'] / 2**20:.0f} MiB, per-node link {out['rate']}: "
                     f"median seconds (x: speed-up over K = {ks[0]})")
        lines.append(f"{'W':>3} {'xarray+dask':>11} " + " ".join(f"{'K=' + str(k):>13}"
                                                              for k in ks))
        best = math.inf
        for w in ws:
            plain = _median_seconds(grid, method="plain", query=query, w=w)
            cells = [_median_seconds(grid, method="active", query=query, k=k, w=w) for k in ks]
            if cells[0] is None:
                continue
            best = min([best, *(c for c in cells if c)])
            lines.append(f"{w:>3} " + (f"{plain:9.2f} s" if plain else f"{'-':>11}") + " " +
                         " ".join(f"{c:6.2f} s {cells[0] / c:4.1f}x" if c else f"{'-':>13}"
                                  for c in cells))
        loads = [r["load"] for r in grid if r["query"] == query]
        busy = [r["cpu_busy"] for r in grid if r["query"] == query]
        lines.append(f"    fastest activezarr cell: {mb / best:.1f} MB/s of the array; load "
                     f"average {min(loads):.1f}-{max(loads):.1f}, machine CPU busy "
                     f"{min(busy):.0%}-{max(busy):.0%} during the runs\n")
    return "\n".join(lines)


def plot(out: dict[str, Any], docs: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    grid, mb = out["grid"], out["nbytes"] / 1e6
    ks = sorted({r["k"] for r in grid if r["method"] == "active"})
    ws = sorted({r["w"] for r in grid})
    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    cmap = plt.get_cmap("viridis")
    rate = out["rate"]
    for ax, query in zip(axes, QUERIES):
        for i, w in enumerate(ws):
            color = cmap(i / max(1, len(ws) - 1))
            secs = [_median_seconds(grid, method="active", query=query, k=k, w=w) for k in ks]
            if any(secs):
                label = f"activezarr, W = {w}" if w else "activezarr, one client, no dask"
                ax.plot(ks, [mb / s if s else math.nan for s in secs], "o-", color=color,
                        label=label)
            plain = _median_seconds(grid, method="plain", query=query, w=w)
            if plain:
                ax.axhline(mb / plain, color=color, ls=":", label=f"xarray + dask, W = {w}")
        if rate.endswith("mbit"):  # the links' bound: K links of the rate, in the array's bytes
            per_link = float(rate[:-4]) / 8 * out["nbytes"] / out["stored_bytes"]
            ax.plot(ks, [k * per_link for k in ks], "k--", lw=0.8, label="K links' bound")
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("active servers K")
        ax.set_ylabel("aggregate MB/s of the array")
        ax.set_title(f"{query} ({out['nbytes'] / 2**20:.0f} MiB), per-node link {rate}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    for query, style in zip(QUERIES, ("o-", "s--")):
        for i, w in enumerate(ws):
            secs = [_median_seconds(grid, method="active", query=query, k=k, w=w) for k in ks]
            if secs[0] and all(secs):
                ax.plot(ks, [secs[0] / s for s in secs], style,
                        color=cmap(i / max(1, len(ws) - 1)), label=f"{query}, W = {w}")
    ax.plot(ks, [k / ks[0] for k in ks], "k:", lw=0.8, label="ideal")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("active servers K")
    ax.set_ylabel(f"throughput / throughput at K = {ks[0]}")
    ax.set_title("scaling with K")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    written = [docs / "scale_out.png"]
    fig.savefig(written[0], dpi=90)
    plt.close(fig)
    if out.get("sweep"):
        rows = out["sweep"]
        xs = [r["chunk_kib"] for r in rows]
        fig, ax = plt.subplots(figsize=(7, 5))
        for key, style, label in (("active", "o-", "activezarr (dask, unshaped links)"),
                                  ("plain", "s-", "xarray + dask, plain read"),
                                  ("decoder_seconds", "k--", "decoder floor: zstd decode only, "
                                                             "two threads")):
            ax.plot(xs, [r[key] / r["chunks"] * 1e3 for r in rows], style, label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [f"{x}K" if x < 1024 else f"{x // 1024}M" for x in xs])
        ax.set_xlabel("chunk size (decoded)")
        ax.set_ylabel("wall ms per chunk (whole-array mean)")
        ax.set_title(f"per-chunk cost, {out['sweep_mib']} MiB per size, "
                     f"K = {out['sweep_servers']}, W = {out['sweep_workers']}, links unshaped")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(docs / "chunk_cost.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)
    return written


# -- command line -------------------------------------------------------------------------------

def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", default="20mbit", help="each node's link to storage (tc htb)")
    p.add_argument("--servers", type=int, nargs="+", default=[1, 2, 4, 8], help="values of K")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 4, 8],
                   help="values of W (0: one client process without dask)")
    p.add_argument("--threads", type=int, default=4, help="threads per dask worker")
    p.add_argument("--size", type=int, default=24, help="dataset MiB (default 24)")
    p.add_argument("--lat", type=int, default=48)
    p.add_argument("--lon", type=int, default=96)
    p.add_argument("--days", type=int, default=32,
                   help="days per chunk (default 32: 0.56 MiB)")
    p.add_argument("--sweep", type=int, nargs="*",
                   help="chunk sizes in KiB of the per-chunk cost sweep, multiples of 32 "
                        "(default 64 256 1024 4096; none: no sweep)")
    p.add_argument("--sweep-size", type=int, default=32, help="MiB of each sweep dataset")
    p.add_argument("--sweep-servers", type=int, default=4, help="K of the sweep")
    p.add_argument("--queries", nargs="+", choices=QUERIES, default=list(QUERIES))
    p.add_argument("--repeat", type=int, default=3, help="runs per case; medians are kept")
    p.add_argument("--quick", action="store_true", help="tiny data: the machinery only")
    p.add_argument("--loopback", action="store_true", help="no namespaces even as root")
    p.add_argument("--json", type=Path, default=HERE / "results" / "scale_out.json")
    p.add_argument("--docs", type=Path, default=HERE.parent / "docs", help="where PNGs go")
    p.add_argument("--replot", action="store_true", help="only redraw from --json")
    p.add_argument("--logs", type=Path, help="where the scheduler's, workers' and servers' "
                   "output goes, a file each (default: discarded)")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.lat, args.lon, args.days, args.repeat = 4, 32, 32, 32, 1
        args.sweep_size = 2
    if args.sweep is None:
        args.sweep = [64, 256] if args.quick else list(SWEEP_KIB)
    args.workers = sorted(set(args.workers))
    args.servers = sorted(set(args.servers))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if not args.replot:
        if args.inside:
            out = measure(args, site=True)
        else:
            why = "--loopback" if args.loopback else _netns.can_emulate()
            if why is None:
                nodes = max(args.servers) + max(max(args.workers), 1)
                with _star.site(nodes, args.rate):
                    command = [sys.executable, os.path.abspath(__file__), "--inside",
                               *(argv if argv is not None else sys.argv[1:])]
                    return subprocess.run(_star.in_hub(command)).returncode
            print(f"no site emulation ({why}): loopback, links not bounded")
            out = measure(args, site=False)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    out = json.loads(args.json.read_text())
    print(table(out))
    if out.get("spoilt"):
        print(f"{len(out['spoilt'])} run(s) spoilt (a pause of this machine, a dask worker lost) "
              f"and run again: {sorted({r['spoilt'] for r in out['spoilt']})}")
    if out.get("killed"):
        kill = out["killed"]
        print(f"server {kill['killed']} killed at K = {kill['k']}, W = {kill['w']}: answer "
              f"{kill['check']}, {kill['seconds']:.2f} s against {kill['usual_median']:.2f} s "
              f"(+{kill['extra_seconds']:.2f} s)")
    if importlib.util.find_spec("matplotlib") is None:
        print("no figures: matplotlib is not installed (pip install -e '.[bench]')")
        return 0
    args.docs.mkdir(parents=True, exist_ok=True)
    print("wrote", *plot(out, args.docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())

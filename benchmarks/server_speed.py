"""Speed of the active server on loopback: three figures, each against its target.

Run from anywhere:  python benchmarks/server_speed.py [--rounds N]

It starts moto's S3 server and ``activezarr serve`` (a real subprocess) on free loopback ports,
writes the test chunks to a temporary directory (removed on exit) and to a moto bucket, and
measures:

1. per-request overhead: the median wall time of ``POST /v2/sum`` on one 64 KiB float64 chunk,
   through ``interface_type`` ``s3`` (moto) and ``file`` (no target; for the record);
2. batching: 100 requests on 1 KiB chunks sent one by one vs in one ``POST /v2/batch``, the
   ratio of the median times (target: at least 5x);
3. decode+reduce throughput: one batch of 64 zlib-compressed float32 chunks of 512 KiB (32 MiB
   decoded) through the server vs the same ``ChunkKernel`` called in this process on one thread,
   the ratio of the throughputs from the median times (target: at least 0.7).

Every answer is checked once against numpy before anything is timed. Each timed figure is the
median of ``--rounds`` runs (overhead: of ``40 * rounds`` requests) after a warm-up. Prints a
table; exits 1 if a target is missed. ``bench_server.py`` runs the same measurements under asv.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Self

import cbor2  # a dependency of activezarr: only to check the answers, never timed
import numpy as np
import requests
from moto.server import ThreadedMotoServer

from activezarr.chunk.kernel import ChunkKernel
from activezarr.chunk.spec import ChunkSpec
from activezarr.servers.processes import active_server

MiB = 2**20
KEY, SECRET = "bench-key", "bench-secret"  # moto accepts any; the server signs with them
BUCKET = "bench"

OVERHEAD_N = 8192          # float64: a 64 KiB chunk
SMALL_N, SMALL_COUNT = 128, 100        # float64: 100 chunks of 1 KiB
BIG_N, BIG_COUNT = 131072, 64          # float32: 64 chunks of 512 KiB, zlib

#: Targets: batch speed-up over singles, server throughput over in-process throughput.
TARGETS = {"batch_speedup": 5.0, "throughput_ratio": 0.7}


def _median_time(fn: Callable[[], object], rounds: int, warmup: int = 1) -> float:
    """Median wall time (s) of ``rounds`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _check(answer: dict, want: float, count: int, what: str) -> None:
    if "error" in answer:
        raise AssertionError(f"{what}: server error {answer}")
    got = np.frombuffer(answer["bytes"], dtype=answer["dtype"])
    if answer["count"] != [count] or got.size != 1 or not np.isclose(got[0], want, rtol=1e-5):
        raise AssertionError(f"{what}: sum {got} count {answer['count']}, want {want} {count}")


class Rig:
    """moto S3 + the active server + the test chunks, as a context manager that undoes all.

    ``servers`` maps a name to the environment of one ``activezarr serve`` process (e.g. a
    ``PYTHONPATH`` naming another revision's ``src``): each serves the same chunks, and each
    request method takes the name of the one to ask (default: the first).
    """

    def __init__(self, servers: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._servers = dict(servers or {"server": {}})
        self._stack = contextlib.ExitStack()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Self:
        with contextlib.ExitStack() as stack:
            self.root = Path(tempfile.mkdtemp(prefix="activezarr-server-speed-"))
            stack.callback(shutil.rmtree, self.root, ignore_errors=True)
            # moto's werkzeug logs every request to stderr, even with verbose=False
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            moto.start()
            stack.callback(moto.stop)
            self.s3 = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"
            self._write_data()
            self.urls: dict[str, str] = {}
            for name, env in self._servers.items():
                self.urls[name], self.processes[name] = stack.enter_context(active_server(
                    "--upstream", self.s3, "--allow-root", str(self.root), env=env))
            self.session = requests.Session()
            self.session.auth = (KEY, SECRET)
            stack.callback(self.session.close)
            for name in self.urls:
                self._check_answers(name)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # -- data -------------------------------------------------------------------------------

    def _write_data(self) -> None:
        rng = np.random.default_rng(0)
        self.chunk64 = rng.standard_normal(OVERHEAD_N)
        requests.put(f"{self.s3}/{BUCKET}", timeout=30).raise_for_status()
        requests.put(f"{self.s3}/{BUCKET}/c64", data=self.chunk64.tobytes(),
                     timeout=30).raise_for_status()
        (self.root / "c64").write_bytes(self.chunk64.tobytes())
        self.small = rng.standard_normal(SMALL_N)
        for i in range(SMALL_COUNT):
            (self.root / f"s{i}").write_bytes(self.small.tobytes())
        self.big_sums = []
        for i in range(BIG_COUNT):
            block = rng.standard_normal(BIG_N, dtype=np.float32)
            self.big_sums.append(float(block.sum(dtype=np.float64)))
            (self.root / f"z{i}").write_bytes(zlib.compress(block.tobytes(), 1))
        self.big_raw = [(self.root / f"z{i}").read_bytes() for i in range(BIG_COUNT)]
        self.overhead_body = {
            "s3": {"interface_type": "s3", "url": f"{self.s3}/{BUCKET}/c64",
                   "dtype": "float64", "shape": [OVERHEAD_N]},
            "file": {"interface_type": "file", "url": str(self.root / "c64"),
                     "dtype": "float64", "shape": [OVERHEAD_N]},
        }
        self.small_items = [
            {"op": "sum", "interface_type": "file", "url": str(self.root / f"s{i}"),
             "dtype": "float64", "shape": [SMALL_N]} for i in range(SMALL_COUNT)]
        self.big_items = [
            {"op": "sum", "interface_type": "file", "url": str(self.root / f"z{i}"),
             "dtype": "float32", "shape": [BIG_N], "compression": {"id": "zlib"}}
            for i in range(BIG_COUNT)]
        self.kernel = ChunkKernel(ChunkSpec(dtype="<f4", shape=(BIG_N,),
                                            codecs=({"id": "zlib"},)))

    # -- the requests timed -----------------------------------------------------------------

    def _post(self, path: str, body: dict, server: str | None) -> bytes:
        url = self.urls[server or next(iter(self.urls))]
        response = self.session.post(f"{url}{path}", json=body, timeout=60)
        response.raise_for_status()
        return response.content

    def single(self, iface: str, server: str | None = None) -> bytes:
        return self._post("/v2/sum", self.overhead_body[iface], server)

    def singles(self, server: str | None = None) -> list[bytes]:
        return [self._post("/v2/sum", {k: v for k, v in item.items() if k != "op"}, server)
                for item in self.small_items]

    def small_batch(self, server: str | None = None) -> bytes:
        return self._post("/v2/batch", {"requests": self.small_items}, server)

    def big_batch(self, server: str | None = None) -> bytes:
        return self._post("/v2/batch", {"requests": self.big_items}, server)

    def in_process(self) -> list:
        sel = ((0, BIG_N, 1),)
        return [self.kernel.reduce(raw, sel) for raw in self.big_raw]

    def _check_answers(self, server: str) -> None:
        want64 = float(self.chunk64.sum())
        for iface in self.overhead_body:
            _check(cbor2.loads(self.single(iface, server)), want64, OVERHEAD_N,
                   f"{server}: 64 KiB {iface}")
        want_small = float(self.small.sum())
        for i, raw in enumerate(self.singles(server)):
            _check(cbor2.loads(raw), want_small, SMALL_N, f"{server}: single {i}")
        for i, answer in enumerate(cbor2.loads(self.small_batch(server))):
            _check(answer, want_small, SMALL_N, f"{server}: small batch item {i}")
        for i, answer in enumerate(cbor2.loads(self.big_batch(server))):
            _check(answer, self.big_sums[i], BIG_N, f"{server}: zlib batch item {i}")

    # -- the figures ------------------------------------------------------------------------

    def overhead_ms(self, iface: str, requests_timed: int) -> float:
        """Median ms of one request on the 64 KiB chunk through ``iface``."""
        return 1e3 * _median_time(lambda: self.single(iface), requests_timed, warmup=20)

    def batch_speedup(self, rounds: int) -> tuple[float, float, float]:
        """(singles s, batch s, speed-up) for the 100 small chunks."""
        singles = _median_time(self.singles, rounds)
        batch = _median_time(self.small_batch, rounds)
        return singles, batch, singles / batch

    def throughput_ratio(self, rounds: int) -> tuple[float, float, float]:
        """(in-process MiB/s, server MiB/s, server/in-process) decoding+reducing 32 MiB."""
        mib = BIG_COUNT * BIG_N * 4 / MiB
        local = _median_time(self.in_process, rounds)
        server = _median_time(self.big_batch, rounds)
        return mib / local, mib / server, local / server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed runs per figure (overhead: 40x as many requests)")
    args = parser.parse_args(argv)
    rounds = max(1, args.rounds)
    with Rig() as rig:
        over = {iface: rig.overhead_ms(iface, 40 * rounds) for iface in ("s3", "file")}
        singles, batch, speedup = rig.batch_speedup(rounds)
        local, server, ratio = rig.throughput_ratio(rounds)
    rows = [
        ("overhead, 64 KiB chunk, s3 (moto)", f"{over['s3']:.2f} ms", "-", None),
        ("overhead, 64 KiB chunk, file", f"{over['file']:.2f} ms", "-", None),
        (f"batch of 100 x 1 KiB vs singles ({singles * 1e3:.0f} / {batch * 1e3:.1f} ms)",
         f"{speedup:.1f}x", f">= {TARGETS['batch_speedup']:g}x",
         speedup >= TARGETS["batch_speedup"]),
        (f"server vs in-process decode+reduce ({server:.0f} / {local:.0f} MiB/s)",
         f"{ratio:.2f}", f">= {TARGETS['throughput_ratio']:g}",
         ratio >= TARGETS["throughput_ratio"]),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'figure (median of ' + str(rounds) + ' rounds)':<{width}}  {'value':>9}  "
          f"{'target':>7}  ok")
    for name, value, target, ok in rows:
        mark = "-" if ok is None else ("yes" if ok else "NO")
        print(f"{name:<{width}}  {value:>9}  {target:>7}  {mark}")
    return 0 if all(r[3] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

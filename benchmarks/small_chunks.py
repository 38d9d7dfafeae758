"""Small chunks at the decoder's limit: activezarr against the time the decoder alone needs.

Run from a checkout:  python benchmarks/small_chunks.py [--repeat 5] [--baseline SRC]

Writes compare.py's netCDF4 file of many small chunks (64 KiB, zlib + shuffle; a quarter of
``--size`` MiB) and its kerchunk references, then measures in turn, ``--repeat`` times each:

- the decoder floor: the stored bytes of every chunk, already in memory, inflated and
  unshuffled by numcodecs on all the CPUs (each thread a contiguous share of the chunks), and
  the same with activezarr's own decode chain (its bounded zlib-ng inflate and unshuffle);
- activezarr's whole-array mean through the references (compare.py's ``az-nc-local-small``:
  a child process, opening included);
- PyActiveStorage's on the same file (``pas-local-small``), or the reason it is skipped;
- with ``--baseline SRC``, activezarr again from another checkout's ``src`` (e.g. a
  ``git worktree`` of an older commit), side by side in the same run.

It prints the median of each, the ratios (activezarr / floor, PyActiveStorage / activezarr)
and the load average, and checks every answer against xarray's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import xarray as xr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _rig
import compare

from activezarr.chunk.codecs import CodecChain


def stored_chunks(refs: dict[str, Any], variable: str = "tas") -> tuple[list[bytes], dict[str, Any]]:
    """The stored bytes of every chunk of ``variable`` the references name, and its .zarray."""
    zarray = json.loads(refs["refs"][f"{variable}/.zarray"])
    raw = []
    for key, value in refs["refs"].items():
        if key.startswith(f"{variable}/") and not key.split("/")[-1].startswith("."):
            path, offset, length = value
            with open(path, "rb") as f:
                f.seek(offset)
                raw.append(f.read(length))
    return raw, zarray


def _codec_configs(zarray: dict[str, Any]) -> list[dict[str, Any]]:
    """The .zarray's codecs in encode order (kerchunk puts HDF5's deflate among the filters)."""
    return [*(zarray.get("filters") or []), *([zarray["compressor"]] if zarray.get("compressor")
                                               else [])]


def numcodecs_decoder(zarray: dict[str, Any]) -> Any:
    """Undo the .zarray's codecs, last first, with numcodecs' own."""
    codecs = [numcodecs.get_codec(c) for c in reversed(_codec_configs(zarray))]

    def decode(raw: bytes) -> Any:
        for codec in codecs:
            raw = codec.decode(raw)
        return raw
    return decode


def activezarr_decoder(zarray: dict[str, Any]) -> Any:
    """activezarr's bounded decode chain for the same .zarray."""
    chain = CodecChain(_codec_configs(zarray))
    nbytes = int(np.prod(zarray["chunks"])) * np.dtype(zarray["dtype"]).itemsize
    return lambda raw: chain.decode(raw, nbytes)


def floor_seconds(raw: list[bytes], decode: Any, pool: ThreadPoolExecutor, threads: int
                  ) -> tuple[float, float]:
    """Wall and CPU seconds to decode every chunk of ``raw`` on ``threads`` threads, a share
    each."""
    shares = [raw[i::threads] for i in range(threads)]
    cpu, start = compare._cpu(), time.perf_counter()
    list(pool.map(lambda share: [decode(r) for r in share], shares))
    return time.perf_counter() - start, compare._cpu() - cpu


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256,
                   help="compare.py's dataset in MiB; the small-chunk file is a quarter of it")
    p.add_argument("--repeat", type=int, default=5, help="runs of each; the median is kept")
    p.add_argument("--baseline", help="another checkout's src directory, measured too")
    p.add_argument("--timeout", type=float, default=300, help="seconds per child run")
    args = p.parse_args(argv)
    shape = _rig.Shape(size_mib=args.size)
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="activezarr-small-") as tmp:
        root = Path(tmp)
        nc = _rig.write_small_netcdf(_rig.dataset(shape), shape, root / "tas-small.nc")
        import kerchunk.hdf
        refs = kerchunk.hdf.SingleHdf5ToZarr(str(nc)).translate()
        (root / "refs.json").write_text(json.dumps(refs))
        where_file = root / "where.json"
        where_file.write_text(json.dumps({"nc_small": str(nc), "refs_local_small":
                                          str(root / "refs.json"), "server": None,
                                          "shape": asdict(shape)}))
        raw, zarray = stored_chunks(refs)
        with xr.open_dataset(nc) as ds:
            want = float(ds["tas"].values.mean(dtype=np.float64))
        print(f"{nc.stat().st_size / 2**20:.1f} MiB netCDF4, {len(raw)} chunks of "
              f"{zarray['chunks']} {zarray['dtype']} "
              f"({np.prod(zarray['chunks']) * 4 / 1024:.0f} KiB), "
              f"{sum(map(len, raw)) / len(raw) / 1024:.1f} KiB stored each; {threads} CPUs; "
              f"load average at the start {os.getloadavg()[0]:.2f}", flush=True)
        children: dict[str, tuple[str, dict[str, str] | None]] = {
            "activezarr": ("az-nc-local-small", None),
            "PyActiveStorage": ("pas-local-small", None)}
        if args.baseline:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(args.baseline)}
            children["activezarr baseline"] = ("az-nc-local-small", env)
        floors = {"floor (numcodecs)": numcodecs_decoder(zarray),
                  "floor (activezarr decode)": activezarr_decoder(zarray)}
        times: dict[str, list[float]] = {name: [] for name in [*floors, *children]}
        cpus: dict[str, list[float]] = {name: [] for name in times}
        skipped: dict[str, str] = {}
        with ThreadPoolExecutor(threads) as pool:
            for decode in floors.values():
                floor_seconds(raw, decode, pool, threads)  # warm-up: imports, page cache
            for _ in range(args.repeat):
                for name, decode in floors.items():
                    seconds, cpu = floor_seconds(raw, decode, pool, threads)
                    times[name].append(seconds)
                    cpus[name].append(cpu)
                for name, (method, env) in children.items():
                    if name in skipped:
                        continue
                    r = compare._spawn(method, "mean", where_file, False, args.timeout, env)
                    if "seconds" not in r:
                        skipped[name] = r.get("skip") or r.get("error")
                        continue
                    if not np.isclose(r["answer"][0], want, rtol=1e-6):
                        raise SystemExit(f"{name} answered {r['answer'][0]}, xarray {want}")
                    times[name].append(r["seconds"])
                    cpus[name].append(r["cpu"])
    median = {name: statistics.median(t) for name, t in times.items() if t}
    print(f"\nmedian of {args.repeat}: wall seconds, per chunk, CPU seconds (all threads of "
          "the process); every run's wall seconds")
    for name, t in times.items():
        if name in skipped:
            print(f"  {name:<26} skipped: {skipped[name]}")
        elif t:
            print(f"  {name:<26} {median[name]:7.3f} s {median[name] / len(raw) * 1e6:5.0f} us "
                  f"{statistics.median(cpus[name]):7.3f} s cpu   "
                  f"[{', '.join(f'{s:.3f}' for s in t)}]")
    print()
    for name in [n for n in children if n in median and n != "PyActiveStorage"]:
        for floor in floors:
            print(f"  {name} / {floor}: {median[name] / median[floor]:.2f}x")
        if "PyActiveStorage" in median:
            print(f"  PyActiveStorage / {name}: {median['PyActiveStorage'] / median[name]:.1f}x")
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

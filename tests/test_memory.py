"""Reducing a 2 GiB array storage-side must not pull it into memory.

The array is written chunk block by chunk block (never whole in memory); the reduction runs in
a fresh subprocess, which reports its own peak resident set size (so the figure includes the
interpreter, numpy, zarr and activezarr themselves). On Linux that is ``VmHWM``: ``ru_maxrss``
of a spawned process also carries the peak of the process that spawned it (the pytest process).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr
from zarr.codecs import ZstdCodec

GiB, MiB = 2**30, 2**20
SHAPE = (256, 2048, 1024)          # float32: exactly 2 GiB
CHUNKS = (1, 2048, 1024)           # 8 MiB per chunk, 256 chunks
PEAK_RSS_LIMIT = 300 * 10**6       # bytes

CHILD = textwrap.dedent("""
    import json, resource, sys

    def peak_rss():
        try:
            with open("/proc/self/status") as status:
                line = next(l for l in status if l.startswith("VmHWM:"))
            return int(line.split()[1]) * 1024
        except OSError:  # not Linux: ru_maxrss is in bytes on macOS
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    import zarr, activezarr
    store = activezarr.ActiveStore.from_url(sys.argv[1], read_only=True)
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"))
    mean = red.mean()
    report = red.last_report
    print(json.dumps({
        "mean": float(mean),
        "backend": report.backend,
        "chunks": report.chunks,
        "fallbacks": report.fallbacks,
        "bytes_stored": report.bytes_stored,
        "bytes_from_storage": report.bytes_from_storage,
        "peak_rss": peak_rss(),
    }))
""")


def write_blockwise(path: str) -> tuple[float, int]:
    """Write a 2 GiB float32 array one chunk at a time; return (sum in float64, element count).

    Each chunk is a smooth field, a per-chunk offset and a noise block shifted per chunk: cheap to
    make, never constant, and not trivially compressible.
    """
    arr = zarr.create_array(path, shape=SHAPE, chunks=CHUNKS, dtype="float32",
                            compressors=[ZstdCodec(level=1)], fill_value=0.0)
    rng = np.random.default_rng(42)
    ny, nx = SHAPE[1:]
    lat = np.linspace(-np.pi / 2, np.pi / 2, ny, dtype=np.float32)[:, None]
    lon = np.linspace(0, 2 * np.pi, nx, dtype=np.float32)[None, :]
    base = (250 + 40 * np.cos(lat) + 5 * np.sin(lon) * np.cos(2 * lat)).astype(np.float32)
    noise = rng.standard_normal(base.size, dtype=np.float32)
    total = 0.0
    for t in range(SHAPE[0]):
        block = base + np.float32(0.05 * t)
        block += np.roll(noise, 7919 * t).reshape(base.shape)
        total += float(block.sum(dtype=np.float64))
        arr[t] = block
    return total, math.prod(SHAPE)


@pytest.mark.slow
def test_mean_of_2gib_array_keeps_peak_rss_under_300mb(tmp_path):
    path = str(tmp_path / "big.zarr")
    try:
        total, n = write_blockwise(path)
        assert math.prod(SHAPE) * 4 == 2 * GiB
        proc = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True,
                              text=True, timeout=300, check=False)
    finally:
        shutil.rmtree(path, ignore_errors=True)   # 1.5 GiB: not left for pytest to keep
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert result["backend"] == "file"
    assert result["chunks"] == SHAPE[0]
    assert result["fallbacks"] == 0
    # Only partials crossed to the client, not the 1.5 GiB or so of stored chunks.
    assert result["bytes_from_storage"] < 64 * 1024
    assert result["bytes_stored"] > GiB
    # numpy's mean of float32 data is float32: equal to the float64 mean to float32 precision.
    np.testing.assert_allclose(result["mean"], total / n, rtol=2e-7)

    peak = result["peak_rss"]
    print(f"\npeak RSS of the reducing process: {peak / 1e6:.1f} MB")
    assert peak < PEAK_RSS_LIMIT, f"peak RSS {peak / 1e6:.0f} MB >= {PEAK_RSS_LIMIT / 1e6:.0f} MB"

"""Shared by the asv benchmarks and ``compare.py``: the test arrays and the two ways to reduce them.

Each case is a float32 array on local disk, written chunk block by chunk block (never whole in
memory), holding a smooth field plus noise: realistic, not trivially compressible data.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import ZstdCodec

import activezarr

MiB = 2**20


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    zstd: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * 4

    @property
    def chunk_nbytes(self) -> int:
        return math.prod(self.chunks) * 4

    @property
    def nchunks(self) -> int:
        return math.prod(-(-s // c) for s, c in zip(self.shape, self.chunks))


def cases(scale: int = 1) -> dict[str, Case]:
    """The benchmark cases; ``scale`` multiplies the number of time steps (and so the size)."""
    t = 32 * scale
    return {c.name: c for c in (
        # (a) large chunks, zstd: 4 MiB and 8 MiB
        Case("large_zstd", (t, 1024, 1024), (1, 1024, 1024), True),
        Case("large8_zstd", (t, 1024, 1024), (2, 1024, 1024), True),
        # (b) many small chunks of 64 KiB, zstd and uncompressed
        Case("small_zstd", (t // 2, 1024, 1024), (1, 128, 128), True),
        Case("small_raw", (t // 2, 1024, 1024), (1, 128, 128), False),
        # (c) large chunks, 4 MiB, uncompressed
        Case("large_raw", (t, 1024, 1024), (1, 1024, 1024), False),
    )}


def field_block(t0: int, shape: tuple[int, ...], full: tuple[int, ...],
                rng: np.random.Generator) -> np.ndarray:
    """Time steps ``t0:t0+shape[0]`` of a temperature-like field: a smooth pattern plus noise."""
    nt, ny, nx = shape
    t = np.arange(t0, t0 + nt, dtype=np.float32)[:, None, None]
    lat = np.linspace(-np.pi / 2, np.pi / 2, full[1], dtype=np.float32)[None, :ny, None]
    lon = np.linspace(0, 2 * np.pi, full[2], dtype=np.float32)[None, None, :nx]
    block = 250 + 40 * np.cos(lat) + 5 * np.sin(lon + 0.1 * t) * np.cos(2 * lat)
    block = block + rng.standard_normal(shape, dtype=np.float32)
    return block.astype(np.float32)


def case_path(case: Case, root: str) -> str:
    """Where ``case`` is written under ``root``; the name carries the shape, so sizes never mix."""
    return os.path.join(root, f"{case.name}-{'x'.join(map(str, case.shape))}.zarr")


def build(case: Case, root: str, seed: int = 0) -> str:
    """Write ``case`` as a zarr v3 array under ``root``; return its path (reused if present)."""
    path = case_path(case, root)
    if os.path.exists(os.path.join(path, "zarr.json")):
        return path
    arr = zarr.create_array(
        path, shape=case.shape, chunks=case.chunks, dtype="float32",
        compressors=[ZstdCodec(level=3)] if case.zstd else None, fill_value=0.0,
        overwrite=True,
    )
    rng = np.random.default_rng(seed)
    step = case.chunks[0]
    for t0 in range(0, case.shape[0], step):
        nt = min(step, case.shape[0] - t0)
        arr[t0:t0 + nt] = field_block(t0, (nt,) + case.shape[1:], case.shape, rng)
    return path


def open_active(path: str) -> zarr.Array:
    """The array on an ActiveStore: the ``file`` backend reduces it."""
    return zarr.open_array(activezarr.ActiveStore.from_url(path, read_only=True), mode="r")


def open_plain(path: str) -> zarr.Array:
    """The array on zarr's own LocalStore, read the usual way."""
    return zarr.open_array(path, mode="r")


def active_mean(arr: zarr.Array) -> tuple[float, activezarr.ActiveReduction]:
    red = activezarr.ActiveReduction(arr)
    return red.mean(), red


def zarr_numpy_mean(arr: zarr.Array) -> float:
    return arr[...].mean(dtype=np.float64)


def side_by_side(active: zarr.Array, plain: zarr.Array, rounds: int) -> dict[str, list[float]]:
    """Wall times of ``rounds`` alternated runs of each method, after one warm-up run each."""
    active_mean(active)
    zarr_numpy_mean(plain)
    times: dict[str, list[float]] = {"active": [], "zarr": []}
    for _ in range(rounds):
        start = time.perf_counter()
        active_mean(active)
        times["active"].append(time.perf_counter() - start)
        start = time.perf_counter()
        zarr_numpy_mean(plain)
        times["zarr"].append(time.perf_counter() - start)
    return times

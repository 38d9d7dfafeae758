"""Whole-array mean: the ``file`` backend against a plain zarr read + numpy, on the same arrays.

Cases (see ``_cases.py``): 4 and 8 MiB chunks zstd, 64 KiB chunks zstd and uncompressed, 4 MiB
chunks uncompressed; float32, a smooth field plus noise. The data are written once per run by
``setup_cache`` into asv's working directory.
"""

from __future__ import annotations

import os

try:
    from . import _cases
except ImportError:  # imported as a top-level module (benchmarks/ on sys.path)
    import _cases

CASES = _cases.cases()


def _build_all(names) -> str:
    root = os.path.abspath("activezarr-bench-data")
    for name in names:
        _cases.build(CASES[name], root)
    return root


def _ratio(active, plain, rounds: int = 5) -> float:
    """Throughput of active over zarr+numpy, from the best of ``rounds`` alternated runs each.

    The best time is the estimate least disturbed by other load on the machine.
    """
    times = _cases.side_by_side(active, plain, rounds)
    return min(times["zarr"]) / min(times["active"])


class Mean:
    """``ActiveReduction(arr).mean()`` on the file backend vs ``arr[...].mean()``."""

    params = (list(CASES),)
    param_names = ("case",)
    timeout = 300
    number = 1
    repeat = (1, 10, 10.0)

    def setup_cache(self) -> str:
        return _build_all(CASES)

    def setup(self, root: str, case: str) -> None:
        path = _cases.case_path(CASES[case], root)
        self.active = _cases.open_active(path)
        self.plain = _cases.open_plain(path)
        # Warm both paths (thread pools, page cache, codec objects) before anything is timed.
        _cases.active_mean(self.active)
        _cases.zarr_numpy_mean(self.plain)

    def time_active_mean(self, root: str, case: str) -> None:
        _cases.active_mean(self.active)

    def time_zarr_numpy_mean(self, root: str, case: str) -> None:
        _cases.zarr_numpy_mean(self.plain)

    def track_bytes_from_storage(self, root: str, case: str) -> int:
        _, red = _cases.active_mean(self.active)
        return red.last_report.bytes_from_storage

    track_bytes_from_storage.unit = "bytes"

    def track_bytes_stored(self, root: str, case: str) -> int:
        _, red = _cases.active_mean(self.active)
        return red.last_report.bytes_stored

    track_bytes_stored.unit = "bytes"

    def track_throughput_ratio(self, root: str, case: str) -> float:
        """Active over zarr+numpy throughput, timed side by side in this one process."""
        return _ratio(self.active, self.plain)

    track_throughput_ratio.unit = "ratio"


class PeakMem:
    """Peak RSS of each way of taking the mean of a 128 MiB array (4 MiB zstd chunks)."""

    case = "large_zstd"
    timeout = 300

    def setup_cache(self) -> str:
        return _build_all([self.case])

    def setup(self, root: str) -> None:
        self.path = _cases.case_path(CASES[self.case], root)

    def peakmem_active_mean(self, root: str) -> None:
        _cases.active_mean(_cases.open_active(self.path))

    def peakmem_zarr_numpy_mean(self, root: str) -> None:
        _cases.zarr_numpy_mean(_cases.open_plain(self.path))


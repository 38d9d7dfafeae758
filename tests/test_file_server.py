"""The file backend with ``server``: the active server reads the files below its own root."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

import activezarr
from s3_servers import ActiveServer


def _array(root: Path, name: str) -> np.ndarray:
    data = np.arange(64 * 48, dtype="float32").reshape(64, 48)
    arr = zarr.create_array(root / name, shape=data.shape, chunks=(8, 16), dtype="float32",
                            fill_value=-1.0)
    arr[:] = data
    return data


def _open(root: Path, name: str, server: ActiveServer) -> activezarr.ActiveReduction:
    store = activezarr.ActiveStore.from_url(str(root / name), active={"server": server.url})
    return activezarr.ActiveReduction(zarr.open_array(store, mode="r"), fallback=False)


def test_server_reduces_its_own_files_and_combines_them(
        active_server: ActiveServer, served_root: Path) -> None:
    data = _array(served_root, "own.zarr")
    red = _open(served_root, "own.zarr", active_server)
    red.count()  # the server's capability document is fetched once per process
    assert red[3:60, 5:40].mean() == data[3:60, 5:40].mean(dtype=np.float64)
    report = red.last_report
    assert (report.backend, report.chunks, report.fallbacks) == ("file", 24, 0)
    assert report.requests == 1  # one batch, one combined answer: a few hundred bytes
    assert report.bytes_from_storage < 1000  # one partial, 23 "combined" markers
    np.testing.assert_array_equal(red.max(axis=0), data.max(axis=0))


def test_unwritten_chunks_are_the_fill_value_not_a_request(
        active_server: ActiveServer, served_root: Path) -> None:
    data = _array(served_root, "sparse.zarr")
    for key in (served_root / "sparse.zarr" / "c" / "0").iterdir():
        key.unlink()  # the first row of chunks was never written
    data[:8] = -1.0
    red = _open(served_root, "sparse.zarr", active_server)
    assert red.sum() == data.sum(dtype=np.float64)
    assert red.last_report.fallbacks == 0


def test_packed_int16_with_skipna_reduces_on_the_server(
        active_server: ActiveServer, served_root: Path) -> None:
    """skipna (as the xarray accessor asks) means nothing for integers: the chunks of packed
    int16 still go to the server, with no fallback."""
    raw = np.arange(64 * 48, dtype="int16").reshape(64, 48)
    raw[::7, ::5] = -32767
    arr = zarr.create_array(served_root / "packed.zarr", shape=raw.shape, chunks=(8, 16),
                            dtype="int16", fill_value=0, attributes={
                                "scale_factor": 0.01, "add_offset": 2.0, "_FillValue": -32767})
    arr[:] = raw
    store = activezarr.ActiveStore.from_url(str(served_root / "packed.zarr"),
                                            active={"server": active_server.url})
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"), skipna=True,
                                     fallback=False)
    expected = np.ma.masked_equal(raw, -32767).astype(np.float64) * 0.01 + 2.0
    np.testing.assert_allclose(red.mean(axis=0), expected.mean(axis=0), rtol=1e-12)
    assert red.last_report.fallbacks == 0 and red.last_report.paths == {"file": 24}

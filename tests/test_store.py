"""ActiveStore and backend choice: plain zarr keeps working, reductions go storage-side."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.storage import LocalStore, MemoryStore

import activezarr
import activezarr.client.engine
import activezarr.client.filesystem
from arrays import create


def test_plain_reads_and_writes_pass_through(tmp_path: Path) -> None:
    data = np.arange(100, dtype="i4").reshape(10, 10)
    array = create(tmp_path / "a.zarr", data, chunks=(3, 4))
    np.testing.assert_array_equal(array[:], data)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr"))[2:5], data[2:5])


def test_read_only_copy_keeps_backend_options(tmp_path: Path) -> None:
    store = activezarr.ActiveStore.from_url(str(tmp_path), active={"workers": 3})
    copy = store.with_read_only(True)
    assert isinstance(copy, activezarr.ActiveStore)
    assert copy.read_only and copy.active == {"workers": 3} and copy.protocol == "file"
    assert copy.root == store.root


def test_local_active_store_reduces_on_the_file_backend(tmp_path: Path) -> None:
    array = create(tmp_path / "a.zarr", np.ones((8, 8), "f4"), chunks=(4, 4))
    red = activezarr.ActiveReduction(array)
    assert red.sum() == 64
    report = red.last_report
    assert report.backend == "file" and report.paths == {"file": 4}
    assert report.chunks == 4 and report.requests == 4 and report.fallbacks == 0
    assert report.bytes_stored > 0 and 0 < report.bytes_from_storage < report.bytes_stored
    assert report.links == {"disk_read": report.bytes_stored, "lan": report.bytes_from_storage}


def test_stores_without_an_active_backend_reduce_on_the_client(tmp_path: Path) -> None:
    data = np.arange(24, dtype="f8").reshape(4, 6)
    for store in (MemoryStore(), LocalStore(tmp_path / "plain.zarr")):
        array = zarr.create_array(store, shape=data.shape, chunks=(2, 3), dtype=data.dtype)
        array[:] = data
        red = activezarr.ActiveReduction(array)
        assert red.mean() == data.mean()
        assert red.last_report.backend == "client" and red.last_report.paths == {"client": 4}
        assert red.last_report.bytes_from_storage == red.last_report.bytes_stored


def test_backend_can_be_forced_by_name(tmp_path: Path) -> None:
    create(tmp_path / "a.zarr", np.arange(10, dtype="i2"), chunks=(5,))
    store = activezarr.ActiveStore.from_url(str(tmp_path / "a.zarr"), active={"backend": "client"})
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"))
    assert red.sum() == 45 and red.last_report.backend == "client"


def test_open_array_shortcut_and_file_urls(tmp_path: Path) -> None:
    create(tmp_path / "a.zarr", np.arange(10, dtype="i2"), chunks=(5,))
    array = activezarr.open_array(f"file://{tmp_path}/a.zarr")
    assert isinstance(array.store, activezarr.ActiveStore) and array.store.read_only
    red = activezarr.ActiveReduction(array)
    assert red.max() == 9 and red.last_report.backend == "file"


def test_never_written_chunks_cost_no_reads(tmp_path: Path) -> None:
    store = activezarr.ActiveStore.from_url(str(tmp_path / "sparse.zarr"))
    array = zarr.create_array(store, shape=(1000, 1000), chunks=(100, 100), dtype="i8",
                              fill_value=3)
    array[0:100, 0:100] = 1
    red = activezarr.ActiveReduction(array, missing=None)
    assert red.sum() == 100 * 100 + 3 * (1000 * 1000 - 100 * 100)
    assert red.last_report.bytes_stored == len((tmp_path / "sparse.zarr/c/0/0").read_bytes())
    assert red.last_report.chunks == 100


def test_v2_fill_value_counts_as_fill_value_under_cf(tmp_path: Path) -> None:
    data = np.array([1.0, -999.0, 3.0, -999.0], "f4")
    array = create(tmp_path / "a.zarr", data, layout="v2", chunks=(2,), fill_value=-999.0)
    assert activezarr.ActiveReduction(array).mean() == 2.0
    assert activezarr.ActiveReduction(array, missing=None).mean() == np.mean(data)


def test_all_missing_results_are_masked(tmp_path: Path) -> None:
    data = np.array([[1, 2], [-1, -1]], "i4")
    array = create(tmp_path / "a.zarr", data, chunks=(1, 2), attributes={"missing_value": -1})
    red = activezarr.ActiveReduction(array)
    assert red[1].mean() is np.ma.masked
    by_row = red.max(axis=1)
    assert isinstance(by_row, np.ma.MaskedArray) and by_row.mask.tolist() == [False, True]
    assert red.count(axis=1).tolist() == [2, 0]
    assert type(red.sum(axis=0)) is np.ndarray


def test_results_have_numpys_types(tmp_path: Path) -> None:
    array = create(tmp_path / "a.zarr", np.arange(12, dtype="i2").reshape(3, 4), chunks=(2, 2))
    red = activezarr.ActiveReduction(array, missing=None)
    assert isinstance(red.sum(), np.int64)
    assert isinstance(red.min(), np.int16)
    assert isinstance(red.mean(), np.float64)
    assert red.sum(axis=0).dtype == np.int64 and red.mean(axis=1).shape == (3,)
    assert isinstance(red.count(), np.intp)


def test_integer_sums_do_not_overflow_where_numpy_does_not(tmp_path: Path) -> None:
    data = np.full(4096, np.iinfo("i4").max, "i4")
    array = create(tmp_path / "a.zarr", data, chunks=(256,))
    red = activezarr.ActiveReduction(array, missing=None)
    assert red.sum() == data.sum() == 4096 * int(np.iinfo("i4").max)
    assert red.mean() == np.iinfo("i4").max


def test_active_url_chaining_reads_writes_and_reduces(tmp_path: Path) -> None:
    url = f"active::file://{tmp_path}/chained.zarr"
    options = {"active": {"workers": 2}}
    data = np.arange(100, dtype="f4").reshape(10, 10)
    written = zarr.create_array(url, shape=data.shape, chunks=(5, 5), dtype=data.dtype,
                                storage_options=options)
    written[:] = data
    array = zarr.open_array(url, mode="r", storage_options=options)
    np.testing.assert_array_equal(array[:], data)
    red = activezarr.ActiveReduction(array)
    assert red[2:].mean(axis=0).tolist() == data[2:].mean(axis=0).tolist()
    assert red.last_report.backend == "file" and red.last_report.paths == {"file": 4}


def test_active_url_needs_a_target() -> None:
    with pytest.raises(ValueError, match="needs a target URL"):
        activezarr.client.filesystem.ActiveFileSystem()


@pytest.mark.parametrize("window", [1, 5, 7])
def test_tasks_are_planned_a_window_at_a_time(tmp_path: Path, window: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(activezarr.client.engine.Engine, "window", window)
    data = np.arange(20 * 18, dtype="i4").reshape(20, 18)
    array = create(tmp_path / "a.zarr", data, layout="v3-sharded", chunks=(2, 3),
                   shards=(4, 9))
    red = activezarr.ActiveReduction(array, missing=None)
    np.testing.assert_array_equal(red[1:, ::-1].sum(axis=0), data[1:, ::-1].sum(axis=0))
    report = red.last_report
    assert report.chunks == red.chunk_count((slice(1, None), slice(None, None, -1))) == 60
    # Inner chunks are planned shard by shard, so no shard index is read twice.
    assert report.requests == 10 + 60


def test_windows_start_small_and_are_planned_ahead_in_order() -> None:
    """The first window is small (reducing starts at once), the next is planned in a thread
    while the one before is reduced; a reduction stopped early plans no further."""
    from activezarr.client.engine import _planned_ahead, _slices

    assert [len(w) for w in _slices(range(10), 4, first=2)] == [2, 4, 4]

    async def windows(stop: int | None) -> list[list[int]]:
        seen = []
        async for window in _planned_ahead(_slices(range(10), 3, first=1)):
            seen.append(window)
            if len(seen) == stop:
                break
        return seen

    assert asyncio.run(windows(None)) == [[0], [1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert asyncio.run(windows(2)) == [[0], [1, 2, 3]]

    def failing() -> Iterator[int]:
        yield from range(5)
        raise ValueError("planning failed")

    async def all_windows() -> None:
        async for _ in _planned_ahead(_slices(failing(), 3, first=1)):
            pass

    with pytest.raises(ValueError, match="planning failed"):  # raised where it is awaited
        asyncio.run(all_windows())

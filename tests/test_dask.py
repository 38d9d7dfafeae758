"""activezarr.dask: graphs of storage-side partials, run on a dask.distributed cluster of
processes, equal numpy; no task in them returns raw chunk data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from dask.callbacks import Callback
from distributed import Client

import activezarr
import activezarr.dask as adask
from activezarr.chunk.partial import Partial
from arrays import create
from dask_cluster import two_worker_processes

SHAPE, CHUNKS = (24, 10, 12), (5, 4, 5)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, activezarr.ActiveReduction]:
    rng = np.random.default_rng(3)
    data = rng.normal(size=SHAPE).astype("f4")
    data[3:9, 2, :] = np.nan
    path = tmp_path_factory.mktemp("dask") / "a.zarr"
    create(path, data, layout="v3", codec="zstd", chunks=CHUNKS, fill_value=np.nan)
    arr = zarr.open_array(activezarr.ActiveStore.from_url(str(path)), mode="r")
    return data, activezarr.ActiveReduction(arr, skipna=True)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with two_worker_processes() as dask_client:
        yield dask_client


def test_a_reduction_runs_on_two_worker_processes_and_equals_numpy(
        client: Client, stored: tuple[np.ndarray, activezarr.ActiveReduction]) -> None:
    data, arr = stored
    lazy = adask.reduce(arr, "mean", axis=0, split_every=2)
    assert lazy.shape == (10, 12) and lazy.numblocks == (1, 1)
    np.testing.assert_allclose(client.compute(lazy).result(), np.nanmean(data, axis=0), atol=1e-6,
                               rtol=1e-6)
    workers = client.run(lambda: __import__("os").getpid())
    assert len(set(workers.values())) == 2


def test_weighted_and_grouped_graphs_equal_numpy_on_the_cluster(
        client: Client, stored: tuple[np.ndarray, activezarr.ActiveReduction]) -> None:
    data, arr = stored
    w = np.cos(np.linspace(0, 1.2, 10))[:, None]
    lazy = adask.reduce(arr, "weighted_mean", axis=(1, 2), weights=w, selection=np.s_[2:21])
    part = data[2:21]
    valid = ~np.isnan(part)
    wb = np.broadcast_to(w, part.shape)
    expected = (np.where(valid, part, 0) * wb).sum((1, 2)) / np.where(valid, wb, 0).sum((1, 2))
    np.testing.assert_allclose(client.compute(lazy).result(), expected, rtol=1e-5, atol=1e-6)
    labels = np.arange(24) % 4
    lazy = adask.reduce(arr, "max", axis=(2,), groups=(0, labels))
    expected = np.stack([np.nanmax(data[labels == g], axis=(0, 2)) for g in range(4)])
    np.testing.assert_allclose(client.compute(lazy).result(), expected)


class _Recorder(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.results: dict[Any, Any] = {}

    def _posttask(self, key: Any, result: Any, *args: Any) -> None:
        self.results[key] = result


def test_no_task_in_the_graph_returns_raw_chunk_data(stored: tuple[np.ndarray, activezarr.ActiveReduction]
                                                     ) -> None:
    """Leaves and combines return partials of the output's shape (with their report); only the
    last task returns an array, the result. Nothing of a chunk's size (5*4*5 values) is ever a
    task's output."""
    data, arr = stored
    lazy = adask.reduce(arr, "sum", axis=(0, 2), split_every=3)
    with _Recorder() as recorder:
        result = lazy.compute(scheduler="sync", optimize_graph=False)
    np.testing.assert_allclose(result, np.nansum(data, axis=(0, 2)), rtol=1e-5)
    leaves = [k for k in recorder.results if k[0].startswith("activezarr-leaf")]
    assert len(leaves) == 5 * 3  # chunks along the reduced dims; each leaf covers all of dim 1
    for key, value in recorder.results.items():
        name = key[0] if isinstance(key, tuple) else key
        if name.startswith(("activezarr-leaf", "activezarr-combine")):
            partial, report = value
            assert isinstance(partial, Partial) and partial.shape == (10,)
            assert partial.nbytes <= 2 * 8 * 10
            assert isinstance(report, activezarr.Report) and report.chunks
        else:  # the finishing task, and dask's own finalize: the result
            assert np.shape(value) == (10,)


def test_empty_selection_and_bad_split_every(stored: tuple[np.ndarray, activezarr.ActiveReduction]) -> None:
    _, arr = stored
    assert adask.reduce(arr, "sum", selection=np.s_[3:3]).compute() == 0
    with pytest.raises(ValueError, match="split_every"):
        adask.reduce(arr, "sum", split_every=1)


def test_reductions_pickle(stored: tuple[np.ndarray, activezarr.ActiveReduction], tmp_path: Path) -> None:
    import pickle

    _, arr = stored
    red = activezarr.ActiveReduction(arr.array)
    again = pickle.loads(pickle.dumps(red))
    assert again.layout.chunk_key((1, 2, 0)) == red.layout.chunk_key((1, 2, 0))


def test_quantile_graphs_on_the_cluster_equal_numpy_or_keep_their_bound(
        client: Client, stored: tuple[np.ndarray, activezarr.ActiveReduction]) -> None:
    from activezarr.chunk.ranks import rank_error_bound
    from test_quantile_sketch import rank_errors

    data, arr = stored
    expected = np.nanquantile(data, [0.1, 0.9], axis=0)
    exact = adask.reduce(arr, "quantile", axis=0, q=[0.1, 0.9])
    assert exact.shape == (2, 10, 12)
    np.testing.assert_array_equal(np.ma.filled(client.compute(exact).result(), np.nan), expected)
    median = client.compute(adask.reduce(arr, "median", axis=None)).result()
    assert median == np.nanmedian(data)
    for axis in (0, None):  # a tree of sketches, 3 keys a level: compacted on every merge
        lazy = adask.reduce(arr, "quantile", axis=axis, q=[0.1, 0.9], method="approximate",
                            sketch_size=3, split_every=2)
        got = client.compute(lazy).result()
        errors, n, member = rank_errors(data, np.isnan(data), got, [0.1, 0.9], axis)
        selected = data.size if axis is None else SHAPE[0]
        assert member.all() and (errors <= 1 + rank_error_bound(n, selected, 3)).all()

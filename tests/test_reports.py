"""``activezarr.collect_reports()``: the report of every reduction inside the block, however it
was reached: an accessor call on ``ds.tas`` (a new object each time), weighted and grouped ones,
and lazy ones computed on a two-process dask.distributed cluster (reports summed over workers)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from distributed import Client

import activezarr
import activezarr.dask
from activezarr.xarray import ActiveFallbackWarning
from dask_cluster import two_worker_processes

CHUNKS = (6, 4, 6)
STORED_CHUNKS = 4 * 2 * 2  # (24, 8, 12) in (6, 4, 6)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    time = pd.date_range("2000-01-01", periods=24, freq="MS")
    lat, lon = np.linspace(-70, 70, 8), np.arange(0, 360, 30.0)
    values = 280 + np.random.default_rng(4).standard_normal((24, 8, 12)).astype("f4")
    source = xr.Dataset({"tas": (("time", "lat", "lon"), values)},
                        coords={"time": time, "lat": lat, "lon": lon})
    source.tas.encoding = {"chunks": CHUNKS}
    path = tmp_path_factory.mktemp("reports") / "ds.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source.to_zarr(path)
    return path


@pytest.fixture
def ds(stored: Path) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_zarr(activezarr.ActiveStore.from_url(str(stored)))


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with two_worker_processes() as dask_client:
        yield dask_client


def _is_whole_read(report: activezarr.Report) -> None:
    assert report.chunks == STORED_CHUNKS and report.paths == {"file": STORED_CHUNKS}
    assert report.fallbacks == 0 and report.bytes_from_storage > 0 and report.bytes_stored > 0


def test_an_accessor_call_on_ds_tas_is_collected(ds: xr.Dataset) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveFallbackWarning)
        with activezarr.collect_reports() as reports:
            ds.tas.active.mean("time")
    (report,) = reports.each
    _is_whole_read(report)
    assert reports.total.bytes_from_storage == report.bytes_from_storage
    with pytest.raises(AttributeError, match="collect_reports"):
        ds.tas.active.last_report  # noqa: B018  (a new DataArray: a new accessor)


def test_weighted_and_grouped_reductions_are_collected(ds: xr.Dataset) -> None:
    weights = np.cos(np.deg2rad(ds.lat))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveFallbackWarning)
        with activezarr.collect_reports() as reports:
            ds.tas.active.weighted(weights).mean(("lat", "lon"))
            ds.tas.active.groupby("time.month").mean()
    assert len(reports.each) == 2
    for report in reports.each:
        _is_whole_read(report)
    total = reports.total
    assert total.chunks == 2 * STORED_CHUNKS and total.paths == {"file": 2 * STORED_CHUNKS}
    assert total.bytes_from_storage == sum(r.bytes_from_storage for r in reports.each)


def test_lazy_results_report_when_computed_on_two_worker_processes(
        stored: Path, ds: xr.Dataset, client: Client) -> None:
    with activezarr.collect_reports() as eager:
        ds.tas.active.std("time")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveFallbackWarning)
        lazy = ds.tas.active.std("time", compute=False)
    with activezarr.collect_reports() as reports:
        computed = lazy.compute()
    xr.testing.assert_allclose(computed, ds.tas.std("time"), rtol=1e-5)
    (report,) = reports.each  # one reduction: its leaves' reports summed, on either worker
    _is_whole_read(report)
    assert report.bytes_stored == eager.total.bytes_stored  # each leaf's partials move apart
    assert len(set(client.run(__import__("os").getpid).values())) == 2

    array = activezarr.ActiveReduction(activezarr.open_array(str(stored), path="tas"))
    with activezarr.collect_reports() as reports:
        activezarr.dask.reduce(array, "max", axis=(1, 2), split_every=2).compute()
    (report,) = reports.each
    _is_whole_read(report)


"""Bytes on the s3 path: weighted and grouped reductions through the accessor move a small
fraction of what is stored (120 chunks of 147 KB behind the real active server)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import activezarr
from activezarr.xarray import ActiveFallbackWarning
from s3_servers import S3, ActiveServer

BUCKET = "xarray-bytes"


@pytest.fixture(scope="module")
def on_s3(tmp_path_factory: pytest.TempPathFactory, moto_s3: S3) -> tuple[str, int]:
    """(s3 URL, stored bytes of tas's chunks) of a 240-month dataset in 120 chunks."""
    time = pd.date_range("2000-03-01", periods=241, freq="MS").delete(7)
    lat, lon = np.linspace(-88, 88, 96), np.arange(0, 360, 1.875)
    rng = np.random.default_rng(5)
    tas = (280 + rng.standard_normal((time.size, lat.size, lon.size))).astype("f4")
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), tas)},
                    coords={"time": time, "lat": lat, "lon": lon})
    ds.tas.encoding = {"chunks": (24, 32, 48)}
    path = tmp_path_factory.mktemp("bytes") / "ds.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, zarr_format=3)
    moto_s3.bucket(BUCKET)
    stored = 0
    for file in sorted(path.rglob("*")):
        if file.is_file():
            key = file.relative_to(path).as_posix()
            moto_s3.client.put_object(Bucket=BUCKET, Key=f"ds.zarr/{key}", Body=file.read_bytes())
            if key.startswith("tas/c/"):
                stored += file.stat().st_size
    return f"s3://{BUCKET}/ds.zarr", stored


def _open(url: str, moto_s3: S3, server: ActiveServer) -> xr.Dataset:
    store = activezarr.ActiveStore.from_url(url, storage_options=moto_s3.storage_options,
                                            active={"server": server.url})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return xr.open_zarr(store)


@pytest.mark.parametrize("reduction", ["weighted global mean", "monthly climatology"])
def test_weighted_and_grouped_move_under_one_percent_of_the_stored_bytes(
        on_s3: tuple[str, int], moto_s3: S3, active_server: ActiveServer,
        reduction: str) -> None:
    url, stored = on_s3
    tas = _open(url, moto_s3, active_server).tas
    reducer: Any
    if reduction == "weighted global mean":
        reducer = tas.active.weighted(np.cos(np.deg2rad(tas.lat)))
        with warnings.catch_warnings():
            warnings.simplefilter("error", ActiveFallbackWarning)
            got = reducer.mean(("lat", "lon"))
        want = tas.weighted(np.cos(np.deg2rad(tas.lat))).mean(("lat", "lon"))
    else:  # the climatology of the global mean: one value per calendar month
        reducer = tas.active.groupby("time.month")
        with warnings.catch_warnings():
            warnings.simplefilter("error", ActiveFallbackWarning)
            got = reducer.mean(...)
        want = tas.groupby("time.month").mean(...)
    xr.testing.assert_allclose(got, want.compute(), rtol=1e-5)
    report = reducer.last_report
    assert report.chunks == 120 and report.paths == {"s3": 120} and report.fallbacks == 0
    assert report.bytes_stored == stored
    print(f"{reduction}: {report.bytes_from_storage} of {stored} stored bytes "
          f"({100 * report.bytes_from_storage / stored:.2f}%)")
    assert report.bytes_from_storage < 0.01 * stored


def test_a_per_gridpoint_climatology_moves_its_output(on_s3: tuple[str, int], moto_s3: S3,
                                                     active_server: ActiveServer,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """With 24 months per chunk, each calendar month holds 2 steps per cell: the partials
    (count and float64 sum per group and cell) are as big as the chunk itself. What storage-
    side grouping saves grows with the steps per chunk; the figure is printed, not bounded."""
    url, stored = on_s3
    tas = _open(url, moto_s3, active_server).tas
    reducer = tas.active.groupby("time.month")
    xr.testing.assert_allclose(reducer.mean(), tas.groupby("time.month").mean().compute(),
                               rtol=1e-5)
    report = reducer.last_report
    assert report.fallbacks == 0
    print(f"per-gridpoint climatology: {report.bytes_from_storage} of {stored} stored bytes "
          f"({100 * report.bytes_from_storage / stored:.1f}%)")
    assert Path(url).name == "ds.zarr"

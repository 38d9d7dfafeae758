"""The accessor reduces what xarray shows, storage-side through the real active server on
moto's S3: packed int16 (``scale_factor``, ``add_offset``, ``_FillValue``) with no fallback,
``valid_range`` as xarray means it (xarray leaves ``valid_*`` in attrs and masks nothing by
them), and DataArrays whose attrs or encoding were edited after opening."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

import activezarr
from activezarr.xarray import ActiveFallbackWarning
from s3_servers import S3, ActiveServer

BUCKET = "xarray-cf"
PACKED = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 2.0, "_FillValue": -32767}


def _dataset() -> xr.Dataset:
    time = pd.date_range("2000-01-01", periods=36, freq="MS")
    lat, lon = np.linspace(-75, 75, 6), np.arange(0, 360, 45.0)
    rng = np.random.default_rng(11)
    pr = (2 + rng.gamma(1.0, 1.5, (36, 6, 8))).round(2)
    pr[rng.random(pr.shape) < 0.1] = np.nan  # packed as _FillValue
    tos = 250 + 60 * rng.random((36, 6, 8))  # a third of it outside valid_range
    tos[:, 0, 0] = np.nan
    ds = xr.Dataset({"pr": (("time", "lat", "lon"), pr, {"units": "mm/day"}),
                     "tos": (("time", "lat", "lon"), tos,
                             {"valid_range": np.array([271.0, 300.0]), "units": "K"})},
                    coords={"time": time, "lat": lat, "lon": lon})
    days = rng.integers(0, 31, (36, 6, 8)).astype("i2")  # masked int16, decoded to float32
    days[rng.random(days.shape) < 0.1] = -1
    ds["days"] = (("time", "lat", "lon"), days, {"units": "1"})
    ds.days.encoding = {"_FillValue": -1, "chunks": (12, 3, 4)}
    ds.pr.encoding = {**PACKED, "chunks": (12, 3, 4)}
    ds.tos.encoding = {"chunks": (12, 3, 4)}
    return ds


@pytest.fixture(scope="module", params=[2, 3], ids=["v2", "v3"])
def on_s3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          moto_s3: S3) -> str:
    fmt = request.param
    path = tmp_path_factory.mktemp("cf") / "ds.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _dataset().to_zarr(path, zarr_format=fmt, consolidated=False)
    moto_s3.bucket(BUCKET)
    for file in sorted(path.rglob("*")):
        if file.is_file():
            key = f"v{fmt}/ds.zarr/{file.relative_to(path).as_posix()}"
            moto_s3.client.put_object(Bucket=BUCKET, Key=key, Body=file.read_bytes())
    return f"s3://{BUCKET}/v{fmt}/ds.zarr"


def _open(url: str, moto_s3: S3, server: ActiveServer) -> xr.Dataset:
    store = activezarr.ActiveStore.from_url(url, storage_options=moto_s3.storage_options,
                                            active={"server": server.url}, read_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return xr.open_zarr(store, consolidated=False)


def _storage_side(reduce: Callable[[], xr.DataArray]) -> tuple[xr.DataArray, activezarr.Report]:
    """``reduce()``, checked to have run storage-side on the s3 path with no fallback."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveFallbackWarning)
        warnings.simplefilter("error", activezarr.FallbackWarning)
        with activezarr.collect_reports() as reports:
            got = reduce()
    report = reports.total
    assert report.fallbacks == 0 and set(report.paths) == {"s3"}, report
    return got, report


def _equal(got: xr.DataArray, want: xr.DataArray) -> None:
    want = want.compute()
    assert got.dtype == want.dtype
    # xarray sums float32 in float32: its rounding, not ours, sets the tolerance there.
    xr.testing.assert_allclose(got, want, rtol=1e-12 if want.dtype == np.float64 else 1e-6)


REDUCTIONS: dict[str, Callable[[Any], Any]] = {
    "mean over time": lambda a: a.mean("time"),
    "yearly max": lambda a: a.resample(time="1YS").max(),
    "monthly climatology": lambda a: a.groupby("time.month").mean(),
    "weighted": lambda a: a.weighted(np.cos(np.deg2rad(a._da.lat if hasattr(a, "_da")
                                                      else a.lat))).mean(("lat", "lon")),
}


@pytest.mark.parametrize("name", ["pr", "days"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_packed_int16_reduces_storage_side_equal_to_xarray(
        on_s3: str, moto_s3: S3, active_server: ActiveServer, reduction: str,
        name: str) -> None:
    da = _open(on_s3, moto_s3, active_server)[name]
    got, report = _storage_side(lambda: REDUCTIONS[reduction](da.active))
    assert report.chunks == 3 * 2 * 2
    _equal(got, REDUCTIONS[reduction](da))


def test_valid_range_means_what_it_means_to_xarray(on_s3: str, moto_s3: S3,
                                                   active_server: ActiveServer) -> None:
    tos = _open(on_s3, moto_s3, active_server).tos
    assert "valid_range" in tos.attrs  # left undecoded: xarray masks nothing by it
    got, _ = _storage_side(lambda: tos.active.mean())
    _equal(got, tos.mean())
    netcdf4 = tos.where((tos >= 271) & (tos <= 300)).mean()  # what masking by it would give
    assert abs(float(got) - float(netcdf4)) > 1


def test_edited_attrs_and_encoding_do_not_change_what_is_reduced(
        on_s3: str, moto_s3: S3, active_server: ActiveServer) -> None:
    """xarray's values were decoded when it opened the data: editing ``attrs`` or
    ``encoding`` afterwards changes neither them nor the storage side's answer."""
    ds = _open(on_s3, moto_s3, active_server)
    tos, pr = ds.tos, ds.pr
    del tos.attrs["valid_range"]
    pr.encoding.pop("_FillValue")
    pr.encoding["scale_factor"] = 1.0
    for da in (tos, pr):
        got, _ = _storage_side(da.active.mean)
        _equal(got, da.mean())


def test_undecoded_data_reduces_raw_as_xarray_shows_it(on_s3: str, moto_s3: S3,
                                                      active_server: ActiveServer,
                                                      tmp_path: Path) -> None:
    store = activezarr.ActiveStore.from_url(on_s3, storage_options=moto_s3.storage_options,
                                            active={"server": active_server.url},
                                            read_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        raw = xr.open_zarr(store, consolidated=False, mask_and_scale=False)
    assert raw.pr.dtype == np.int16 and "scale_factor" in raw.pr.attrs
    got, _ = _storage_side(lambda: raw.pr.active.max("time"))
    _equal(got, raw.pr.max("time"))


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_fill_value_no_stored_value_can_equal_masks_nothing_as_in_xarray(
        tmp_path: Path, fmt: int) -> None:
    """xarray compares float32 values with the float64 missing_value 1.1 and never finds it
    (netCDF4, and ActiveReduction, round it to float32 first and mask it)."""
    values = np.full((4, 3), 280.0, "f4")
    values[1, 1] = 1.1
    group = zarr.open_group(activezarr.ActiveStore.from_url(str(tmp_path / "t.zarr")),
                            mode="w", zarr_format=fmt)
    names = {"dimension_names": ("time", "lat")} if fmt == 3 else {}
    attrs: dict[str, Any] = {"missing_value": 1.1}
    if fmt == 2:
        attrs["_ARRAY_DIMENSIONS"] = ["time", "lat"]
    group.create_array("t", shape=values.shape, dtype="f4", attributes=attrs,
                       fill_value=np.nan, **names)[:] = values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        t = xr.open_zarr(group.store, consolidated=False).t
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveFallbackWarning)
        got = t.active.mean(), t.active.min()
    _equal(got[0], t.mean())
    _equal(got[1], t.min())

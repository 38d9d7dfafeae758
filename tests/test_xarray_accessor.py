"""``DataArray.active`` equals xarray: datasets written by ``to_zarr`` (v2 and v3, defaults),
netCDF files through kerchunk references on the active server, and the fallbacks."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import activezarr
from activezarr.xarray import ActiveFallbackWarning
from netcdf_objects import NETCDF_BUCKET
from s3_servers import S3, ActiveServer

Call = Callable[[Any], xr.DataArray]


def _cos_lat(da: xr.DataArray) -> xr.DataArray:
    return np.cos(np.deg2rad(da.lat))


#: The calls of the issue, each made on ``da`` (xarray) and on ``da.active``.
CALLS: dict[str, Call] = {
    "mean(time)": lambda a: a.mean("time"),
    "max(lat,lon)": lambda a: a.max(("lat", "lon")),
    "min()": lambda a: a.min(),
    "sum(lon)": lambda a: a.sum("lon"),
    "std(time)": lambda a: a.std("time"),
    "var(time, ddof=1)": lambda a: a.var("time", ddof=1),
    "count(time)": lambda a: a.count("time"),
    "reduce(mean)": lambda a: a.reduce(np.nanmean, "lat") if isinstance(a, xr.DataArray)
    else a.reduce("mean", "lat"),
    "weighted global mean": lambda a: a.weighted(_cos_lat(a._da if hasattr(a, "_da") else a))
    .mean(("lat", "lon")),
    "weighted sum": lambda a: a.weighted(_cos_lat(a._da if hasattr(a, "_da") else a))
    .sum("lat"),
    "monthly climatology": lambda a: a.groupby("time.month").mean(),
    "monthly climatology std": lambda a: a.groupby("time.month").std(),
    "resample 1YS max": lambda a: a.resample(time="1YS").max(),
    "resample 1MS count": lambda a: a.resample(time="1MS").count(),
    "groupby_bins lat": lambda a: a.groupby_bins("lat", [-90, -30, 0, 30, 60]).mean(),
    "keep_attrs": lambda a: a.mean("time", keep_attrs=True),
}


def _dataset() -> xr.Dataset:
    """A float variable with NaN and a _FillValue, and packed int16; monthly from March, with a
    missing month (June of the first year)."""
    time = pd.date_range("2001-03-01", periods=40, freq="MS").delete(3)
    lat = np.linspace(-75, 75, 11)
    lon = np.arange(0, 360, 24.0)
    rng = np.random.default_rng(11)
    tas = (280 + 10 * rng.standard_normal((len(time), lat.size, lon.size))).astype("f4")
    tas[2, 3, :] = np.nan
    tas[5:9, 0, 0] = np.nan
    pr = rng.uniform(0, 300, tas.shape)
    pr[7, 4, 4] = np.nan
    ds = xr.Dataset(
        {"tas": (("time", "lat", "lon"), tas, {"units": "K", "long_name": "temperature"}),
         "pr": (("time", "lat", "lon"), pr, {"units": "mm"})},
        coords={"time": time, "lat": lat, "lon": lon})
    ds.tas.encoding = {"_FillValue": -999.0, "chunks": (8, 5, 6)}
    ds.pr.encoding = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 150.0,
                      "_FillValue": -32768, "chunks": (8, 5, 6)}
    return ds


@pytest.fixture(scope="module", params=[2, 3], ids=["zarr-v2", "zarr-v3"])
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp(f"xr{request.param}") / "ds.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3's consolidated-metadata notice
        _dataset().to_zarr(path, zarr_format=request.param)
    return str(path)


OPENERS: dict[str, Callable[[Any], xr.Dataset]] = {
    "open_zarr": lambda store: xr.open_zarr(store),
    "open_dataset": lambda store: xr.open_dataset(store, engine="zarr", chunks=None),
}


def _open(how: str, url: str) -> xr.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return OPENERS[how](activezarr.ActiveStore.from_url(url))


@pytest.fixture
def no_fallback() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveFallbackWarning)
        yield


def _assert_equal(got: xr.DataArray, want: xr.DataArray) -> None:
    want = want.compute()
    xr.testing.assert_allclose(got, want, rtol=1e-5)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.name == want.name and got.attrs == want.attrs
    assert list(got.coords) == list(want.coords) or set(got.coords) == set(want.coords)


class _Spy:
    """Passes calls through to an accessor (or what it returns), remembering the last object
    that reduced: the one whose ``last_report`` tells where the work was done."""

    last: Any = None

    def __init__(self, target: Any) -> None:
        self._target = target
        self._da = getattr(target, "_da", None)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if isinstance(result, xr.DataArray):
                _Spy.last = self._target
                return result
            return _Spy(result)
        return call


@pytest.mark.parametrize("how", list(OPENERS))
@pytest.mark.parametrize("variable", ["tas", "pr"])
@pytest.mark.parametrize("call", list(CALLS))
def test_the_accessor_equals_xarray(written: str, how: str, variable: str, call: str,
                                    no_fallback: None) -> None:
    active = _open(how, written)[variable]
    got = CALLS[call](_Spy(active.active))
    want = CALLS[call](_open(how, written)[variable])
    _assert_equal(got, want)
    report = _Spy.last.last_report
    assert report.backend == "file" and report.fallbacks == 0 and report.chunks > 0


def test_label_selection_first_reduces_only_that_box(written: str, no_fallback: None) -> None:
    ds = _open("open_zarr", written)
    box = ds.tas.sel(time=slice("2002", "2003"), lat=slice(-30, 30), lon=slice(48, 200))
    _assert_equal(box.active.mean("time"), box.mean("time"))
    report = box.active.last_report
    # 2002-2003 are positions 9..32 (June 2001 is missing): time chunks 1..4 of 8 steps;
    # lat -30..30 is positions 3..7 (chunks 0, 1 of 5); lon 48..192 is 2..8 (chunks 0, 1 of 6).
    assert report.chunks == 4 * 2 * 2 and report.fallbacks == 0
    point = ds.pr.sel(lat=15, lon=96, method=None).isel(time=slice(None, None, 3))
    _assert_equal(point.active.max(), point.max())


def test_compute_false_returns_a_lazy_dataarray(written: str, no_fallback: None) -> None:
    ds = _open("open_zarr", written)
    lazy = ds.pr.active.groupby("time.month").mean(compute=False)
    assert lazy.chunks is not None
    _assert_equal(lazy.compute(), _open("open_zarr", written).pr.groupby("time.month").mean())
    weighted = ds.tas.active.weighted(_cos_lat(ds.tas)).mean(("lat", "lon"), compute=False)
    _assert_equal(weighted.compute(), ds.tas.weighted(_cos_lat(ds.tas)).mean(("lat", "lon")))


@pytest.mark.parametrize(("make", "why"), [
    (lambda ds: ds.tas * 2, "computes on the stored values"),
    (lambda ds: ds.tas.load(), "ndarray"),
    (lambda ds: ds.tas.isel(lat=[0, 2, 3]), "strided run"),
    (lambda ds: xr.DataArray(np.ones(3), dims="time"), "ndarray"),
])
def test_what_cannot_be_reduced_actively_is_reduced_by_xarray_with_a_warning(
        written: str, make: Callable[[xr.Dataset], xr.DataArray], why: str) -> None:
    da = make(_open("open_zarr", written))
    with pytest.warns(ActiveFallbackWarning, match=why):
        got = da.active.mean("time")
    _assert_equal(got, da.mean("time"))


def test_skipna_false_falls_back_and_undecoded_attrs_reduce_raw_as_xarray_does(
        written: str) -> None:
    ds = _open("open_dataset", written)
    with pytest.warns(ActiveFallbackWarning, match="skipna=False"):
        _assert_equal(ds.tas.active.mean("time", skipna=False), ds.tas.mean("time", skipna=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        raw = xr.open_dataset(activezarr.ActiveStore.from_url(written), engine="zarr",
                              chunks=None, mask_and_scale=False)
    for name in ("pr", "tas"):  # xarray left every CF attribute in attrs: raw values
        with warnings.catch_warnings():
            warnings.simplefilter("error", ActiveFallbackWarning)
            got = raw[name].active.max(), raw[name].active.mean("time")
        _assert_equal(got[0], raw[name].max())  # xarray's reduction loads the values
        _assert_equal(got[1], raw[name].mean("time"))


def test_weights_with_nan_raise_as_xarray_does(written: str) -> None:
    ds = _open("open_dataset", written)
    weights = _cos_lat(ds.tas).where(ds.lat > -70)
    with pytest.raises(ValueError, match="missing values"):
        ds.tas.active.weighted(weights)


def test_importing_activezarr_registers_the_accessor_without_loading_xarray() -> None:
    import subprocess
    import sys

    code = ("import sys, activezarr; assert 'xarray' not in sys.modules; "
            "import xarray; print(hasattr(xarray.DataArray, 'active'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "True"


# --- netCDF through kerchunk references, reduced on the active server ----------------------


NETCDF_CALLS = ["mean(time)", "max(lat,lon)", "min()", "sum(lon)", "std(time)", "count(time)",
                "weighted global mean", "monthly climatology"]


@pytest.fixture
def netcdf_store(netcdf_refs: dict[str, Any], moto_s3: S3,
                 active_server: ActiveServer) -> Callable[[str], Any]:
    def store(name: str) -> Any:
        options = {"fo": netcdf_refs[name], "remote_protocol": "s3",
                   "remote_options": moto_s3.storage_options}
        return activezarr.ActiveStore.from_url("reference://", storage_options=options,
                                               active={"server": active_server.url})
    return store


@pytest.mark.parametrize("call", NETCDF_CALLS)
def test_netcdf_through_references_equals_xarray_on_the_file(
        netcdf_dir: Path, netcdf_store: Callable[[str], Any], call: str,
        no_fallback: None) -> None:
    assert NETCDF_BUCKET
    ds = xr.open_dataset(netcdf_store("test1.nc"), engine="zarr", chunks=None, zarr_format=2,
                         consolidated=False)
    tas = ds.tas
    reducer = CALLS[call](_Spy(tas.active))
    with xr.open_dataset(netcdf_dir / "test1.nc") as local:
        want = CALLS[call](local.tas)
        xr.testing.assert_allclose(reducer, want.compute(), rtol=1e-5)
    report = _Spy.last.last_report
    assert report.paths == {"reference": report.chunks} and report.fallbacks == 0


def test_netcdf_grouped_and_weighted_run_on_the_server(netcdf_dir: Path,
                                                       netcdf_store: Callable[[str], Any],
                                                       no_fallback: None) -> None:
    ds = xr.open_dataset(netcdf_store("daily_data_masked.nc"), engine="zarr", chunks=None,
                         zarr_format=2, consolidated=False)
    monthly = ds.ta.active.resample(time="1MS")
    got = monthly.mean()
    # One contiguous 3 KB chunk: the planner reads it plainly, as cheaper than asking the server.
    assert monthly.last_report.fallbacks == 0
    weighted = ds.ta.active.weighted(_cos_lat(ds.ta))
    got_w = weighted.mean(("lat", "lon"))
    assert weighted.last_report.fallbacks == 0
    with xr.open_dataset(netcdf_dir / "daily_data_masked.nc") as local:
        xr.testing.assert_allclose(got, local.ta.resample(time="1MS").mean(), rtol=1e-5)
        xr.testing.assert_allclose(got_w, local.ta.weighted(_cos_lat(local.ta))
                                   .mean(("lat", "lon")), rtol=1e-5)

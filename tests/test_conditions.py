"""Conditions on decoded values (``where=(">", 298.15)``, ``da.active.where(lambda x: x > t)``):
exact masks of stored values, on every stored value of the small dtypes, through xarray's own
decoding (packed int16 with a negative scale_factor, a _FillValue, NaN), grouped per year on
the file and s3 paths, in dask graphs, and refused with one line where they cannot be said.

test_differential runs generated conditions through every backend.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import activezarr
import activezarr.dask
from activezarr.chunk.conditions import MAX_EXCLUDED, Where
from activezarr.chunk.missing import decoding, missing_mask
from activezarr.xarray import ActiveFallbackWarning
from arrays import create
from s3_servers import S3, ActiveServer
from test_differential import COMPARE

BUCKET = "conditions"


def _every_value(dtype: np.dtype) -> np.ndarray:
    """Every value of a 1- or 2-byte dtype, NaN left out."""
    values = np.arange(2 ** (8 * dtype.itemsize), dtype=f"u{dtype.itemsize}").view(dtype)
    return values[~np.isnan(values)] if dtype.kind == "f" else values


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(["int8", "uint8", "int16", "uint16", "float16"]),
       scale=st.sampled_from([None, 0.01, -0.5, 2.0, 1e-3, -0.01, np.float32(0.1)]),
       offset=st.sampled_from([None, 273.15, -10.0, np.float32(0.5)]),
       op=st.sampled_from(list(COMPARE)), at=st.integers(0, 2**16 - 1),
       nudge=st.sampled_from([0.0, 0.0, 1e-9, -1e-9, 0.5]))
def test_the_mask_is_numpys_comparison_of_every_decoded_value(
        dtype: str, scale: Any, offset: Any, op: str, at: int, nudge: float) -> None:
    attrs = {k: v for k, v in (("scale_factor", scale), ("add_offset", offset)) if v is not None}
    cf = decoding(attrs, np.dtype(dtype))
    stored = _every_value(np.dtype(dtype))
    decoded = cf.values(stored)
    threshold = decoded[at % decoded.size].item() + nudge
    try:
        masked = cf.masking(Where.of((op, threshold)))
    except ValueError as exc:  # a float16 0.0's many stored values behind one decoded
        assert op == "!=" and f"more than {MAX_EXCLUDED}" in str(exc)
        return
    hidden = missing_mask(stored, masked.missing)
    hidden = np.zeros(stored.shape, bool) if hidden is None else hidden
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(hidden, ~COMPARE[op](decoded, threshold),
                                      err_msg=f"{masked.missing}")


@pytest.mark.parametrize(("where", "message"), [
    (("~", 1.0), "one of > >= < <= == !="),
    ((">", "warm"), "compares the values with a number"),
    ((">", True), "compares the values with a number"),
    ("x > 1", "where takes"),
])
def test_bad_conditions_are_refused_before_anything_is_read(tmp_path: Path, where: Any,
                                                            message: str) -> None:
    create(tmp_path / "a.zarr", np.zeros(4, "f4"))
    red = activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "a.zarr")))
    with pytest.raises((TypeError, ValueError), match=message):
        red.count(where=where)
    assert red.last_report is None


def test_a_condition_excluding_too_many_stored_values_says_so(tmp_path: Path) -> None:
    # float64 rounds every x * 1e-13 + 1e9 to 1e9: all 65,536 stored values decode alike
    create(tmp_path / "a.zarr", np.zeros(4, "i2"),
           attributes={"scale_factor": 1e-13, "add_offset": 1e9})
    red = activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "a.zarr")))
    with pytest.raises(ValueError, match=f"excludes 65536 stored values, more than {MAX_EXCLUDED}"):
        red.count(where=("!=", 1e9))
    assert red.count(where=("==", 1e9)) == 4  # a run of stored values: two bounds


def _packed(tmp_path: Path) -> tuple[np.ndarray, np.ndarray, activezarr.ActiveReduction]:
    rng = np.random.default_rng(3)
    stored = rng.integers(-400, 400, (30, 4, 5)).astype("i2")
    stored[rng.random(stored.shape) < 0.1] = -32767
    create(tmp_path / "p.zarr", stored, codec="zstd", chunks=(7, 3, 2),
           attributes={"scale_factor": -0.05, "add_offset": 290.0, "_FillValue": -32767})
    red = activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "p.zarr")))
    return stored * -0.05 + 290.0, stored == -32767, red


@pytest.mark.parametrize("op", list(COMPARE))
def test_packed_int16_with_a_negative_scale(tmp_path: Path, op: str) -> None:
    values, missing, red = _packed(tmp_path)
    threshold = values[3, 1, 1].item()
    meets = ~missing & COMPARE[op](values, threshold)
    np.testing.assert_array_equal(red.count(axis=0, where=(op, threshold)), meets.sum(0))
    got = red.sum(axis=(1, 2), where=(op, threshold))
    want = np.ma.masked_array(values, ~meets).sum(axis=(1, 2))
    np.testing.assert_allclose(np.ma.filled(got, np.nan), np.ma.filled(want, np.nan))
    assert red.last_report.fallbacks == 0


def test_conditions_join_and_group(tmp_path: Path) -> None:
    values, missing, red = _packed(tmp_path)
    years = np.arange(30) // 12
    got = red.reduce("count", axis=(), where=[(">", 285.0), ("<=", 295.0)],
                     groups=(0, years))
    meets = ~missing & (values > 285.0) & (values <= 295.0)
    np.testing.assert_array_equal(got, [meets[years == y].sum(0) for y in range(3)])
    lazy = activezarr.dask.reduce(red, "mean", axis=0, where=(">", 285.0), leaf_chunks=2)
    want = np.ma.masked_array(values, missing | ~(values > 285.0)).mean(axis=0)
    np.testing.assert_allclose(np.ma.filled(lazy.compute(), np.nan), np.ma.filled(want, np.nan))


# --- xarray ----------------------------------------------------------------------------------


def _dataset() -> xr.Dataset:
    """tas packed in int16 with a negative scale_factor and a _FillValue; sst float32 with NaN."""
    time = pd.date_range("2001-01-01", periods=3 * 365, freq="D")
    rng = np.random.default_rng(7)
    tas = 293.15 + 8 * rng.standard_normal((time.size, 3, 4))
    tas[rng.random(tas.shape) < 0.05] = np.nan
    sst = (290 + 5 * rng.standard_normal(tas.shape)).astype("f4")
    sst[:40, 0, 0] = np.nan
    ds = xr.Dataset({"tas": (("time", "lat", "lon"), tas), "sst": (("time", "lat", "lon"), sst)},
                    coords={"time": time, "lat": [-30.0, 0.0, 30.0], "lon": [0.0, 90, 180, 270]})
    ds.tas.encoding = {"dtype": "int16", "scale_factor": -0.01, "add_offset": 290.0,
                       "_FillValue": -32767, "chunks": (100, 2, 2)}
    ds.sst.encoding = {"chunks": (100, 3, 2)}
    return ds


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("conditions") / "ds.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _dataset().to_zarr(path, zarr_format=3, consolidated=False)
    return path


def _on_s3(path: Path, moto_s3: S3, server: ActiveServer) -> activezarr.ActiveStore:
    moto_s3.bucket(BUCKET)
    for file in sorted(path.rglob("*")):
        if file.is_file():
            moto_s3.client.put_object(Bucket=BUCKET, Key=f"ds.zarr/{file.relative_to(path)}",
                                      Body=file.read_bytes())
    return activezarr.ActiveStore.from_url(f"s3://{BUCKET}/ds.zarr", read_only=True,
                                           storage_options=moto_s3.storage_options,
                                           active={"server": server.url})


@pytest.fixture(params=["file", "s3"])
def ds(request: pytest.FixtureRequest, written: Path) -> xr.Dataset:
    if request.param == "file":
        store = activezarr.ActiveStore.from_url(str(written), read_only=True)
    else:
        store = _on_s3(written, request.getfixturevalue("moto_s3"),
                       request.getfixturevalue("active_server"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return xr.open_zarr(store, consolidated=False)


@pytest.mark.parametrize("var", ["tas", "sst"])
def test_days_above_a_threshold_per_year_per_cell(ds: xr.Dataset, var: str) -> None:
    """One grouped storage-side reduction; xarray's ``(da > x).resample().sum()`` answer."""
    da = ds[var]
    threshold = float(da.isel(time=5, lat=1, lon=1))  # a decoded value: the boundary itself
    with warnings.catch_warnings(), activezarr.collect_reports() as reports:
        warnings.simplefilter("error", ActiveFallbackWarning)
        got = da.active.where(lambda x: x > threshold).resample(time="1YS").count()
    xr.testing.assert_identical(got, da.where(lambda x: x > threshold)
                                .resample(time="1YS").count())
    np.testing.assert_array_equal(got, (da > threshold).resample(time="1YS").sum())
    assert reports.total.fallbacks == 0 and reports.total.chunks > 0


@pytest.mark.parametrize("cond", [
    lambda x: x >= 293.15, lambda x: x > 293.15, lambda x: (x > 285.0) & (x <= 300.0),
    lambda x: x != 290.0, lambda x: x == 290.0, lambda x: np.float32(291.5) > x,
], ids=[">=", "reflected", "&", "!=", "==", "numpy scalar"])
@pytest.mark.parametrize("op", ["sum", "mean", "max", "count"])
def test_where_then_reduce_equals_xarray(written: Path, cond: Any, op: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = xr.open_zarr(activezarr.ActiveStore.from_url(str(written)), consolidated=False)
    for var in ("tas", "sst"):
        da = ds[var]
        got = getattr(da.active.where(cond).groupby("time.month"), op)()
        want = getattr(da.where(cond).groupby("time.month"), op)()
        xr.testing.assert_allclose(got, want, rtol=1e-6)
        assert got.dtype == want.dtype


def test_histogram_is_xhistograms_naming_of_numpys_counts(written: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sst = xr.open_zarr(activezarr.ActiveStore.from_url(str(written)),
                           consolidated=False).sst
    got = sst.active.histogram(bins=6, dim="time")
    values = sst.values
    edges = np.histogram_bin_edges(values[~np.isnan(values)], 6)
    assert got.name == "histogram_sst" and got.dims == ("lat", "lon", "sst_bin")
    np.testing.assert_allclose(got.sst_bin, (edges[:-1] + edges[1:]) / 2)
    for j, i in np.ndindex(3, 4):
        cell = values[:, j, i]
        np.testing.assert_array_equal(got[j, i], np.histogram(cell[~np.isnan(cell)], edges)[0])
    warm = sst.active.where(lambda x: x > 290.0).histogram(bins=[285.0, 290.0, 295.0, 310.0],
                                                           range=None, dim=None)
    assert warm.dims == ("sst_bin",)
    np.testing.assert_array_equal(warm, np.histogram(values[values > 290.0],
                                                     [285.0, 290.0, 295.0, 310.0])[0])


def test_the_histogram_of_packed_values_bins_what_xarray_decodes(written: Path) -> None:
    """tas: int16 with a negative scale_factor; bins of its decoded values, storage-side."""
    tas = xr.open_zarr(activezarr.ActiveStore.from_url(str(written)), consolidated=False).tas
    values = tas.values
    with activezarr.collect_reports() as reports:
        got = tas.active.histogram(bins=5, dim="time")
        edges = np.histogram_bin_edges(values[~np.isnan(values)], 5)
        on_values = np.unique(values[~np.isnan(values)])[[0, 3, 7, -1]]  # edges on values
        whole = tas.active.histogram(bins=on_values)
    for j, i in np.ndindex(*got.shape[:-1]):
        cell = values[:, j, i]
        np.testing.assert_array_equal(got[j, i], np.histogram(cell[~np.isnan(cell)], edges)[0])
    np.testing.assert_array_equal(whole, np.histogram(values[~np.isnan(values)], on_values)[0])
    assert reports.total.fallbacks == 0


@pytest.mark.parametrize(("cond", "error", "message"), [
    ("computed", TypeError, "function of the values"),
    (lambda x: (x > 1) | (x < 0), ValueError, "joined by &"),
    (lambda x: x.time.dt.month == 6, ValueError, "uses .time"),
    (lambda x: x > x, ValueError, "not _Values"),
    (lambda x: 1.0, ValueError, "not float"),
])
def test_conditions_the_storage_side_cannot_apply_are_one_line_errors(
        written: Path, cond: Any, error: type[Exception], message: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        da = xr.open_zarr(activezarr.ActiveStore.from_url(str(written)),
                          consolidated=False).sst
    with pytest.raises(error, match=message) as caught:
        da.active.where(da > 290.0 if cond == "computed" else cond)
    assert "\n" not in str(caught.value)

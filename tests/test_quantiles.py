"""Exact quantiles in rounds of storage-side reductions (``key_range``, ``key_bins``,
``key_values``): equal to numpy's ``nanquantile(method="linear")`` and xarray's ``quantile`` on
the valid CF-decoded values, on every backend, moving a small part of the stored bytes.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import HealthCheck, given, settings

import activezarr
from activezarr.chunk.ranks import from_keys, sort_keys
from activezarr.client.quantiles import planned_rounds
from activezarr.planning.selection import normalize_selection
from activezarr.xarray import ActiveFallbackWarning
from runners import Runner, on_s3
from s3_servers import start_active_server
from test_differential import EXAMPLES, cf_cases, decoded, on_every_backend

QS = (0, 0.01, 0.5, 0.9, 0.99, 1)


def _numpy(values: np.ndarray, mask: np.ndarray, q: Any, axis: int | None) -> np.ndarray:
    """numpy's nanquantile of the valid values of each output cell (NaN where none)."""
    if axis is None:
        valid = values[~mask]
        return np.quantile(valid, q) if valid.size else np.full(np.shape(q), np.nan)
    moved, hidden = np.moveaxis(values, axis, -1), np.moveaxis(mask, axis, -1)
    out = np.full((*np.shape(q), *moved.shape[:-1]), np.nan)
    for cell in np.ndindex(moved.shape[:-1]):
        valid = moved[cell][~hidden[cell]]
        if valid.size:
            out[(Ellipsis, *cell)] = np.quantile(valid, q)
    return out


def _check(runner: Runner, fixtures: dict[str, Any], path: Path, values: np.ndarray,
           mask: np.ndarray, skipna: bool) -> None:
    red = activezarr.ActiveReduction(runner.opener(path, fixtures), skipna=skipna,
                                     plain_when_cheaper=False)
    for axis in (None, 0, values.ndim - 1):
        for q in (0.9, [0.0, 0.01, 0.5, 0.99, 1.0]):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", activezarr.FallbackWarning)
                got = red.reduce("quantile", axis=axis, q=q)
            expected = _numpy(values, mask, q, axis)
            np.testing.assert_array_equal(np.ma.filled(np.ma.asarray(got, np.float64), np.nan),
                                          expected, err_msg=f"axis {axis}, q {q}")
            runner.check_storage_side(red.last_report, "key_range", "key_bins", "key_values")


@pytest.mark.timeout(max(600, 2 * EXAMPLES))
@settings(max_examples=max(10, EXAMPLES // 3), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cf_cases())
def test_quantiles_equal_numpy_on_every_backend(
        runners: list[tuple[Runner, dict[str, Any]]], case: dict[str, Any]) -> None:
    values, mask = decoded(case)
    on_every_backend(runners, case, lambda runner, fixtures, path: _check(
        runner, fixtures, path, values, mask, case["skipna"]))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "int8", "uint16", "int64",
                                   "uint64"])
def test_sort_keys_order_as_values_and_invert(dtype: str) -> None:
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "f":
        values = np.r_[rng.standard_normal(200) * 1e3, -0.0, 0.0, np.inf, -np.inf,
                       np.finfo(dtype).max, np.finfo(dtype).tiny].astype(dtype)
    else:
        info = np.iinfo(dtype)
        values = np.r_[rng.integers(info.min, info.max, 200, dtype=dtype, endpoint=True),
                       info.min, info.max, 0].astype(dtype)
    keys = sort_keys(values)
    assert np.array_equal(from_keys(keys, values.dtype).view(keys.dtype), values.view(keys.dtype))
    order = np.argsort(keys, kind="stable")
    assert np.all(np.diff(values[order].astype(np.float64)) >= 0)


def _daily(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Daily temperatures (K): a seasonal cycle by latitude, weather noise, NaN holes."""
    rng = np.random.default_rng(seed)
    days, ny, nx = shape
    season = 10 * np.sin(2 * np.pi * np.arange(days) / 365)[:, None, None]
    base = 300 - 40 * np.abs(np.linspace(-1, 1, ny))[None, :, None]
    data = (base + season + 5 * rng.standard_normal(shape)).astype(np.float32)
    data[rng.random(shape) < 0.05] = np.nan
    # Cells with nothing valid; not the first (numpy's nanquantile then answers in the
    # first cell's dtype, float32, not float64: an artefact of its apply_along_axis).
    data[:, -2:, -3:] = np.nan
    return data


def _write(path: Path, data: np.ndarray, chunks: tuple[int, ...], packed: bool) -> None:
    if packed:
        stored = np.where(np.isnan(data), -32768, np.round((data - 280) / 0.01)).astype(np.int16)
        array = zarr.create_array(str(path), shape=data.shape, chunks=chunks, dtype="int16",
                                  fill_value=-32768, attributes={
                                      "_FillValue": -32768, "scale_factor": 0.01,
                                      "add_offset": 280.0})
        array[...] = stored
    else:
        array = zarr.create_array(str(path), shape=data.shape, chunks=chunks, dtype="float32",
                                  fill_value=np.nan)
        array[...] = data


def _decoded_by_xarray(path: Path) -> np.ndarray:
    """The array as xarray decodes it (CF masking and unpacking)."""
    array = zarr.open_array(str(path), mode="r")
    variable = xr.Variable(("time", "lat", "lon"), array[...], attrs=dict(array.attrs))
    return xr.conventions.decode_cf_variable("t", variable).values


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("where", ["file", "s3"])
def test_daily_quantiles_equal_xarray(tmp_path: Path, packed: bool, where: str,
                                      request: pytest.FixtureRequest) -> None:
    data = _daily((90, 12, 10))
    path = tmp_path / "t.zarr"
    _write(path, data, (30, 6, 10), packed)
    if where == "s3":
        s3, server = request.getfixturevalue("moto_s3"), request.getfixturevalue("active_server")
        array = on_s3(path, s3, server.url)
    else:
        array = zarr.open_array(activezarr.ActiveStore.from_url(str(path)), mode="r")
    red = activezarr.ActiveReduction(array, skipna=True, plain_when_cheaper=False)
    da = xr.DataArray(_decoded_by_xarray(path), dims=("time", "lat", "lon"))
    for q in QS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells
            over_time = da.quantile(q, "time").values
            whole = da.quantile(q).values
            per_cell = np.nanquantile(da.values, [q], axis=0)[0]
            per_cell_weak = np.nanquantile(da.values, q, axis=0)
        got = red.reduce("quantile", axis=0, q=[q])[0]
        assert got.dtype == per_cell.dtype
        np.testing.assert_array_equal(np.ma.filled(got, np.nan), per_cell, err_msg=f"q {q}")
        got = red.reduce("quantile", axis=0, q=[float(q)])[0]  # xarray's q is float64
        assert got.dtype == over_time.dtype
        np.testing.assert_array_equal(np.ma.filled(got, np.nan), over_time, err_msg=f"q {q}")
        got = red.quantile(q, axis=0)
        assert got.dtype == per_cell_weak.dtype
        np.testing.assert_array_equal(np.ma.filled(got, np.nan), per_cell_weak)
        assert red.last_report.fallbacks == 0
        assert red.quantile([float(q)])[0] == whole
    assert red.last_report.backend == where


@pytest.mark.parametrize("packed", [False, True])
def test_daily_quantiles_with_holes_equal_numpy_on_every_backend(
        tmp_path: Path, packed: bool, runners: list[tuple[Runner, dict[str, Any]]]) -> None:
    data = _daily((64, 6, 5), seed=5)
    path = tmp_path / "t.zarr"
    _write(path, data, (20, 3, 5), packed)
    values = _decoded_by_xarray(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells
        expected = np.nanquantile(values, [0.0, 0.1, 0.5, 0.9, 1.0], axis=0)
    for runner, fixtures in runners:
        red = activezarr.ActiveReduction(runner.opener(path, fixtures), skipna=True,
                                         plain_when_cheaper=False)
        got = red.quantile([0.0, 0.1, 0.5, 0.9, 1.0], axis=0)
        np.testing.assert_array_equal(np.ma.filled(got, np.nan), expected,
                                      err_msg=runner.name)
        runner.check_storage_side(red.last_report, "key_range", "key_bins", "key_values")


@pytest.mark.slow
def test_quantile_over_time_moves_a_small_part_of_the_data(tmp_path: Path, moto_s3: Any) -> None:
    data = _daily((365, 180, 360))
    path = tmp_path / "t.zarr"
    _write(path, data, (30, 90, 90), packed=False)
    # The server's default --max-body (4 MiB): a request carries its cells' brackets (packed,
    # sent once per batch), and one batch holds a tile's 13 chunks, merged into one answer.
    with start_active_server(tmp_path, "--upstream", moto_s3.endpoint) as server:
        red = activezarr.ActiveReduction(on_s3(path, moto_s3, server.url), skipna=True)
        got = red.quantile(0.9, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        np.testing.assert_array_equal(np.ma.filled(got, np.nan),
                                      np.nanquantile(data, 0.9, axis=0))
    report = red.last_report
    print(report)
    assert report.fallbacks == 0
    # Both ways: the requests (brackets) and the answers (counts, keys); 56 MB of requests
    # and 3.3 MB of answers (80% of the stored bytes) before brackets were packed.
    assert report.bytes_to_storage + report.bytes_from_storage <= 0.05 * report.bytes_stored


def test_bad_quantiles_are_refused(tmp_path: Path) -> None:
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(4,), chunks=(2,), dtype="f4")
    red = activezarr.ActiveReduction(zarr.open_array(
        activezarr.ActiveStore.from_url(str(tmp_path / "a.zarr")), mode="r"))
    del array
    for q in (1.5, -0.1, [[0.5]]):
        with pytest.raises(ValueError, match="q must be"):
            red.quantile(q)
    with pytest.raises(ValueError, match="method"):
        red.quantile(0.5, method="nearest")


def _active_and_plain(path: str, data: np.ndarray, encoding: dict[str, Any],
                      **coords: np.ndarray) -> tuple[xr.DataArray, xr.DataArray]:
    """``data`` as ``t(time, lat, lon)`` written to zarr at ``path``, opened through the active
    store and plainly."""
    xr.Dataset({"t": (("time", "lat", "lon"), data)}, coords=coords).to_zarr(
        path, encoding={"t": encoding}, consolidated=False)
    da = xr.open_dataset(activezarr.ActiveStore.from_url(path), engine="zarr",  # type: ignore
                         consolidated=False)["t"]
    return da, xr.open_dataset(path, engine="zarr", consolidated=False)["t"]


@pytest.mark.parametrize("packed", [False, True])
def test_accessor_quantile_and_median_equal_xarray(tmp_path: Path, packed: bool) -> None:
    path = str(tmp_path / "t.zarr")
    data = _daily((60, 8, 6), seed=3)
    encoding: dict[str, Any] = {"chunks": (20, 4, 6)}
    if packed:
        encoding.update(dtype="int16", scale_factor=0.01, add_offset=280.0, _FillValue=-32768)
    da, plain = _active_and_plain(path, data, encoding, time=np.arange(60),
                                  lat=np.arange(8.0), lon=np.arange(6.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveFallbackWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells
        for q, dim in ((0.9, "time"), ([0.0, 0.5, 0.99], "time"), (0.25, None),
                       ([0.1, 1.0], ("lat", "lon"))):
            xr.testing.assert_identical(da.active.quantile(q, dim), plain.quantile(q, dim))
        xr.testing.assert_identical(da.active.median("time"), plain.median("time"))


def test_monthly_percentiles_per_group_equal_xarray(tmp_path: Path) -> None:
    path = str(tmp_path / "t.zarr")
    data = _daily((120, 4, 3), seed=4)
    time = np.datetime64("2001-01-01") + np.arange(120).astype("timedelta64[D]")
    da, plain = _active_and_plain(path, data, {"chunks": (25, 2, 3)}, time=time)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ActiveFallbackWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells
        for q in (0.9, [0.1, 0.5, 0.99]):
            xr.testing.assert_identical(da.active.groupby("time.month").quantile(q),
                                        plain.groupby("time.month").quantile(q))
            xr.testing.assert_identical(da.active.resample(time="1MS").quantile(q, "time"),
                                        plain.resample(time="1MS").quantile(q, "time"))
        xr.testing.assert_identical(da.active.groupby("time.month").median(),
                                    plain.groupby("time.month").median())


def test_grouped_quantiles_equal_numpy_on_every_backend(
        tmp_path: Path, runners: list[tuple[Runner, dict[str, Any]]]) -> None:
    data = _daily((60, 4, 5), seed=6)
    path = tmp_path / "t.zarr"
    _write(path, data, (16, 2, 5), packed=True)
    values = _decoded_by_xarray(path)
    labels = np.arange(60) // 25
    labels[7] = -1  # in no group
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.stack([np.nanquantile(values[labels == g], [0.25, 0.9], axis=0)
                             for g in range(3)], axis=1)
    for runner, fixtures in runners:
        red = activezarr.ActiveReduction(runner.opener(path, fixtures), skipna=True,
                                         plain_when_cheaper=False)
        got = red.reduce("quantile", axis=0, q=[0.25, 0.9], groups=(0, labels))
        np.testing.assert_array_equal(np.ma.filled(got, np.nan), expected, err_msg=runner.name)
        runner.check_storage_side(red.last_report, "key_range", "key_bins", "key_values")


def test_weighted_quantiles_say_they_are_not_there_yet(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(4,), chunks=(2,), dtype="f4")
    red = activezarr.ActiveReduction(zarr.open_array(
        activezarr.ActiveStore.from_url(str(tmp_path / "a.zarr")), mode="r"))
    with pytest.raises(ValueError, match="weighted quantiles are not available yet"):
        red.reduce("quantile", q=0.5, weights=np.ones(4))


def test_the_cost_model_counts_brackets_packed_once_per_batch(
        tmp_path: Path, moto_s3: Any, active_server: Any) -> None:
    data = _daily((120, 12, 10))
    path = tmp_path / "t.zarr"
    _write(path, data, (10, 12, 10), packed=False)  # 12 chunks stacked along time
    red = activezarr.ActiveReduction(on_s3(path, moto_s3, active_server.url), skipna=True)
    plan = red.plan("quantile", axis=0, q=0.9)
    assert plan is not None
    dims = normalize_selection(..., data.shape)
    rounds = len(planned_rounds(red.prepare("quantile", dims, 0, {"q": 0.9}))) - 1  # bracketed
    # At most 11 characters a bracket (a base64 float64), sent once per batch of the 12 chunks
    # (JSON: 20 a bracket in each of the 12 requests).
    assert 0 < plan.request_bytes <= 11 * 120 * rounds

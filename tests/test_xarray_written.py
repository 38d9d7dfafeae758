"""Zarr v2 and v3 written by xarray reduce, through ActiveReduction, to what xarray returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import activezarr

xr = pytest.importorskip("xarray")

PACKED = {"dtype": "int16", "scale_factor": 0.01, "add_offset": 273.15, "_FillValue": -32767}


def _dataset() -> xr.Dataset:
    rng = np.random.default_rng(7)
    tas = (285 + 8 * rng.standard_normal((12, 9, 10))).round(2)
    tas[rng.random(tas.shape) < 0.15] = np.nan  # missing, but never a whole column
    tas[:, 0, 0] = 280.0
    return xr.Dataset({
        "tas": (("time", "lat", "lon"), tas),                    # packed on write
        "pr": (("time", "lat", "lon"), tas.astype("f4") / 100),  # float32, NaN fill
    })


@pytest.fixture(params=[2, 3], ids=["v2", "v3"])
def written(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, xr.Dataset]:
    path = tmp_path / "ds.zarr"
    _dataset().to_zarr(path, zarr_format=request.param, consolidated=False,
                       encoding={"tas": PACKED})
    return path, xr.open_zarr(path, consolidated=False)


@pytest.mark.parametrize("variable", ["tas", "pr"])
@pytest.mark.parametrize("op", ["mean", "sum", "min", "max", "std", "var", "count"])
@pytest.mark.parametrize("dims, axis", [(None, None), ("time", 0), (("lat", "lon"), (1, 2))])
def test_reductions_equal_xarray(written: tuple[Path, xr.Dataset], variable: str, op: str,
                                 dims: object, axis: object) -> None:
    path, ds = written
    array = zarr.open_array(activezarr.ActiveStore.from_url(str(path)), path=variable, mode="r")
    got = activezarr.ActiveReduction(array).reduce(op, axis=axis)
    want = getattr(ds[variable], op)(dims).values
    assert np.asarray(got).dtype == want.dtype
    # xarray reduces float32 in float32: its rounding, not ours, sets the tolerance there.
    tolerance = dict(rtol=1e-5, atol=1e-5) if variable == "pr" else dict(rtol=1e-12)
    np.testing.assert_allclose(got, want, **tolerance)


def test_a_selection_reduces_like_xarray_isel(written: tuple[Path, xr.Dataset]) -> None:
    path, ds = written
    array = zarr.open_array(activezarr.ActiveStore.from_url(str(path)), path="tas", mode="r")
    got = activezarr.ActiveReduction(array)[2:9, ::-2, 3].mean(axis=0)
    want = ds.tas.isel(time=slice(2, 9), lat=slice(None, None, -2), lon=3).mean("time")
    np.testing.assert_allclose(got, want.values, rtol=1e-12)

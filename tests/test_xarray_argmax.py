"""``da.active.argmax(dim)`` / ``argmin`` / ``idxmax`` / ``idxmin`` equal xarray's, on datasets
written by ``to_zarr`` (a float variable with NaN, a packed int16 one), storage-side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import xarray as xr

import test_xarray_accessor as accessor
from test_xarray_accessor import _assert_equal, _open

# The accessor tests' fixtures: the dataset written (zarr v2 and v3), and fallbacks as errors.
written, no_fallback = accessor.written, accessor.no_fallback

CALLS: dict[str, Callable[[Any], xr.DataArray]] = {
    "argmax(time)": lambda a: a.argmax("time"),
    "argmin(lat)": lambda a: a.argmin("lat"),
    "idxmax(time)": lambda a: a.idxmax("time"),
    "idxmin(lat)": lambda a: a.idxmin("lat"),
    "idxmax(lon)": lambda a: a.idxmax("lon"),  # tas: one (time, lat) all NaN -> NaN there
    "idxmin(lon) of a selection": lambda a: a.isel(time=slice(30, 3, -4)).idxmin("lon"),
    "argmax(time) reversed": lambda a: a.isel(time=slice(None, None, -1)).argmax("time"),
    "idxmax() of 1-D": lambda a: a.isel(lat=2, lon=5).idxmax(),
}


@pytest.mark.parametrize("how", ["open_zarr", "open_dataset"])
@pytest.mark.parametrize("variable", ["tas", "pr"])
@pytest.mark.parametrize("call", list(CALLS))
def test_positions_and_labels_equal_xarray(
        written: str, how: str, variable: str, call: str, no_fallback: None) -> None:
    da = _open(how, written)[variable]
    got = CALLS[call](_Selected(da))  # first: xarray's own call loads the values
    _assert_equal(got, CALLS[call](da))


class _Selected:
    """``da.isel(...)`` then the accessor's method: a call made on xarray's selection."""

    def __init__(self, da: xr.DataArray) -> None:
        self.da = da

    def isel(self, **indexers: Any) -> _Selected:
        return _Selected(self.da.isel(**indexers))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.da.active, name)


def test_all_missing_positions_are_nan(written: str) -> None:
    tas = _open("open_zarr", written)["tas"]
    got = tas.active.argmax("lon")
    assert got.dtype == np.float64
    assert np.isnan(got.values[2, 3]) and np.isfinite(got.values).sum() == got.size - 1


def test_several_dims_are_refused(written: str) -> None:
    tas = _open("open_zarr", written)["tas"]
    with pytest.raises(TypeError, match="one dim"):
        tas.active.argmax(("lat", "lon"))

"""Each xarray (and dask) internal the accessor reads, pinned on real objects opened from zarr
that xarray wrote: a release that renames or reshapes one fails here, in CI on the oldest and the
newest xarray supported (.ci/run), instead of quietly sending every reduction to the client.
One test per row of the table in activezarr/_xarray_internals.py."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from activezarr import _xarray_internals as internals
from activezarr.xarray import source_of


def _dataset() -> xr.Dataset:
    rng = np.random.default_rng(5)
    shape = (12, 4, 6)
    dims = ("time", "lat", "lon")
    days = rng.integers(0, 31, shape).astype("i2")
    days[0, 0, 0] = -1
    ds = xr.Dataset({
        "tas": (dims, rng.normal(280, 5, shape).astype("f4")),
        "days": (dims, days),  # masked int16
        "pr": (dims, rng.gamma(1.0, 1.5, shape).round(2)),  # packed int16
        "flag": (dims, rng.integers(0, 255, shape).astype("u1")),  # stored as int8, _Unsigned
    }, coords={"time": np.arange(12), "lat": np.linspace(-60, 60, 4),
               "lon": np.arange(0, 360, 60.0)})
    chunks = {"chunks": (6, 2, 3)}
    ds.tas.encoding = dict(chunks)
    ds.days.encoding = {**chunks, "_FillValue": -1}
    ds.pr.encoding = {**chunks, "dtype": "i2", "scale_factor": 0.01, "add_offset": 2.0,
                      "_FillValue": -32767}
    ds.flag.encoding = {**chunks, "dtype": "i1", "_Unsigned": "true", "_FillValue": -1}
    return ds


@pytest.fixture(scope="module", params=[2, 3], ids=["v2", "v3"])
def written(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("internals") / "ds.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr v3's note on consolidated metadata
        _dataset().to_zarr(path, zarr_format=request.param, consolidated=False)
    return path


def _lazy(path: Path, **kwargs: Any) -> xr.Dataset:
    return xr.open_zarr(path, consolidated=False, chunks=None, **kwargs)


def _chain(layer: Any) -> list[Any]:
    """xarray's lazy wrappers from ``layer`` inwards."""
    layers = [layer]
    while (below := internals.inner(layers[-1])) is not None:
        layers.append(below)
    return layers


def _layers(da: xr.DataArray) -> list[Any]:
    return _chain(internals.lazy_values(da))


def _names(da: xr.DataArray) -> list[str]:
    return [type(layer).__name__ for layer in _layers(da)]


def test_variable_data_holds_the_values_unloaded(written: Path) -> None:
    da = _lazy(written).tas
    assert not isinstance(internals.lazy_values(da), np.ndarray)
    assert isinstance(internals.lazy_values(da.load()), np.ndarray)
    assert hasattr(internals.lazy_values(xr.open_zarr(written, consolidated=False).tas),
                   "__dask_graph__")


def test_lazy_wrappers_hold_the_next_layer_in_array_down_to_the_zarr_wrapper(
        written: Path) -> None:
    names = _names(_lazy(written).tas)
    assert names[-1] == "ZarrArrayWrapper", names
    assert set(names) <= internals.PASSING, names


def test_zarr_array_wrapper_holds_the_zarr_array_xarray_opened(written: Path) -> None:
    bottom = _layers(_lazy(written).tas)[-1]
    opened = internals.opened_array(bottom)
    assert isinstance(opened, zarr.Array)
    assert opened.path.rpartition("/")[2] == "tas" and opened.shape == (12, 4, 6)


def test_lazy_indexing_keeps_its_key_as_slices_and_ints(written: Path) -> None:
    ds = _lazy(written)
    da = ds.tas.isel(time=slice(2, 11, 3), lat=1).isel(lon=slice(None, None, -2))
    keys = [key for layer in _layers(da) if (key := internals.indexing_key(layer)) is not None]
    assert keys and all(isinstance(k, (slice, int, np.integer)) for key in keys for k in key)
    source = source_of(da)  # the keys composed
    np.testing.assert_array_equal(source.array[:][source.selection], da.values)


def test_every_passing_wrapper_name_is_a_wrapper_xarray_uses(written: Path) -> None:
    ds = _lazy(written)
    seen = {name for da in (ds.tas, ds.tas.isel(time=0)) for name in _names(da)}
    graph = internals.lazy_values(ds.tas.chunk()).__dask_graph__()  # dask's view of the wrappers
    seen |= {type(layer).__name__ for lazy in internals.opened_in_graph(graph)
             for layer in _chain(lazy)}
    big = xr.Dataset({"tas": ("x", np.arange(4, dtype=">f4"))})  # zarr v2 keeps big-endian
    big.to_zarr(written.parent / "big.zarr", zarr_format=2, consolidated=False, mode="w")
    seen |= set(_names(_lazy(written.parent / "big.zarr").tas))
    assert internals.PASSING - seen == set(), sorted(seen)


def _decoders(da: xr.DataArray) -> dict[str | None, Any]:
    return dict(internals.decoding(layer) for layer in _layers(da)
                if type(layer).__name__ not in internals.PASSING)


def test_the_fill_value_mask_is_apply_mask_with_the_encoded_fill_values(written: Path) -> None:
    decoders = _decoders(_lazy(written).days)
    assert set(decoders) == {"_apply_mask"}, decoders
    assert list(decoders["_apply_mask"]["encoded_fill_values"]) == [-1]
    assert source_of(_lazy(written).days).cf == {"_FillValue": [-1]}


def test_unpacking_is_scale_offset_decoding_with_scale_factor_and_add_offset(
        written: Path) -> None:
    decoders = _decoders(_lazy(written).pr)
    assert set(decoders) == {"_apply_mask", "_scale_offset_decoding"}, decoders
    unpacking = decoders["_scale_offset_decoding"]
    assert (unpacking["scale_factor"], unpacking["add_offset"]) == (0.01, 2.0)


def test_unsigned_is_asarray_with_the_unsigned_dtype(written: Path) -> None:
    decoders = _decoders(_lazy(written).flag)
    assert np.dtype(decoders["asarray"]["dtype"]) == np.uint8, decoders
    assert source_of(_lazy(written).flag).cf == {"_Unsigned": "true", "_FillValue": [255]}


def test_dask_layers_are_named_by_what_they_do(written: Path) -> None:
    ds = xr.open_zarr(written, consolidated=False, chunks={"time": 6})
    da = ds.tas.isel(time=slice(1, 9)).chunk({"time": 4})
    graph = internals.lazy_values(da).__dask_graph__()
    prefixes = {p for name in graph.layers for p in internals.SELECTING if name.startswith(p)}
    assert prefixes == set(internals.SELECTING), list(graph.layers)
    (opened,) = internals.opened_in_graph(graph)
    assert type(_chain(opened)[-1]).__name__ == "ZarrArrayWrapper"
    computed = internals.lazy_values(ds.tas * 2).__dask_graph__()
    assert not all(name.startswith(internals.SELECTING) for name in computed.layers)



def test_ci_runs_these_tests_on_the_oldest_xarray_supported() -> None:
    root = Path(__file__).resolve().parents[1]
    ci = (root / ".ci" / "run").read_text()
    assert '"xarray==$xarray_floor"' in ci and "tests/test_xarray_*.py" in ci
    assert '"xarray>=' in (root / "pyproject.toml").read_text()  # the floor CI reads

"""netCDF4 files through kerchunk references reduce to netCDF4's own decoded, masked values.

The oracle is the netCDF4 library: it masks (``_FillValue``, ``missing_value``, ``valid_*``),
honours ``_Unsigned`` and unpacks ``scale_factor``/``add_offset`` itself; activezarr must give
numpy.ma's answer on exactly those values, on local files and on files in S3.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zarr.storage import FsspecStore

import activezarr
from arrays import assert_reduces_like_numpy
from runners import fresh_name, s3_copy
from strategies import queries, run_query, values

netCDF4 = pytest.importorskip("netCDF4")
kerchunk_hdf = pytest.importorskip("kerchunk.hdf")

NC_DTYPES = ("i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8")
EXAMPLES = max(10, settings().max_examples // 5)


@st.composite
def nc_cases(draw: st.DrawFn) -> dict[str, Any]:
    native = np.dtype(draw(st.sampled_from(NC_DTYPES)))
    dtype = native.newbyteorder(draw(st.sampled_from("<>")))
    shape = tuple(draw(st.integers(1, 7)) for _ in range(draw(st.integers(1, 3))))
    size = int(np.prod(shape))
    elements = values(dtype, near_limits=True)
    data = np.array(draw(st.lists(elements, min_size=size, max_size=size)), dtype).reshape(shape)
    special = np.array(draw(elements), native)[()]
    data.reshape(-1)[: draw(st.integers(0, size))] = special
    attrs: dict[str, Any] = {}
    if draw(st.booleans()):
        attrs["missing_value"] = native.type(data.reshape(-1)[-1])
    bound = draw(st.sampled_from(["none", "valid_min", "valid_max", "valid_range"]))
    first = native.type(data.reshape(-1)[0])
    if bound == "valid_range":
        attrs["valid_range"] = np.sort(np.array([first, special], native))
    elif bound != "none":
        attrs[bound] = first
    if dtype.kind == "i" and draw(st.booleans()):
        attrs["_Unsigned"] = "true"
    if draw(st.booleans()):
        attrs["scale_factor"] = np.float64(draw(st.sampled_from([0.01, -0.5, 2.0])))
    if draw(st.booleans()):
        attrs["add_offset"] = np.float64(draw(st.sampled_from([273.15, -10.0])))
    # Always a _FillValue: without one netCDF4 masks netCDF's default fill values, which
    # kerchunk's references do not carry and xarray does not mask.
    fill = special if draw(st.booleans()) else np.array(draw(elements), native)[()]
    return dict(data=data, fill=fill, attrs=attrs,
                chunks=tuple(draw(st.integers(1, n)) for n in shape),
                zlib=draw(st.booleans()), shuffle=draw(st.booleans()),
                queries=draw(st.lists(queries(shape), min_size=1, max_size=3)))


def _write(path: Path, case: dict[str, Any]) -> np.ma.MaskedArray:
    """The case as a netCDF4 file; returns what netCDF4 decodes it to."""
    data = case["data"]
    with netCDF4.Dataset(path, "w") as ds:
        dims = [ds.createDimension(f"d{i}", n).name for i, n in enumerate(data.shape)]
        var = ds.createVariable("v", data.dtype, dims, zlib=case["zlib"], shuffle=case["shuffle"],
                                chunksizes=case["chunks"],
                                endian="big" if data.dtype.byteorder == ">" else "little",
                                fill_value=case["fill"])
        var.set_auto_maskandscale(False)
        for name, value in case["attrs"].items():
            var.setncattr(name, value)
        var[...] = data
    with netCDF4.Dataset(path) as ds:
        return ds["v"][...]


def _reduce_and_compare(array: zarr.Array, oracle: np.ma.MaskedArray,
                        case: dict[str, Any]) -> None:
    red = activezarr.ActiveReduction(array)
    values_, mask = np.ma.getdata(oracle), np.ma.getmaskarray(oracle)
    for query in case["queries"]:
        actual, axis = run_query(red, query)
        assert_reduces_like_numpy(actual, values_, mask, query["selection"], query["op"], axis,
                                  query["ddof"])
        assert red.last_report.backend == "reference"


def _open(refs: dict[str, Any], protocol: str, options: dict[str, Any]) -> zarr.Array:
    storage_options = {"fo": refs, "remote_protocol": protocol, "remote_options": options}
    if protocol == "file":
        store = activezarr.ActiveStore.from_url("reference://", storage_options=storage_options)
    else:
        # ActiveStore.from_url cannot open references to async targets yet (it makes a sync
        # reference filesystem first): wrap zarr's own store of them.
        options["asynchronous"] = True
        inner = FsspecStore.from_url("reference://", storage_options=storage_options)
        store = activezarr.ActiveStore(inner, protocol="reference", root=inner.path,
                                       fs=inner.fs, storage_options=storage_options)
    return zarr.open_array(store, path="v", mode="r", zarr_format=2)


SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(case=nc_cases())
def test_local_netcdf_reduces_like_netcdf4(case: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.nc"
        oracle = _write(path, case)
        refs = kerchunk_hdf.SingleHdf5ToZarr(str(path), inline_threshold=0).translate()
        _reduce_and_compare(_open(refs, "file", {}), oracle, case)


@SETTINGS
@given(case=nc_cases())
def test_netcdf_in_s3_reduces_like_netcdf4(moto_s3: Any, case: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.nc"
        oracle = _write(path, case)
        url = s3_copy(moto_s3, path.read_bytes(), f"{fresh_name()}/v.nc")
        with fsspec.open(url, "rb", **moto_s3.storage_options) as f:
            refs = kerchunk_hdf.SingleHdf5ToZarr(f, url, inline_threshold=0).translate()
        _reduce_and_compare(_open(refs, "s3", dict(moto_s3.storage_options)), oracle, case)

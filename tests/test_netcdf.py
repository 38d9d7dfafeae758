"""Real climate files (netCDF4/HDF5) reached through kerchunk references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

import activezarr
from netcdf_objects import NETCDF_FILES

kerchunk_hdf = pytest.importorskip("kerchunk.hdf")
netCDF4 = pytest.importorskip("netCDF4")

FILES = NETCDF_FILES


def _open(path: Path, variable: str) -> zarr.Array:
    refs = kerchunk_hdf.SingleHdf5ToZarr(str(path), inline_threshold=0).translate()
    store = activezarr.ActiveStore.from_url(
        "reference://", storage_options={"fo": refs, "remote_protocol": "file"})
    return zarr.open_array(store, path=variable, mode="r", zarr_format=2)


@pytest.mark.parametrize(("name", "variable"), FILES)
@pytest.mark.parametrize("op", ["sum", "min", "max", "count", "mean", "var", "std"])
def test_netcdf_reductions_equal_numpy_ma(netcdf_dir: Path, name: str, variable: str,
                                          op: str) -> None:
    with netCDF4.Dataset(netcdf_dir / name) as ds:
        expected = ds[variable][:]  # CF-masked by netCDF4
    expected = np.ma.masked_array(expected.astype(np.float64), np.ma.getmaskarray(expected))
    red = activezarr.ActiveReduction(_open(netcdf_dir / name, variable))
    assert red.last_report is None
    for selection, axis in [((...,), None), ((slice(None, None, -2), 1), 0), ((1,), -1)]:
        actual = red[selection].reduce(op, axis=axis)
        want = getattr(expected[selection], op)(axis=axis)
        np.testing.assert_allclose(np.ma.filled(np.ma.asarray(actual).astype(float), np.nan),
                                   np.ma.filled(np.ma.asarray(want), np.nan),
                                   rtol=1e-5 if op != "count" else 0)
        assert red.last_report.backend == "reference" and red.last_report.fallbacks == 0


def _reference_array(refs: dict, variable: str, protocol: str = "file") -> zarr.Array:
    store = activezarr.ActiveStore.from_url(
        "reference://", storage_options={"fo": refs, "remote_protocol": protocol})
    return zarr.open_array(store, path=variable, mode="r", zarr_format=2)


def test_inlined_references_reduce_too(netcdf_dir: Path) -> None:
    refs = kerchunk_hdf.SingleHdf5ToZarr(str(netcdf_dir / "cesm2_native.nc"),
                                         inline_threshold=10**6).translate()
    red = activezarr.ActiveReduction(_reference_array(refs, "TREFHT"))
    with netCDF4.Dataset(netcdf_dir / "cesm2_native.nc") as ds:
        expected = ds["TREFHT"][:]
    np.testing.assert_allclose(red.mean(axis=0), expected.mean(axis=0), rtol=1e-6)
    assert red.last_report.backend == "reference"


def test_references_to_other_filesystems_fall_back_to_the_client(netcdf_dir: Path) -> None:
    import fsspec

    memory = fsspec.filesystem("memory")
    memory.pipe_file("/netcdf/test1.nc", (netcdf_dir / "test1.nc").read_bytes())
    refs = kerchunk_hdf.SingleHdf5ToZarr(str(netcdf_dir / "test1.nc"),
                                         inline_threshold=0).translate()
    local = str(netcdf_dir / "test1.nc")
    refs["refs"] = {k: ["memory://netcdf/test1.nc", *v[1:]] if isinstance(v, list) and v[0] == local
                    else v for k, v in refs["refs"].items()}
    red = activezarr.ActiveReduction(_reference_array(refs, "tas", "memory"))
    with netCDF4.Dataset(netcdf_dir / "test1.nc") as ds:
        expected = ds["tas"][:]
    np.testing.assert_allclose(red.max(), expected.max())
    report = red.last_report
    assert report.fallbacks == report.chunks == 16 and report.paths == {"client": 16}

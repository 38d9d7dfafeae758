"""Real netCDF files in a real HTTP S3 (moto), referenced with kerchunk, reduced on the active
server: every op, whole and per axis, equals netCDF4 + numpy.ma, and no chunk is read here."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import zarr

import activezarr
from netcdf_objects import NETCDF_BUCKET, NETCDF_FILES
from s3_servers import S3, ActiveServer

kerchunk_hdf = pytest.importorskip("kerchunk.hdf")
netCDF4 = pytest.importorskip("netCDF4")

OPS = ("sum", "min", "max", "count", "mean", "var", "std")


def expected_values(netcdf_dir: Path, name: str, variable: str) -> np.ma.MaskedArray:
    with netCDF4.Dataset(netcdf_dir / name) as ds:
        values = ds[variable][:]  # CF-decoded and masked by netCDF4
    return np.ma.masked_array(values.astype(np.float64), np.ma.getmaskarray(values))


def reference_array(refs: dict[str, Any], variable: str, server: str | None,
                    remote_protocol: str = "s3",
                    remote_options: dict[str, Any] | None = None) -> zarr.Array:
    options = {"fo": refs, "remote_protocol": remote_protocol,
               "remote_options": remote_options or {}}
    store = activezarr.ActiveStore.from_url("reference://", storage_options=options,
                                            active={"server": server} if server else None)
    return zarr.open_array(store, path=variable, mode="r", zarr_format=2)


def assert_same(actual: Any, want: Any, op: str) -> None:
    np.testing.assert_allclose(np.ma.filled(np.ma.asarray(actual).astype(float), np.nan),
                               np.ma.filled(np.ma.asarray(want).astype(float), np.nan),
                               rtol=0 if op == "count" else 1e-5)


def assert_all_on_the_server(report: activezarr.Report) -> None:
    assert report.backend == "reference" and report.fallbacks == 0, report
    assert report.paths == {"reference": report.chunks}, report


@pytest.mark.parametrize(("name", "variable"), NETCDF_FILES)
def test_every_op_whole_and_per_axis_equals_netcdf4(netcdf_dir: Path, moto_s3: S3,
                                                    active_server: ActiveServer,
                                                    netcdf_refs: dict[str, Any], name: str,
                                                    variable: str) -> None:
    expected = expected_values(netcdf_dir, name, variable)
    array = reference_array(netcdf_refs[name], variable, active_server.url,
                            remote_options=moto_s3.storage_options)
    # some of these small files' chunks would read plainly for less: every op is to be served
    red = activezarr.ActiveReduction(array, fallback=False, plain_when_cheaper=False)
    for op in OPS:
        for axis in (None, *range(expected.ndim)):
            assert_same(red.reduce(op, axis=axis), getattr(expected, op)(axis=axis), op)
            assert_all_on_the_server(red.last_report)


@pytest.mark.parametrize("remote_options", [{}, {"asynchronous": True}, {"asynchronous": False}])
def test_s3_references_open_with_sync_or_async_remote_options(
        netcdf_dir: Path, moto_s3: S3, active_server: ActiveServer,
        netcdf_refs: dict[str, Any], remote_options: dict[str, Any]) -> None:
    array = reference_array(netcdf_refs["test1.nc"], "tas", active_server.url,
                            remote_options={**moto_s3.storage_options, **remote_options})
    red = activezarr.ActiveReduction(array, fallback=False)
    assert_same(red.mean(axis=0), expected_values(netcdf_dir, "test1.nc", "tas").mean(axis=0),
                "mean")
    assert_all_on_the_server(red.last_report)


def test_chunks_of_one_file_go_in_one_batch_and_combine(moto_s3: S3, active_server: ActiveServer,
                                            netcdf_refs: dict[str, Any]) -> None:
    array = reference_array(netcdf_refs["test1.nc"], "tas", active_server.url,
                            remote_options=moto_s3.storage_options)
    red = activezarr.ActiveReduction(array, fallback=False)
    red.sum()  # the capability document is fetched once per process
    reads = upstream_reads(active_server)
    red.max()
    report = red.last_report
    assert report.chunks == 16 and report.requests == 1  # one /v2/batch for the 16 chunks
    assert report.bytes_from_storage < 1000  # combined: one partial, 15 "combined" markers
    assert upstream_reads(active_server) - reads == 1  # adjacent ranges read in one GET


def upstream_reads(server: ActiveServer) -> float:
    """The server's count of reads from the object store (its Prometheus metrics)."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("activezarr_upstream_reads_total"))


def test_http_references_reduce_on_the_server_http_interface(
        netcdf_dir: Path, moto_s3: S3, active_server: ActiveServer,
        netcdf_refs: dict[str, Any]) -> None:
    http = json.loads(json.dumps(netcdf_refs["test1.nc"]).replace(
        f"s3://{NETCDF_BUCKET}/", f"{moto_s3.endpoint}/{NETCDF_BUCKET}/"))
    red = activezarr.ActiveReduction(reference_array(http, "tas", active_server.url, "http"),
                                     fallback=False)
    expected = expected_values(netcdf_dir, "test1.nc", "tas")
    for op in ("min", "std"):
        assert_same(red.reduce(op, axis=1), getattr(expected, op)(axis=1), op)
        assert_all_on_the_server(red.last_report)


def test_reference_urls_without_protocol_follow_remote_protocol(
        netcdf_dir: Path, moto_s3: S3, active_server: ActiveServer,
        netcdf_refs: dict[str, Any]) -> None:
    bare = json.loads(json.dumps(netcdf_refs["test1.nc"]).replace(f"s3://{NETCDF_BUCKET}/",
                                                                  f"{NETCDF_BUCKET}/"))
    array = reference_array(bare, "tas", active_server.url,
                            remote_options=moto_s3.storage_options)
    red = activezarr.ActiveReduction(array, fallback=False)
    assert_same(red.max(), expected_values(netcdf_dir, "test1.nc", "tas").max(), "max")
    assert_all_on_the_server(red.last_report)


@pytest.fixture
def refs_on_disk(netcdf_refs: dict[str, Any], moto_s3: S3, tmp_path: Path) -> dict[str, Any]:
    """Reference filesystem options with test1.nc's references in a JSON file (``fo``)."""
    refs_file = tmp_path / "refs.json"
    refs_file.write_text(json.dumps(netcdf_refs["test1.nc"]))
    return {"fo": str(refs_file), "remote_protocol": "s3",
            "remote_options": moto_s3.storage_options}


def test_active_url_chaining_and_open_array_keep_the_server(
        netcdf_dir: Path, active_server: ActiveServer, refs_on_disk: dict[str, Any]) -> None:
    reference = refs_on_disk
    want = expected_values(netcdf_dir, "test1.nc", "tas").mean()
    chained = zarr.open_array("active::reference://tas", mode="r", storage_options={
        "active": {"server": active_server.url}, "reference": reference})
    shortcut = activezarr.open_array("reference://tas", storage_options=reference,
                                     active={"server": active_server.url})
    for array in (chained, shortcut):
        red = activezarr.ActiveReduction(array, fallback=False)
        assert_same(red.mean(), want, "mean")
        assert_all_on_the_server(red.last_report)


def test_the_cli_reduces_s3_references_on_the_server(
        netcdf_dir: Path, active_server: ActiveServer, refs_on_disk: dict[str, Any]) -> None:
    options = {**refs_on_disk,
               "remote_options": {**refs_on_disk["remote_options"], "asynchronous": True}}
    done = subprocess.run(
        [sys.executable, "-m", "activezarr", "reduce", "reference://tas", "--op", "mean",
         "--axis", "0", "--storage-options", json.dumps(options),
         "--active", json.dumps({"server": active_server.url}), "--no-fallback", "--json"],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["report"]["paths"] == {"reference": 16} and out["report"]["fallbacks"] == 0
    assert_same(np.ma.masked_invalid(np.array(out["result"], dtype=float)),
                expected_values(netcdf_dir, "test1.nc", "tas").mean(axis=0), "mean")
    assert "Warning" not in done.stderr


def test_a_moved_local_target_is_an_error_not_a_masked_result(netcdf_dir: Path,
                                                              tmp_path: Path) -> None:
    moved = tmp_path / "test1.nc"
    moved.write_bytes((netcdf_dir / "test1.nc").read_bytes())
    refs = kerchunk_hdf.SingleHdf5ToZarr(str(moved), inline_threshold=0).translate()
    moved.unlink()
    red = activezarr.ActiveReduction(reference_array(refs, "tas", None, "file"))
    with pytest.raises(activezarr.ChunkReadError, match="does not exist"):
        red.mean()  # as plain zarr raises: never "--" as if the chunks were never written
    with pytest.raises(activezarr.StorageUnavailableError,
                       match=r"chunk 'tas/0\.0\.0'.*not exist"):
        activezarr.ActiveReduction(reference_array(refs, "tas", None, "file"),
                                   fallback=False).mean()


def test_a_missing_s3_target_is_an_error_naming_the_chunk_and_the_server_reason(
        moto_s3: S3, active_server: ActiveServer, netcdf_refs: dict[str, Any]) -> None:
    gone = json.loads(json.dumps(netcdf_refs["test1.nc"]).replace("test1.nc", "gone.nc"))
    array = reference_array(gone, "tas", active_server.url,
                            remote_options=moto_s3.storage_options)
    with pytest.raises(activezarr.StorageUnavailableError,
                       match=r"chunk 'tas/0\.0\.0'.*not found.*gone\.nc"):
        activezarr.ActiveReduction(array, fallback=False).mean()
    with pytest.raises(activezarr.ChunkReadError, match="gone.nc"):
        activezarr.ActiveReduction(array).mean()  # the client cannot read it either



def test_bare_reference_urls_are_never_taken_as_local_paths(netcdf_dir: Path) -> None:
    fsspec.filesystem("memory").pipe_file("/bare/test1.nc",
                                          (netcdf_dir / "test1.nc").read_bytes())
    refs = kerchunk_hdf.SingleHdf5ToZarr(str(netcdf_dir / "test1.nc"),
                                         inline_threshold=0).translate()
    local = str(netcdf_dir / "test1.nc")
    refs["refs"] = {k: ["/bare/test1.nc", *v[1:]] if isinstance(v, list) and v[0] == local
                    else v for k, v in refs["refs"].items()}
    red = activezarr.ActiveReduction(reference_array(refs, "tas", None, "memory"))
    with pytest.warns(activezarr.FallbackWarning, match="is on 'memory', which has no active"):
        assert_same(red.min(), expected_values(netcdf_dir, "test1.nc", "tas").min(), "min")
    assert red.last_report.paths == {"client": 16}

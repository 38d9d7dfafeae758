"""icechunk repositories: reduced beside their chunks' bytes where icechunk says where they are.

icechunk 2.1 and later locate every chunk (``array_chunk_iterator``): an ActiveStore on a
session's snapshot reduces native chunks beside the repository's objects and virtual chunks
beside their source files, locally and on S3 through the active server. Older icechunk says
nothing of the kind: such stores are reduced on the client, with a warning saying what works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import xarray as xr
import zarr

import activezarr
import activezarr.xarray  # noqa: F401  (the accessor)
from activezarr.client.icechunk_references import locates_chunks
from activezarr.client.store import ICECHUNK_ADVICE
from activezarr.errors import ClientReductionWarning, UnsupportedArrayError
from s3_servers import S3, ActiveServer

VALUES = np.arange(8 * 6, dtype="<f4").reshape(8, 6)
LOCATES = locates_chunks(icechunk.IcechunkStore)
needs_locations = pytest.mark.skipif(not LOCATES, reason=f"icechunk {icechunk.__version__} does "
                                     "not locate chunks (2.1 and later do; they need Python 3.12)")


CHUNKS = [(i, j) for i in (0, 1) for j in (0, 1)]


def _create(session: Any, **options: Any) -> zarr.Array:
    return zarr.create_array(session.store, name="tas", shape=VALUES.shape, chunks=(4, 3),
                             dtype=VALUES.dtype, dimension_names=("time", "lon"), **options)


def _native(storage: Any) -> Any:
    """A repository whose array ``tas`` is written as icechunk's own (native) chunks, zstd."""
    config = icechunk.RepositoryConfig.default()
    config.inline_chunk_threshold_bytes = 0  # every chunk an object of the repository
    repo = icechunk.Repository.create(storage, config)
    session = repo.writable_session("main")
    _create(session)[:] = VALUES
    session.commit("native chunks")
    return repo.readonly_session("main").store


def _virtual(storage: Any, prefix: str, store: Any, credentials: Any, write: Any) -> Any:
    """A repository whose array ``tas`` points into a raw file's byte ranges (virtual chunks):
    ``write(name, data)`` puts the file under ``prefix``, where ``store`` reaches it."""
    chunks = [VALUES[i * 4:i * 4 + 4, j * 3:j * 3 + 3] for i, j in CHUNKS]
    write("tas.bin", b"".join(c.tobytes() for c in chunks))
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(icechunk.VirtualChunkContainer(prefix, store))
    repo = icechunk.Repository.create(
        storage, config,
        authorize_virtual_chunk_access=icechunk.containers_credentials({prefix: credentials}))
    session = repo.writable_session("main")
    _create(session, compressors=None, fill_value=0)
    for n, (i, j) in enumerate(CHUNKS):
        session.store.set_virtual_ref(f"tas/c/{i}/{j}", f"{prefix}tas.bin",
                                      offset=n * chunks[0].nbytes, length=chunks[0].nbytes)
    session.commit("virtual chunks")
    return repo.readonly_session("main").store


def _s3(moto_s3: S3, bucket: str, prefix: str) -> Any:
    return icechunk.s3_storage(bucket=bucket, prefix=prefix, endpoint_url=moto_s3.endpoint,
                               access_key_id=moto_s3.key, secret_access_key=moto_s3.secret,
                               region="us-east-1", allow_http=True, force_path_style=True)


def _local_virtual(tmp_path: Path) -> Any:
    return _virtual(icechunk.local_filesystem_storage(str(tmp_path / "repo")),
                    f"file://{tmp_path}/", icechunk.local_filesystem_store(str(tmp_path)),
                    getattr(icechunk.credentials, "LocalFileSystemAccess", None),  # None before 2
                    lambda name, data: (tmp_path / name).write_bytes(data))


def _s3_virtual(moto_s3: S3, bucket: str, prefix: str) -> Any:
    store = icechunk.s3_store(region="us-east-1", endpoint_url=moto_s3.endpoint,
                              allow_http=True, s3_compatible=True, force_path_style=True)
    credentials = icechunk.s3_credentials(access_key_id=moto_s3.key,
                                          secret_access_key=moto_s3.secret)
    return _virtual(_s3(moto_s3, bucket, f"{prefix}/repo"), f"s3://{bucket}/{prefix}/", store,
                    credentials, lambda name, data: moto_s3.client.put_object(
                        Bucket=bucket, Key=f"{prefix}/{name}", Body=data))


@pytest.fixture(params=["local-native", "local-virtual", "s3-native", "s3-virtual"])
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, str, dict[str, Any]]:
    """(a session's store, the repository's URL, the ActiveStore's other arguments)."""
    if request.param.startswith("local"):
        url = str(tmp_path / "repo")
        store = (_local_virtual(tmp_path) if request.param == "local-virtual" else
                 _native(icechunk.local_filesystem_storage(url)))
        return store, url, {}
    moto_s3: S3 = request.getfixturevalue("moto_s3")
    bucket, prefix = moto_s3.bucket("icechunk"), tmp_path.name
    store = (_s3_virtual(moto_s3, bucket, prefix) if request.param == "s3-virtual" else
             _native(_s3(moto_s3, bucket, f"{prefix}/repo")))
    server: ActiveServer = request.getfixturevalue("active_server")
    return store, f"s3://{bucket}/{prefix}/repo", {
        "storage_options": moto_s3.storage_options, "active": {"server": server.url}}


@needs_locations
@pytest.mark.parametrize(("op", "dim"), [("mean", "time"), ("max", None), ("sum", "lon")])
def test_an_icechunk_repository_reduces_storage_side_equal_to_xarray(
        repository: tuple[Any, str, dict[str, Any]], op: str, dim: str | None) -> None:
    store, url, options = repository
    tas = xr.open_zarr(activezarr.ActiveStore.from_icechunk(store, url, **options),
                       consolidated=False).tas
    with activezarr.collect_reports() as reports:
        got = getattr(tas.active, op)(dim)
    xr.testing.assert_identical(got, getattr(xr.open_zarr(store, consolidated=False).tas, op)(dim))
    (report,) = reports.each
    assert report.fallbacks == 0 and report.chunks == 4
    assert report.backend == "reference" and "client" not in report.paths


def test_an_icechunk_array_reduces_on_the_client_and_the_warning_says_what_works(
        repository: tuple[Any, str, dict[str, Any]]) -> None:
    array = zarr.open_array(repository[0], path="tas", mode="r")
    with pytest.warns(ClientReductionWarning) as caught:
        red = activezarr.ActiveReduction(array)
    assert str(caught[0].message).endswith(f"on the client: {ICECHUNK_ADVICE}")
    np.testing.assert_array_equal(red.mean(axis=0), VALUES.mean(axis=0))
    assert red.sum() == VALUES.sum()
    assert red.last_report is not None and red.last_report.backend == "client"


@pytest.mark.skipif(LOCATES, reason="this icechunk locates chunks")
def test_an_icechunk_that_does_not_locate_chunks_is_refused_with_what_to_upgrade(
        tmp_path: Path) -> None:
    store = _native(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    with pytest.raises(UnsupportedArrayError, match="icechunk 2.1 or later does"):
        activezarr.ActiveStore.from_icechunk(store, str(tmp_path / "repo"))


def test_active_store_from_url_takes_no_icechunk_store_and_names_from_icechunk(
        repository: tuple[Any, str, dict[str, Any]]) -> None:
    with pytest.raises(TypeError, match="not an IcechunkStore: to reduce storage-side, open the"):
        activezarr.ActiveStore.from_url(repository[0])


LOCAL_URLS = pytest.mark.parametrize("url", ["{repo}", "file://{repo}", "icechunk://{repo}",
                                              "active::icechunk://{repo}"])


@needs_locations
@LOCAL_URLS
def test_active_store_from_url_opens_a_local_icechunk_repository_s_main_branch(
        tmp_path: Path, url: str) -> None:
    _native(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    store = activezarr.ActiveStore.from_url(url.format(repo=tmp_path / "repo"))
    red = activezarr.ActiveReduction(zarr.open_array(store, path="tas", mode="r"))
    np.testing.assert_array_equal(red.mean(axis=0), VALUES.mean(axis=0))
    assert red.last_report.backend == "reference" and red.last_report.fallbacks == 0


@pytest.mark.skipif(LOCATES, reason="this icechunk locates chunks")
@LOCAL_URLS
def test_active_store_from_url_refuses_a_local_repository_if_icechunk_cannot_locate_chunks(
        tmp_path: Path, url: str) -> None:
    _native(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    with pytest.raises(UnsupportedArrayError, match="icechunk 2.1 or later does"):
        activezarr.ActiveStore.from_url(url.format(repo=tmp_path / "repo"))


def test_icechunk_urls_elsewhere_name_from_icechunk() -> None:
    with pytest.raises(UnsupportedArrayError, match="for one elsewhere use activezarr.Active"):
        activezarr.ActiveStore.from_url("icechunk://s3://bucket/repo")


def test_from_url_names_what_it_takes_for_any_other_object() -> None:
    with pytest.raises(TypeError, match="takes a URL, not MemoryStore"):
        activezarr.ActiveStore.from_url(zarr.storage.MemoryStore())  # type: ignore[arg-type]


def test_a_zarr_group_with_members_named_like_icechunk_folders_opens(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "ds.zarr"), mode="w")
    for name in ("refs", "snapshots", "repo"):
        group.create_array(name, shape=(2,), dtype="f4")[:] = 1
    store = activezarr.ActiveStore.from_url(str(tmp_path / "ds.zarr"))
    assert activezarr.ActiveReduction(zarr.open_array(store, path="refs")).sum() == 2


@needs_locations
def test_virtualizarr_references_into_a_netcdf_file_reduce_beside_it(tmp_path: Path) -> None:
    """netCDF4's deflated, shuffled chunks, written into icechunk by virtualizarr."""
    netCDF4 = pytest.importorskip("netCDF4")
    from obspec_utils.registry import ObjectStoreRegistry
    from obstore.store import LocalStore
    from virtualizarr import open_virtual_dataset
    from virtualizarr.parsers import HDFParser

    path = tmp_path / "tas.nc"
    with netCDF4.Dataset(path, "w") as nc:
        for name, size in [("time", 48), ("lat", 18), ("lon", 36)]:
            nc.createDimension(name, size)
        tas = nc.createVariable("tas", "f4", ("time", "lat", "lon"), zlib=True, shuffle=True,
                                chunksizes=(12, 9, 18), fill_value=1e20)
        tas[:] = 280 + np.random.default_rng(2).standard_normal((48, 18, 36))
        tas[:, 0, :] = np.ma.masked
    virtual = open_virtual_dataset(f"file://{path}", parser=HDFParser(),
                                   registry=ObjectStoreRegistry({"file://": LocalStore()}))
    prefix = f"file://{tmp_path}/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(tmp_path))))
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")), config,
        authorize_virtual_chunk_access=icechunk.containers_credentials(
            {prefix: icechunk.credentials.LocalFileSystemAccess}))
    session = repo.writable_session("main")
    virtual.vz.to_icechunk(session.store)
    session.commit("tas.nc, virtually")
    snapshot = repo.readonly_session("main").store

    store = activezarr.ActiveStore.from_icechunk(snapshot, str(tmp_path / "repo"))
    with activezarr.collect_reports() as reports:
        got = xr.open_zarr(store, consolidated=False).tas.active.mean("time")
    xr.testing.assert_allclose(got, xr.open_zarr(snapshot, consolidated=False).tas.mean("time"))
    assert reports.total.fallbacks == 0 and reports.total.chunks == 16
    assert reports.total.paths == {"reference": 16}

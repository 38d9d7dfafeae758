"""icechunk repositories: reduced on the client, with a warning that says what works instead.

icechunk's public API tells neither where a native chunk's object is nor a virtual chunk's byte
range, so no backend can send their chunks to the storage side. Every route a user would try
says so and points at what does work (the source files' references, a zarr copy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import icechunk
import numpy as np
import pytest
import zarr

import activezarr
from activezarr.client.store import ICECHUNK_ADVICE
from activezarr.errors import ClientReductionWarning, UnsupportedArrayError
from s3_servers import S3

VALUES = np.arange(8 * 6, dtype="<f4").reshape(8, 6)


def _native(storage: Any) -> Any:
    """A repository whose array ``tas`` is written as icechunk's own (native) chunks."""
    config = icechunk.RepositoryConfig.default()
    config.inline_chunk_threshold_bytes = 0  # every chunk an object of the repository
    repo = icechunk.Repository.create(storage, config)
    session = repo.writable_session("main")
    array = zarr.create_array(session.store, name="tas", shape=VALUES.shape, chunks=(4, 3),
                              dtype=VALUES.dtype, compressors=None)
    array[:] = VALUES
    session.commit("native chunks")
    return repo.readonly_session("main").store


def _virtual(tmp_path: Path) -> Any:
    """A repository whose array ``tas`` points into a raw file's byte ranges (virtual chunks)."""
    source = tmp_path / "tas.bin"
    chunks = [VALUES[i:i + 4, j:j + 3] for i in (0, 4) for j in (0, 3)]
    source.write_bytes(b"".join(c.tobytes() for c in chunks))
    prefix = f"file://{tmp_path}/"
    config = icechunk.RepositoryConfig.default()
    config.set_virtual_chunk_container(
        icechunk.VirtualChunkContainer(prefix, icechunk.local_filesystem_store(str(tmp_path))))
    repo = icechunk.Repository.create(
        icechunk.local_filesystem_storage(str(tmp_path / "repo")), config,
        authorize_virtual_chunk_access={prefix: None})
    session = repo.writable_session("main")
    zarr.create_array(session.store, name="tas", shape=VALUES.shape, chunks=(4, 3),
                      dtype=VALUES.dtype, compressors=None, fill_value=0)
    nbytes = chunks[0].nbytes
    for n, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        session.store.set_virtual_ref(f"tas/c/{i}/{j}", f"{prefix}tas.bin", offset=n * nbytes,
                                      length=nbytes)
    session.commit("virtual chunks")
    return repo.readonly_session("main").store


def _s3(moto_s3: S3, prefix: str) -> Any:
    bucket = moto_s3.bucket("icechunk")
    return icechunk.s3_storage(bucket=bucket, prefix=prefix, endpoint_url=moto_s3.endpoint,
                               access_key_id=moto_s3.key, secret_access_key=moto_s3.secret,
                               region="us-east-1", allow_http=True, force_path_style=True)


@pytest.fixture(params=["local-native", "local-virtual", "s3-native"])
def icechunk_store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "local-native":
        return _native(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    if request.param == "local-virtual":
        return _virtual(tmp_path)
    return _native(_s3(request.getfixturevalue("moto_s3"), tmp_path.name))


def test_an_icechunk_array_reduces_on_the_client_and_the_warning_says_what_works(
        icechunk_store: Any) -> None:
    array = zarr.open_array(icechunk_store, path="tas", mode="r")
    with pytest.warns(ClientReductionWarning) as caught:
        red = activezarr.ActiveReduction(array)
    assert str(caught[0].message).endswith(f"on the client: {ICECHUNK_ADVICE}")
    np.testing.assert_array_equal(red.mean(axis=0), VALUES.mean(axis=0))
    assert red.sum() == VALUES.sum()
    assert red.last_report is not None and red.last_report.backend == "client"


def test_active_store_from_url_refuses_an_icechunk_store_with_the_advice(
        icechunk_store: Any) -> None:
    with pytest.raises(TypeError, match="cannot wrap an IcechunkStore: icechunk does not say"):
        activezarr.ActiveStore.from_url(icechunk_store)


@pytest.mark.parametrize("url", ["{repo}", "file://{repo}", "icechunk://{repo}",
                                 "active::icechunk://{repo}"])
def test_active_store_from_url_refuses_a_local_icechunk_repository_with_the_advice(
        tmp_path: Path, url: str) -> None:
    _native(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    with pytest.raises(UnsupportedArrayError, match="is an icechunk repository, which Active"):
        activezarr.ActiveStore.from_url(url.format(repo=tmp_path / "repo"))


def test_from_url_names_what_it_takes_for_any_other_object() -> None:
    with pytest.raises(TypeError, match="takes a URL, not MemoryStore"):
        activezarr.ActiveStore.from_url(zarr.storage.MemoryStore())  # type: ignore[arg-type]


def test_a_zarr_group_with_members_named_like_icechunk_folders_opens(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "ds.zarr"), mode="w")
    for name in ("refs", "snapshots", "repo"):
        group.create_array(name, shape=(2,), dtype="f4")[:] = 1
    store = activezarr.ActiveStore.from_url(str(tmp_path / "ds.zarr"))
    assert activezarr.ActiveReduction(zarr.open_array(store, path="refs")).sum() == 2

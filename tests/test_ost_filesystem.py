"""The ost:// file system: striped writes, gathered reads, listing, deleting; zarr on top."""

from __future__ import annotations

import contextlib
import random
import socket

import fsspec
import numpy as np
import pytest
import zarr

import activezarr
from activezarr.ost import Cluster, ClusterConfig
from ost_cluster import SHARED_STRIPE, open_active, write_array


@pytest.fixture
def fs(ost_cluster):
    return fsspec.filesystem("ost", host=ost_cluster.url.removeprefix("ost://"))


def test_a_file_reads_back_whole_and_in_ranges(fs):
    data = np.random.default_rng(1).bytes(10_000)
    fs.pipe("fs/ranges.bin", data)
    assert fs.cat("fs/ranges.bin") == data
    for start, end in [(0, 1), (999, 1003), (1001, 3003), (9_000, None), (-5, None)]:
        assert fs.cat_file("fs/ranges.bin", start, end) == data[start:end]


def test_a_file_is_striped_round_robin_over_all_osts(fs):
    fs.pipe("fs/striped.bin", b"x" * 5000)
    layout = fs.info("fs/striped.bin")["layout"]
    assert layout["stripe_size"] == SHARED_STRIPE
    assert sorted(layout["osts"]) == [0, 1, 2, 3]


def test_storage_options_set_the_striping_of_new_files(ost_cluster):
    fs = fsspec.filesystem("ost", host=ost_cluster.url.removeprefix("ost://"),
                           stripe_size=4096, stripe_count=2, skip_instance_cache=True)
    fs.pipe("fs/setstripe.bin", b"y" * 10_000)
    layout = fs.info("fs/setstripe.bin")["layout"]
    assert (layout["stripe_size"], len(layout["osts"])) == (4096, 2)
    assert fs.cat("fs/setstripe.bin") == b"y" * 10_000


def test_ls_info_and_rm(fs):
    fs.pipe("fs/tree/a/one", b"1")
    fs.pipe("fs/tree/two", b"22")
    assert fs.ls("fs/tree", detail=False) == ["fs/tree/a", "fs/tree/two"]
    assert fs.info("fs/tree/two")["size"] == 2
    assert fs.info("fs/tree/a")["type"] == "directory"
    fs.rm("fs/tree", recursive=True)
    assert not fs.exists("fs/tree/two")
    with pytest.raises(FileNotFoundError):
        fs.info("fs/tree")


def test_overwriting_replaces_the_content(fs):
    fs.pipe("fs/again.bin", b"old" * 1000)
    fs.pipe("fs/again.bin", b"new")
    assert fs.cat("fs/again.bin") == b"new"


def test_zarr_writes_and_reads_back_byte_identical(ost_cluster, tmp_path):
    data = np.random.default_rng(2).normal(size=(70, 90)).astype(">f8")
    create = {"chunks": (30, 40), "compressors": zarr.codecs.ZstdCodec(), "fill_value": np.nan}
    write_array(f"{ost_cluster.url}/fs/identical.zarr", data, **create)
    write_array(str(tmp_path / "local.zarr"), data, **create)
    remote = fsspec.filesystem("ost", host=ost_cluster.url.removeprefix("ost://"))
    local = fsspec.filesystem("file")
    keys = sorted(p.split("identical.zarr/")[1] for p in remote.find("fs/identical.zarr"))
    assert keys == sorted(p.split("local.zarr/")[1] for p in local.find(tmp_path / "local.zarr"))
    for key in keys:
        assert remote.cat(f"fs/identical.zarr/{key}") == local.cat(tmp_path / "local.zarr" / key)
    store = activezarr.ActiveStore.from_url(f"{ost_cluster.url}/fs/identical.zarr")
    assert np.array_equal(zarr.open_array(store, mode="r")[...], data)


def test_files_open_for_streamed_writes_and_seeking_reads(fs):
    data = np.random.default_rng(3).bytes(300_000)
    with fs.open("fs/streamed.bin", "wb", block_size=2**16) as f:
        for i in range(0, len(data), 70_000):
            f.write(data[i:i + 70_000])
    with fs.open("fs/streamed.bin", "rb") as f:
        f.seek(123_456)
        assert f.read(1000) == data[123_456:124_456]
    assert fs.cat("fs/streamed.bin") == data


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (a cluster's MDS, OSTs, OSS)."""
    for _ in range(100):
        first = random.randrange(20000, 60000)
        with contextlib.ExitStack() as held:
            try:
                for port in range(first, first + count):
                    held.enter_context(socket.create_server(("127.0.0.1", port)))
            except OSError:
                continue
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


def test_a_cluster_started_again_at_the_same_address_is_reached_with_its_new_token(tmp_path):
    """fsspec keeps one file system per URL; its client takes the token registered for the
    MDS at each request, so a cluster started again at the same ports (with a new token) is
    reached through the file system cached for the first."""
    data = np.arange(64, dtype="int32").reshape(8, 8)
    port = _free_ports(4)
    with Cluster(ClusterConfig(root=tmp_path / "first", osts=2, port=port)) as first:
        write_array(f"{first.url}/a.zarr", data, chunks=(4, 4))
    with Cluster(ClusterConfig(root=tmp_path / "again", osts=2, port=port)) as again:
        assert again.url == first.url and again.token != first.token
        write_array(f"{again.url}/b.zarr", data, chunks=(4, 4))
        np.testing.assert_array_equal(open_active(f"{again.url}/b.zarr").reduce("sum", axis=0),
                                      data.sum(axis=0))

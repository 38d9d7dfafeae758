"""``bytes_from_storage`` against an outside witness: TCP relays in front of the active server
and of S3 count what really reached the client, framing, listings and metadata included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import zarr

import activezarr
from relay import Relay, relay
from s3_servers import S3, start_active_server
from test_s3_backend import BUCKET


@pytest.fixture(scope="module")
def relays(moto_s3: S3, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[Relay, Relay]]:
    """(relay to S3, relay to an active server that reads S3 directly, not through the relay)."""
    with relay(moto_s3.endpoint) as to_s3, \
            start_active_server(tmp_path_factory.mktemp("relayed"), "--upstream",
                                f"{to_s3.url}={moto_s3.endpoint}") as server, \
            relay(server.url) as to_server:
        yield to_s3, to_server


@pytest.fixture(scope="module")
def stored(moto_s3: S3) -> str:
    """A 24-chunk array written straight to S3 (not through the relays)."""
    moto_s3.bucket(BUCKET)
    url = f"s3://{BUCKET}/relayed.zarr"
    data = np.random.default_rng(5).normal(280, 5, (24, 64, 128)).astype("float32")
    store = activezarr.ActiveStore.from_url(url, storage_options=moto_s3.storage_options)
    zarr.create_array(store, shape=data.shape, chunks=(1, 64, 128), dtype="float32")[...] = data
    return url


@pytest.mark.parametrize("backend", ["s3", "client"])
def test_reported_bytes_agree_with_a_relay_within_ten_percent(
        moto_s3: S3, relays: tuple[Relay, Relay], stored: str,
        backend: str) -> None:
    to_s3, to_server = relays
    url = stored
    active = {"server": to_server.url} if backend == "s3" else {"backend": "client"}
    array = activezarr.open_array(url, active=active, storage_options={
        **moto_s3.storage_options, "endpoint_url": to_s3.url, "skip_instance_cache": True})
    red = activezarr.ActiveReduction(array, missing=None, fallback=False)
    for reduce in (red.mean, lambda: red.std(axis=0)):
        to_s3.reset()
        to_server.reset()  # opening the array read its metadata before: not this reduction's
        reduce()
        report = red.last_report
        witnessed = to_s3.to_client + to_server.to_client
        assert report.paths == {backend: 24}, report
        assert abs(report.bytes_from_storage - witnessed) <= 0.1 * witnessed, (report, witnessed)
        assert report.links["lan"] == report.bytes_from_storage


def test_reference_bytes_agree_with_a_relay_within_ten_percent(
        moto_s3: S3, relays: tuple[Relay, Relay], netcdf_refs: dict[str, Any]) -> None:
    to_s3, to_server = relays
    for active in ({"server": to_server.url}, {"backend": "client"}):
        store = activezarr.ActiveStore.from_url("reference://", active=active, storage_options={
            "fo": netcdf_refs["test1.nc"], "remote_protocol": "s3", "remote_options": {
                **moto_s3.storage_options, "endpoint_url": to_s3.url,
                "skip_instance_cache": True}})
        red = activezarr.ActiveReduction(zarr.open_array(store, path="tas", mode="r",
                                                         zarr_format=2), fallback=False)
        to_s3.reset()
        to_server.reset()
        red.var(axis=0)
        witnessed = to_s3.to_client + to_server.to_client
        report = red.last_report
        assert report.fallbacks == 0 and report.chunks == 16, report
        assert abs(report.bytes_from_storage - witnessed) <= 0.1 * witnessed, (report, witnessed)

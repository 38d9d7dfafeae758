"""Nothing reads on the client silently: options that would be ignored are errors, fallbacks
warn and say why, ``fallback=False`` names a chunk and the server's reason, credentials reach
the server the way s3fs resolves them."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import s3fs
import zarr

import activezarr
from activezarr.backends.credentials import s3_access
from activezarr.transport.sync import run_sync
from relay import relay
from s3_servers import S3, ActiveServer, free_port, start_active_server
from test_s3_backend import BUCKET, s3_array, sample


@pytest.fixture(scope="module")
def refusing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveServer]:
    """An active server configured for another object store: it refuses our bucket (403)."""
    with start_active_server(tmp_path_factory.mktemp("refusing"), "--upstream",
                             f"http://127.0.0.1:{free_port()}") as server:
        yield server


@pytest.fixture(scope="module")
def written(moto_s3: S3, active_server: ActiveServer) -> tuple[str, np.ndarray]:
    """A small array in S3: its s3:// URL and data."""
    data = sample("float32", (8, 6), seed=11)
    array = s3_array(moto_s3, active_server.url, data, chunks=(4, 3))
    return f"s3://{array.store.root}", data


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "activezarr", *args], capture_output=True,
                          text=True, timeout=120, check=False)


# --- defect 3: active:: options survive every way of opening -------------------------------

def test_open_array_of_an_active_url_keeps_the_backend_options(
        moto_s3: S3, active_server: ActiveServer, written: tuple[str, np.ndarray]) -> None:
    url, data = written
    array = activezarr.open_array(f"active::{url}", storage_options={
        "active": {"server": active_server.url}, "s3": moto_s3.storage_options})
    red = activezarr.ActiveReduction(array, fallback=False)
    assert np.isclose(red.mean(), data.mean())
    assert red.last_report.paths == {"s3": 4}


def test_the_cli_reduces_an_active_url_on_the_server(
        moto_s3: S3, active_server: ActiveServer, written: tuple[str, np.ndarray]) -> None:
    url, data = written
    options = {"active": {"server": active_server.url}, "s3": moto_s3.storage_options}
    done = cli("reduce", f"active::{url}", "--op", "sum", "--storage-options",
               json.dumps(options), "--no-fallback", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert np.isclose(out["result"], data.sum(dtype=np.float64), rtol=1e-6)
    assert out["report"]["paths"] == {"s3": 4} and out["report"]["fallbacks"] == 0


# --- defect 4: options that would do nothing are errors -----------------------------------

@pytest.mark.parametrize(("active", "message"), [
    ({"servers": "http://h:1"}, r"unknown option\(s\) 'servers'.*known: .*server"),
    ({"server": "http://h:1", "workerz": 4}, r"unknown option\(s\) 'workerz'"),
    ({"server": "127.0.0.1:8080"}, r"'127.0.0.1:8080' is not an http\(s\) URL"),
    ({"backend": "s4"}, r"unknown backend 's4'; available: .*s3"),
])
def test_bad_backend_options_are_errors(moto_s3: S3, active: dict[str, Any],
                                        message: str) -> None:
    with pytest.raises((ValueError, KeyError), match=message):
        activezarr.ActiveStore.from_url(f"s3://{BUCKET}/x.zarr",
                                        storage_options=moto_s3.storage_options, active=active)


def test_a_typo_in_local_options_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'workerz' for the file backend; known: .*workers"):
        activezarr.ActiveStore.from_url(str(tmp_path), active={"workerz": 4})


def test_bad_options_in_the_cli_are_one_line_errors(tmp_path: Path) -> None:
    done = cli("reduce", str(tmp_path), "--op", "mean", "--active", '{"workerz": 4}')
    assert done.returncode == 1 and "unknown option(s) 'workerz'" in done.stderr
    assert "Traceback" not in done.stderr


# --- defect 4: fallbacks are visible ----------------------------------------------------------

def test_a_plain_zarr_array_warns_that_it_reads_on_the_client(tmp_path: Path) -> None:
    array = zarr.create_array(str(tmp_path / "plain.zarr"), shape=(4,), dtype="f8")
    array[:] = 1.0
    with pytest.warns(activezarr.ClientReductionWarning, match="read and reduced on the client"):
        red = activezarr.ActiveReduction(array)
    assert red.sum() == 4.0 and red.last_report.backend == "client"


def test_a_refused_bucket_warns_with_the_server_reason(
        moto_s3: S3, refusing_server: ActiveServer, written: tuple[str, np.ndarray]) -> None:
    url, data = written
    array = activezarr.open_array(url, storage_options=moto_s3.storage_options,
                                  active={"server": refusing_server.url})
    red = activezarr.ActiveReduction(array)
    with pytest.warns(activezarr.FallbackWarning,
                      match="4 of 4 chunk.*not under any configured upstream"):
        assert np.isclose(red.mean(), data.mean())
    report = red.last_report
    assert report.fallbacks == 4 and sum(report.fallback_reasons.values()) == 4
    assert all("not under any configured upstream" in r for r in report.fallback_reasons)


def test_fallback_false_names_a_chunk_and_the_server_reason(
        moto_s3: S3, refusing_server: ActiveServer, written: tuple[str, np.ndarray]) -> None:
    url, _ = written
    array = activezarr.open_array(url, storage_options=moto_s3.storage_options,
                                  active={"server": refusing_server.url})
    with pytest.raises(activezarr.StorageUnavailableError,
                       match=r"chunk 'c/0/0' .*: url .* is not under any configured upstream"):
        activezarr.ActiveReduction(array, fallback=False).mean()


def test_an_unreachable_server_warns_and_names_it(moto_s3: S3,
                                                  written: tuple[str, np.ndarray]) -> None:
    url, data = written
    down = f"http://127.0.0.1:{free_port()}"
    array = activezarr.open_array(url, storage_options=moto_s3.storage_options,
                                  active={"server": down})
    red = activezarr.ActiveReduction(array)
    with pytest.warns(activezarr.FallbackWarning, match=f"no active server left.*{down}"):
        assert np.isclose(red.sum(), data.sum(dtype=np.float64), rtol=1e-6)
    assert red.last_report.fallbacks == 4


def test_the_cli_prints_a_fallback_line_on_stderr(
        moto_s3: S3, refusing_server: ActiveServer, written: tuple[str, np.ndarray]) -> None:
    url, _ = written
    args = ["reduce", url, "--op", "max", "--storage-options",
            json.dumps(moto_s3.storage_options), "--active",
            json.dumps({"server": refusing_server.url})]
    done = cli(*args)
    assert done.returncode == 0
    [line] = [text for text in done.stderr.splitlines() if text.startswith("Warning:")]
    assert "4 of 4 chunk(s) were read and reduced on the client" in line
    assert "not under any configured upstream" in line
    failed = cli(*args, "--no-fallback")
    assert failed.returncode == 1 and "chunk 'c/0/0'" in failed.stderr
    assert "not under any configured upstream" in failed.stderr


# --- defect 5: credentials resolved as s3fs resolves them -----------------------------------

def _basic(key: str, secret: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{key}:{secret}".encode())


def test_credentials_from_the_environment_reach_the_server(
        moto_s3: S3, active_server: ActiveServer, written: tuple[str, np.ndarray],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, data = written
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    with relay(active_server.url) as to_server:
        array = activezarr.open_array(url, storage_options={
            "endpoint_url": moto_s3.endpoint, "skip_instance_cache": True},
            active={"server": to_server.url})
        red = activezarr.ActiveReduction(array, fallback=False)
        assert np.isclose(red.mean(), data.mean())
        assert _basic("env-key", "env-secret") in to_server.from_client


def test_credentials_from_a_profile_are_forwarded(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("[climate]\naws_access_key_id = profile-key\n"
                           "aws_secret_access_key = profile-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    fs = s3fs.S3FileSystem(profile="climate", endpoint_url="http://127.0.0.1:9",
                           asynchronous=True, skip_instance_cache=True)
    client = run_sync(fs.set_session())
    access = run_sync(s3_access(fs))
    run_sync(client.close())
    assert access.headers["Authorization"].encode() == _basic("profile-key",
                                                              "profile-secret")[15:]


def test_a_session_token_is_a_clear_error_not_a_fallback(
        moto_s3: S3, active_server: ActiveServer, written: tuple[str, np.ndarray],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = written
    array = activezarr.open_array(url, storage_options={
        **moto_s3.storage_options, "token": "session-token", "skip_instance_cache": True},
        active={"server": active_server.url})
    with pytest.raises(activezarr.CredentialsError, match="session token"):
        activezarr.ActiveReduction(array).mean()

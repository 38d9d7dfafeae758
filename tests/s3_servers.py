"""Real servers on loopback for the S3 tests: moto's S3 and the active server as a subprocess.

conftest.py makes the fixtures visible to every test module; servers start once per session.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from activezarr.servers.processes import active_server as run_active_server

__all__ = ["ActiveServer", "S3", "active_server", "free_port", "moto_s3", "served_root",
           "start_active_server"]

KEY, SECRET = "testing-key", "testing-secret-do-not-log"
_logs = itertools.count()


def free_port() -> int:
    """A port nobody listens on right now: only for addresses that must refuse connections."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3:
    """An S3 endpoint with credentials and a boto3 client to it."""

    endpoint: str
    key: str
    secret: str

    @property
    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret, region_name="us-east-1")

    @property
    def storage_options(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret}

    def bucket(self, name: str) -> str:
        with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
            self.client.create_bucket(Bucket=name)
        return name


@dataclass
class ActiveServer:
    """A running ``python -m activezarr.servers.active``; ``log`` holds everything it printed."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def start_active_server(log_dir: Path, *args: str, env: dict[str, str] | None = None,
                        ca: Path | None = None) -> Iterator[ActiveServer]:
    """The server with ``args`` (and ``env``) on a free port, answering ``/healthz`` when yielded.

    With ``ca`` (the certificate of a ``--tls-cert``) it serves https. It is stopped with
    SIGTERM, as a service manager would.
    """
    log = log_dir / f"server-{next(_logs)}.log"
    context = ssl.create_default_context(cafile=str(ca)) if ca else None
    with run_active_server(*args, log=log, env=env, context=context) as (url, process):
        yield ActiveServer(url, process, log)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3]:
    """moto's S3 in server mode on a free loopback port (a real HTTP S3)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # any free port
    server.start()
    try:
        yield S3(f"http://127.0.0.1:{server.get_host_and_port()[1]}", KEY, SECRET)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def served_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the session's active server serves to ``interface_type: file``."""
    return tmp_path_factory.mktemp("served-root")


@pytest.fixture(scope="session")
def active_server(moto_s3: S3, served_root: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveServer]:
    """The active server reading moto's S3 and one file root, with small limits for the tests;
    it logs a line per request (``--access-log``), so that its log holds all an operator's
    could, for the tests to check (no credentials)."""
    logs = tmp_path_factory.mktemp("server-logs")
    with start_active_server(logs, "--upstream", moto_s3.endpoint, "--allow-root", str(served_root),
                             "--max-body", str(256 * 1024), "--max-chunk-bytes",
                             str(64 * 2**20), "--workers", "4", "--access-log") as server:
        yield server

"""Every backend as a runner: a zarr store written locally, opened again through that backend.

A runner copies the store's files to where its backend reads them (moto's S3 behind the real
active server, the OST cluster, kerchunk-style references to the local files) and opens the
array there; another backend is one more entry in :data:`RUNNERS`.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pytest
import zarr

import activezarr
from activezarr.backends import servers as active_servers

BUCKET = "differential"
_names = (f"d{i}" for i in itertools.count())


def fresh_name() -> str:
    """A name no other case of this session used."""
    return next(_names)


def _files(path: Path) -> dict[str, bytes]:
    return {f.relative_to(path).as_posix(): f.read_bytes()
            for f in sorted(path.rglob("*")) if f.is_file()}


def _open(url: str, **options: Any) -> zarr.Array:
    return zarr.open_array(activezarr.ActiveStore.from_url(url, **options), mode="r")


def _file(path: Path, fixtures: Mapping[str, Any]) -> zarr.Array:
    return _open(str(path))


def _file_server(path: Path, fixtures: Mapping[str, Any]) -> zarr.Array:
    """The file backend handing the chunks to the active server, which reads its own root."""
    copy = fixtures["served_root"] / fresh_name()
    for key, data in _files(path).items():
        (copy / key).parent.mkdir(parents=True, exist_ok=True)
        (copy / key).write_bytes(data)
    return _open(str(copy), active={"server": fixtures["active_server"].url})


def _client(path: Path, fixtures: Mapping[str, Any]) -> zarr.Array:
    return _open(str(path), active={"backend": "client"})


@functools.cache
def _boto(endpoint: str, key: str, secret: str) -> Any:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                          aws_secret_access_key=secret, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def s3_copy(s3: Any, data: bytes, key: str) -> str:
    """``data`` put at ``key`` in moto's S3; its s3:// URL."""
    _boto(s3.endpoint, s3.key, s3.secret).put_object(Bucket=BUCKET, Key=key, Body=data)
    return f"s3://{BUCKET}/{key}"


def on_s3(path: Path, s3: Any, server: str) -> zarr.Array:
    """The zarr store at ``path`` copied to moto's S3 and opened through the active server
    at ``server``."""
    name = fresh_name()
    for key, data in _files(path).items():
        s3_copy(s3, data, f"{name}/{key}")
    return _open(f"s3://{BUCKET}/{name}", storage_options=s3.storage_options,
                 active={"server": server})


def _s3(path: Path, fixtures: Mapping[str, Any]) -> zarr.Array:
    return on_s3(path, fixtures["moto_s3"], fixtures["active_server"].url)


def _s3_as_plain_reductionist(path: Path, fixtures: Mapping[str, Any]) -> zarr.Array:
    """The active server as the client sees a plain Reductionist: v2 fields only.

    No Reductionist runs here, so the client is told the server advertises no extensions (the
    capability document a plain Reductionist returns), under a second name for the same server.
    """
    server = fixtures["active_server"]
    plain = server.url.replace("127.0.0.1", "localhost")
    active_servers._capabilities[plain] = {}
    return _s3(path, {**fixtures, "active_server": dataclasses.replace(server, url=plain)})


def _ost(path: Path, fixtures: Mapping[str, Any]) -> zarr.Array:
    cluster = fixtures["ost_cluster"]
    fs = fsspec.filesystem("ost", host=cluster.url.removeprefix("ost://"))
    name = f"differential/{fresh_name()}"
    fs.pipe({f"{name}/{key}": data for key, data in _files(path).items()})
    return _open(f"{cluster.url}/{name}")


def _reference(path: Path, fixtures: Mapping[str, Any]) -> zarr.Array:
    """kerchunk's form: metadata inlined, every chunk a ``[file, offset, size]`` reference."""
    refs: dict[str, Any] = {}
    for key, data in _files(path).items():
        if key.rsplit("/", 1)[-1] in (".zarray", ".zattrs", ".zgroup", "zarr.json"):
            refs[key] = data.decode()
        else:
            refs[key] = [str(path / key), 0, len(data)]
    fo = json.loads(json.dumps({"version": 1, "refs": refs}))  # as read from a kerchunk file
    return _open("reference://", storage_options={"fo": fo, "remote_protocol": "file"})


@dataclass(frozen=True)
class Runner:
    """Opens a locally written zarr store through one backend (``backend``, as reports name it;
    ``name`` by default)."""

    name: str
    fixtures: tuple[str, ...]
    opener: Callable[[Path, Mapping[str, Any]], zarr.Array]
    backend: str = ""

    @property
    def reported(self) -> str:
        return self.backend or self.name

    def open(self, path: Path, request: pytest.FixtureRequest) -> zarr.Array:
        return self.opener(path, {f: request.getfixturevalue(f) for f in self.fixtures})

    def check_storage_side(self, report: activezarr.Report, *ops: str) -> None:
        """``report`` is this runner's, every chunk reduced storage-side; a plain Reductionist
        serves none of our extensions ``ops``, and its fallbacks say so."""
        assert report.backend == self.reported
        if self.name == "s3-reductionist":
            assert all(
                why.endswith(tuple(f"does not serve the '{op}' reduction" for op in ops))
                for why in report.fallback_reasons), report.fallback_reasons
        else:
            assert report.fallbacks == 0, report.fallback_reasons


RUNNERS = (
    Runner("file", (), _file),
    Runner("file-server", ("active_server", "served_root"), _file_server, "file"),
    Runner("client", (), _client),
    Runner("s3", ("moto_s3", "active_server"), _s3),
    Runner("s3-reductionist", ("moto_s3", "active_server"), _s3_as_plain_reductionist, "s3"),
    *([Runner("ost", ("ost_cluster",), _ost)] if importlib.util.find_spec("activezarr.ost")
      else []),
    Runner("reference", (), _reference),
)

"""Reading a chunk's stored bytes: ranged GETs (S3 signed with the caller's keys), or files."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as AwsCredentials
from yarl import URL

from ..protocol import ChunkRequest
from .errors import BadRequest, Overloaded, TooLarge, Unauthorized

_READ_BLOCK = 2**20


@dataclass(frozen=True)
class Credentials:
    """HTTP Basic credentials; for S3 the access key and the secret key. Never shown in reprs."""

    login: str
    password: str = field(repr=False)

    @classmethod
    def from_header(cls, header: str | None) -> Credentials | None:
        """The credentials of an ``Authorization: Basic ...`` header (None without one)."""
        if header is None:
            return None
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            raise BadRequest("only HTTP Basic authorization is supported")
        try:
            login, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest("malformed Basic authorization header") from None
        if not sep:
            raise BadRequest("malformed Basic authorization header")
        return cls(login, password)

    def header(self) -> str:
        return aiohttp.encode_basic_auth(self.login, self.password)


@lru_cache(maxsize=64)
def _signer(access_key: str, secret_key: str, region: str) -> S3SigV4Auth:
    """One signer per credential set, bounded: a busy server sees few distinct keys."""
    return S3SigV4Auth(AwsCredentials(access_key, secret_key), "s3", region)


def _byte_range(request: ChunkRequest) -> str | None:
    offset = request.offset or 0
    if request.size is not None:
        return f"bytes={offset}-{offset + request.size - 1}"
    return f"bytes={offset}-" if offset else None


def _check_size(request: ChunkRequest, limit: int) -> None:
    if request.size is not None and request.size > limit:
        raise TooLarge(f"size {request.size} is over the chunk limit of {limit} bytes")


class UpstreamReader:
    """GETs byte ranges over one pooled session; S3 requests are signed when credentials come."""

    def __init__(self, session: aiohttp.ClientSession, max_chunk_bytes: int, region: str) -> None:
        self.session = session
        self.max_chunk_bytes = max_chunk_bytes
        self.region = region

    def _headers(self, request: ChunkRequest, url: URL,
                 auth: Credentials | None) -> Mapping[str, str]:
        headers = {}
        byte_range = _byte_range(request)
        if byte_range is not None:
            headers["Range"] = byte_range
        if auth is None:
            return headers
        if request.interface_type != "s3":
            return {**headers, "Authorization": auth.header()}
        signed = AWSRequest(method="GET", url=str(url), headers=headers)
        _signer(auth.login, auth.password, self.region).add_auth(signed)
        return dict(signed.headers.items())

    async def read(self, request: ChunkRequest, url: URL, auth: Credentials | None) -> bytes:
        _check_size(request, self.max_chunk_bytes)
        if request.size == 0:
            return b""
        if request.interface_type == "s3":
            url = _s3_object_url(url)
        headers = self._headers(request, url, auth)
        try:
            async with self.session.get(url, headers=headers, allow_redirects=False) as response:
                _check_status(response.status, request.url)
                length = response.content_length
                too_large = TooLarge(f"object is over the chunk limit of {self.max_chunk_bytes}")
                if length is not None and length > self.max_chunk_bytes:
                    raise too_large
                data = bytearray()
                async for block in response.content.iter_chunked(_READ_BLOCK):
                    data += block
                    if len(data) > self.max_chunk_bytes:
                        raise too_large
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise Overloaded(f"object store unreachable: {type(exc).__name__}") from None
        if request.size is not None and len(data) != request.size:
            raise BadRequest(f"read {len(data)} bytes of {request.url}, expected {request.size}")
        return bytes(data)


def _s3_object_url(url: URL) -> URL:
    """``/bucket//key`` as ``/bucket/key``: PyActiveStorage sends the former, and MinIO (the
    store Reductionist is usually deployed with) reads it as the latter."""
    path = re.sub("/{2,}", "/", url.raw_path)
    return url if path == url.raw_path else url.with_path(path, encoded=True)


def _check_status(status: int, url: str) -> None:
    if status in (200, 206):
        return
    if status == 404:
        raise BadRequest(f"object or bucket not found: {url}")
    if status in (401, 403):
        raise Unauthorized(f"the object store refused the credentials for {url}")
    if status == 416:
        raise BadRequest(f"byte range outside the object {url}")
    if status >= 500:
        raise Overloaded(f"the object store answered {status} for {url}")
    raise BadRequest(f"the object store answered {status} for {url}")


def read_file(request: ChunkRequest, path: str, max_chunk_bytes: int) -> bytes:
    """The requested byte range of a local file (run in a worker thread)."""
    _check_size(request, max_chunk_bytes)
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise BadRequest(f"file not found: {request.url}") from None
    try:
        offset = request.offset or 0
        size = request.size
        if size is None:
            size = os.fstat(fd).st_size - offset
            if size > max_chunk_bytes:
                raise TooLarge(f"file is over the chunk limit of {max_chunk_bytes} bytes")
        data = os.pread(fd, max(size, 0), offset)
    except IsADirectoryError:
        raise BadRequest(f"file not found: {request.url}") from None
    finally:
        os.close(fd)
    if request.size is not None and len(data) != request.size:
        raise BadRequest(f"read {len(data)} bytes of {request.url}, expected {request.size}")
    return data

"""Reading a chunk's stored bytes: ranged GETs (S3 signed with the caller's keys), or files."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import stat
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as AwsCredentials
from yarl import URL

from ...fileio import read_ranges
from ...protocol import ChunkRequest
from ..errors import BadRequest, Forbidden, NoSuchKey, Overloaded, TooLarge, Unauthorized
from .access import FilePath

#: Reserves memory for a read of the given size before it is read.
Admit = Callable[[int], Awaitable[None]]
_READ_BLOCK = 2**20
#: Bytes of an upstream's error body read for its code and message.
_ERROR_BODY = 64 * 1024


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
    """GETs byte ranges over one pooled session, at most ``reads`` at once; S3 requests are
    signed when credentials come."""

    def __init__(self, session: aiohttp.ClientSession, max_chunk_bytes: int, region: str,
                 reads: int) -> None:
        self.session = session
        self.max_chunk_bytes = max_chunk_bytes
        self.region = region
        self._reads = asyncio.Semaphore(reads)

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

    async def read(self, request: ChunkRequest, url: URL, auth: Credentials | None,
                   admit: Admit) -> memoryview:
        """The bytes ``request`` names; ``admit(n)`` reserves memory for ``n`` bytes first."""
        _check_size(request, self.max_chunk_bytes)
        if request.interface_type == "s3":
            url = _s3_object_url(url)
        async with self._reads:  # signed once a read may start: the signature stays fresh
            return await self._get(request, url, self._headers(request, url, auth), admit)

    async def _get(self, request: ChunkRequest, url: URL, headers: Mapping[str, str],
                   admit: Admit) -> memoryview:
        try:
            async with self.session.get(url, headers=headers, allow_redirects=False) as response:
                if response.status not in (200, 206):
                    detail = _upstream_detail(await response.content.read(_ERROR_BODY))
                    _check_status(response.status, request.url, detail)
                length = response.content_length
                if length is not None and length > self.max_chunk_bytes:
                    raise _too_large(self.max_chunk_bytes)
                await admit(request.size if request.size is not None else
                            length if length is not None else self.max_chunk_bytes)
                data = await _body(response, length, self.max_chunk_bytes)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError,
                asyncio.IncompleteReadError) as exc:
            raise Overloaded(f"object store unreachable: {type(exc).__name__}") from None
        if request.size is not None and len(data) != request.size:
            raise BadRequest(f"read {len(data)} bytes of {request.url}, expected {request.size}")
        return memoryview(data)  # not copied: the budget counts it once


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"object is over the chunk limit of {limit}")


async def _body(response: aiohttp.ClientResponse, length: int | None,
                limit: int) -> bytes | bytearray:
    """The whole body: of a stated length (within ``limit``) joined once, else grown block by
    block up to ``limit``."""
    if length is not None:
        return await response.content.readexactly(length)
    data = bytearray()
    async for block in response.content.iter_chunked(_READ_BLOCK):
        data += block
        if len(data) > limit:
            raise _too_large(limit)
    return data


def _s3_object_url(url: URL) -> URL:
    """``/bucket//key`` as ``/bucket/key``: PyActiveStorage sends the former, and MinIO (the
    store Reductionist is usually deployed with) reads it as the latter."""
    path = re.sub("/{2,}", "/", url.raw_path)
    return url if path == url.raw_path else url.with_path(path, encoded=True)


def _upstream_detail(body: bytes) -> str:
    """``Code: Message`` of an S3 XML error body, or "" when there is none."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return ""
    code, message = root.findtext("Code"), root.findtext("Message")
    return ": ".join(p for p in (code, message) if p)


def _check_status(status: int, url: str, detail: str) -> None:
    said = f" ({detail})" if detail else ""
    if status == 404 and detail.startswith("NoSuchKey"):
        raise NoSuchKey(f"object not found: {url}{said}")
    if status == 404:
        raise BadRequest(f"object or bucket not found: {url}{said}")
    if status in (401, 403):
        raise Unauthorized(f"the object store refused the credentials for {url}{said}")
    if status == 416:
        raise BadRequest(f"byte range outside the object {url}{said}")
    if status >= 500:
        raise Overloaded(f"the object store answered {status} for {url}{said}")
    raise BadRequest(f"the object store answered {status} for {url}{said}")


def _is_link(name: str, directory: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=directory, follow_symlinks=False).st_mode)
    except OSError:  # gone or replaced meanwhile
        return False


def open_file(request: ChunkRequest, path: FilePath, max_chunk_bytes: int) -> tuple[int, int]:
    """(descriptor, bytes to read) of a regular file below its root (run in a worker thread).

    The file is opened component by component from the root without following symbolic links,
    so that swapping a directory for a link between a check and the open reaches nothing
    outside the root; FIFOs, devices and directories are refused, never waited on.
    """
    _check_size(request, max_chunk_bytes)
    fd = os.open(path.root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, name in enumerate(path.names):
            last = i == len(path.names) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            try:
                child = os.open(name, flags, dir_fd=fd)
            except FileNotFoundError:
                raise BadRequest(f"file not found: {request.url}") from None
            except NotADirectoryError:
                if _is_link(name, fd):
                    raise Forbidden(f"{request.url} passes through a symbolic link") from None
                raise BadRequest(f"file not found: {request.url}") from None
            except OSError as exc:  # ELOOP: a symbolic link
                raise Forbidden(f"{request.url} is not a plain file below the root "
                                f"({exc.strerror})") from None
            os.close(fd)
            fd = child
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadRequest(f"{request.url} is not a regular file")
        offset = request.offset or 0
        size = info.st_size - offset if request.size is None else request.size
        if size > max_chunk_bytes:
            raise TooLarge(f"file is over the chunk limit of {max_chunk_bytes} bytes")
        # An offset at or past the end with no size is outside, as S3 answers ``bytes=N-``.
        if (offset and offset >= info.st_size) or offset + size > info.st_size:
            raise BadRequest(f"byte range outside the file {request.url}")
    except BaseException:
        os.close(fd)
        raise
    return fd, size


def read_open_file(request: ChunkRequest, fd: int, size: int) -> bytes:
    """``size`` bytes from the request's offset of an open file, which is then closed here, in
    the worker: a close on the event loop would hand the interpreter to a busy worker and wait
    to get it back, for every file."""
    try:
        [data] = read_ranges(fd, [(request.offset or 0, size)], request.url)
    finally:
        os.close(fd)
    return data

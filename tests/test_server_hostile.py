"""The active server against hostile input: every item of issue 8, each on a real server process.

Conformance (object names, error bodies, result order, upstream errors, validation up front),
then hardening (forged headers, bombs, memory permits, slow clients, prefix escapes, roots,
500s, port races). The simulated parallel file system's own checks are in
test_ost_hostile.py.
"""

from __future__ import annotations

import asyncio
import bz2
import http.server
import json
import logging
import lzma
import os
import posixpath
import shutil
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numcodecs
import numpy as np
import psutil
import pytest
import requests
from aiohttp import web

from activezarr.chunk.codecs import Blosc2
from activezarr.servers.active import ServerConfig, create_app
from activezarr.servers.processes import listening_socket, port_of
from concatenated import concatenated
from s3_servers import S3, ActiveServer, start_active_server
from server_client import error, ok, post, values

BUCKET = "hostile"
MiB = 2**20
#: Object names S3 allows, as a client puts them in a URL (unescaped, as PyActiveStorage
#: does), and the key each names: a valid ``%XX`` is an escape, as in any URL.
AWKWARD_NAMES = {"data-shape-[5, 5, 4].bin": "data-shape-[5, 5, 4].bin",
                 "space in name.bin": "space in name.bin", "ünïcødé-名前.bin": "ünïcødé-名前.bin",
                 "100%.bin": "100%.bin", "a+b=c.bin": "a+b=c.bin", "50%25off.bin": "50%off.bin",
                 "dir with space/x [1].bin": "dir with space/x [1].bin",
                 "escaped%20name.bin": "escaped name.bin"}


# --- fixtures: a file-serving upstream that records what it was asked -------------------------


class WebAsked:
    paths: list[str] = []


class _Files(http.server.SimpleHTTPRequestHandler):
    """Serves a directory the way a plain web server does (it normalises ``..``); ``/slow/``
    answers after a pause. Every path asked for is recorded."""

    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.asked.append(self.path)
        if "/denied/" in self.path:
            body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
                    b"<Message>Access Denied</Message></Error>")
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if "/slow/" in self.path:
            time.sleep(1.5)
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(bytes(8))
            return
        super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URL, directory) of a plain web server; ``public/`` is what the server may reach.
    ``WebAsked.paths`` records the paths it was asked for."""
    root = tmp_path_factory.mktemp("web")
    (root / "public").mkdir()
    (root / "secret.bin").write_bytes(b"SECRET!!" * 4)
    handler = type("Handler", (_Files,), {"asked": WebAsked.paths})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a: handler(*a, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-root")


@pytest.fixture(scope="module")
def tight_server(moto_s3: S3, web_root: tuple[str, Path], hostile_root: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[ActiveServer]:
    """Small memory, short waits, two slots: what hostile clients meet."""
    with start_active_server(
            tmp_path_factory.mktemp("tight"), "--upstream", moto_s3.endpoint,
            "--upstream", f"{web_root[0]}/public", "--allow-root", str(hostile_root),
            "--max-memory", str(48 * MiB), "--max-chunk-bytes", str(8 * MiB),
            "--max-decoded-bytes", str(8 * MiB), "--max-inflight", "2", "--memory-wait", "5",
            "--body-timeout", "1", "--workers", "2") as server:
        yield server


def rss(server: ActiveServer) -> int:
    return psutil.Process(server.process.pid).memory_info().rss


def upstream_reads(server: ActiveServer) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    line = [x for x in text.splitlines() if x.startswith("activezarr_upstream_reads_total")]
    return float(line[0].split()[-1]) if line else 0.0


def file_body(root: Path, name: str, **fields: Any) -> dict[str, Any]:
    return {"interface_type": "file", "url": f"file://{root}/{name}", **fields}


# --- 1. object names with any character S3 allows -------------------------------------------


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_s3_object_names_with_awkward_characters(active_server: ActiveServer, moto_s3: S3,
                                                 name: str) -> None:
    moto_s3.bucket(BUCKET)
    moto_s3.client.put_object(Bucket=BUCKET, Key=AWKWARD_NAMES[name],
                              Body=np.arange(4, dtype="<i4").tobytes())
    result = ok(post(active_server, "sum", {"interface_type": "s3", "dtype": "int32",
                                            "url": f"{moto_s3.endpoint}/{BUCKET}/{name}"}))
    assert values(result)[()] == 6


@pytest.mark.parametrize("name", AWKWARD_NAMES)
def test_http_object_names_with_awkward_characters(tight_server: ActiveServer,
                                                   web_root: tuple[str, Path], name: str) -> None:
    url, root = web_root
    path = root / "public" / AWKWARD_NAMES[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.arange(4, dtype="<i4").tobytes())
    result = ok(post(tight_server, "sum", {"interface_type": "http", "dtype": "int32",
                                           "url": f"{url}/public/{name}"}, auth=None))
    assert values(result)[()] == 6


# --- 2. error bodies are application/json exactly --------------------------------------------


def test_errors_are_application_json_exactly(active_server: ActiveServer) -> None:
    for response in (post(active_server, "sum", None, raw=b"{"),
                     post(active_server, "nosuchop", {}),
                     post(active_server, "sum", {"interface_type": "s3", "dtype": "int32",
                                                 "url": "http://elsewhere.example/b/k"})):
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["message"]


# --- 3. the order of results -----------------------------------------------------------------


def test_order_f_with_no_axis_keeps_fortran_order(active_server: ActiveServer,
                                                  hostile_root: Path, served_root: Path) -> None:
    data = np.arange(6, dtype="<i4").reshape(2, 3)
    (served_root / "f.bin").write_bytes(data.tobytes(order="F"))
    body = file_body(served_root, "f.bin", dtype="int32", shape=[2, 3], order="F", axis=[])
    for op in ("sum", "max", "select"):
        result = ok(post(active_server, op, body))
        assert result["shape"] == [2, 3]
        assert result["bytes"] == data.tobytes(order="F"), op
    masked = {**body, "missing": {"missing_value": 4}}  # data[1, 1]
    assert ok(post(active_server, "sum", masked))["count"] == [1, 1, 1, 0, 1, 1]  # F order
    # Reductionist's count over no axis keeps C order; reductions over an axis are C order.
    assert ok(post(active_server, "count", masked))["count"] == [1, 1, 1, 1, 0, 1]
    summed = ok(post(active_server, "sum", {**body, "axis": [0]}))
    assert summed["bytes"] == data.sum(axis=0).astype("<i4").tobytes()


# --- 4. upstream errors keep their code and message -------------------------------------------


def test_upstream_no_such_key_is_quoted(active_server: ActiveServer, moto_s3: S3) -> None:
    moto_s3.bucket(BUCKET)
    message = error(post(active_server, "sum", {"interface_type": "s3", "dtype": "int32",
                                                "url": f"{moto_s3.endpoint}/{BUCKET}/absent"}),
                    400)
    assert "NoSuchKey" in message and "does not exist" in message


def test_upstream_refusal_is_quoted(tight_server: ActiveServer,
                                    web_root: tuple[str, Path]) -> None:
    # moto accepts any credentials: the web upstream answers /denied/ as S3 refuses a read.
    message = error(post(tight_server, "sum", {"interface_type": "http", "dtype": "int32",
                                               "url": f"{web_root[0]}/public/denied/x"},
                         auth=None), 401)
    assert "AccessDenied: Access Denied" in message


@pytest.mark.parametrize("offset, size, inside", [
    (16, None, False), (20, None, False), (12, 8, False), (8, None, True), (0, None, True),
    (8, 8, True)])
def test_file_and_s3_answer_a_byte_range_alike(tight_server: ActiveServer, moto_s3: S3,
                                               hostile_root: Path, offset: int,
                                               size: int | None, inside: bool) -> None:
    """Issue 19: an offset at the end of a 16-byte file, with no size, was 200 and an empty
    result on ``file`` and 400 on ``s3``."""
    data = np.arange(4, dtype="<i4").tobytes()
    moto_s3.bucket(BUCKET)
    moto_s3.client.put_object(Bucket=BUCKET, Key="range.bin", Body=data)
    (hostile_root / "range.bin").write_bytes(data)
    fields = {"dtype": "int32", "offset": offset, **({} if size is None else {"size": size})}
    s3 = post(tight_server, "sum", {"interface_type": "s3",
                                    "url": f"{moto_s3.endpoint}/{BUCKET}/range.bin", **fields})
    file = post(tight_server, "sum", file_body(hostile_root, "range.bin", **fields))
    if inside:
        assert ok(s3) == ok(file)
    else:
        error(s3, 400)
        error(file, 400)


# --- 5. the whole request is validated before anything is read -------------------------------


@pytest.mark.parametrize("fields, field", [
    ({"shape": []}, "shape"),
    ({"shape": [0]}, "shape"),
    ({"selection": [[0, 1, 1]]}, "selection"),
    ({"shape": [2], "size": 12}, "size"),
    ({"missing": {"missing_value": -1.0}}, "missing.missing_value"),
    ({"missing": {"valid_range": [1.0, 2.0]}}, "missing.valid_range"),
    ({"missing": {"valid_range": [5, 5]}}, "missing: valid_range [5, 5]: min must be less"),
    ({"shape": [2], "axis": 1}, "axis"),
    ({"codecs": [{"id": "shuffle", "elementsize": 0}]}, "codecs"),
])
def test_invalid_requests_fail_before_any_read(active_server: ActiveServer, moto_s3: S3,
                                               fields: dict[str, Any], field: str) -> None:
    before = upstream_reads(active_server)
    body = {"interface_type": "s3", "dtype": "int32",
            "url": f"{moto_s3.endpoint}/{BUCKET}/whatever", **fields}
    message = error(post(active_server, "sum", body), 400)
    assert message.startswith(field) or f" {field}" in message or field in message.split(":")[0]
    assert "ChunkRequest" not in message and "validation error" not in message
    assert upstream_reads(active_server) == before


# --- 6. forged blosc / blosc2 headers --------------------------------------------------------


def _forged(chunk: bytes, keep: int, cbytes: int) -> bytes:
    forged = bytearray(chunk[:keep])
    struct.pack_into("<i", forged, 12, cbytes)
    return bytes(forged)


@pytest.mark.parametrize("codec", ["blosc", "blosc2"])
def test_forged_blosc_headers_are_refused_and_leak_nothing(tight_server: ActiveServer,
                                                           hostile_root: Path,
                                                           codec: str) -> None:
    data = np.arange(256, dtype="<i4").tobytes()
    chunk = (numcodecs.Blosc(cname="lz4").encode(data) if codec == "blosc"
             else Blosc2(typesize=4).encode(data))
    forgeries = {"cbytes-past-the-end": _forged(chunk, 20, 65536),
                 "truncated": chunk[:len(chunk) - 7],
                 "cbytes-short": _forged(chunk, len(chunk), len(chunk) - 1)}
    for name, forged in forgeries.items():
        (hostile_root / f"{name}.{codec}").write_bytes(forged)
        for op in ("select", "sum"):
            body = file_body(hostile_root, f"{name}.{codec}", dtype="int32", shape=[256],
                             codecs=[{"id": codec}])
            message = error(post(tight_server, op, body), 400)
            assert "cannot decode" in message, (name, message)
    assert tight_server.process.poll() is None
    ok(post(tight_server, "sum", file_body(hostile_root, f"truncated.{codec}", dtype="int32",
                                           offset=0, size=8)))


# --- 7. every codec stops at the expected size ------------------------------------------------


def _bombs() -> dict[str, tuple[bytes, list[dict[str, Any]]]]:
    zeros = bytes(64 * MiB)
    zlib_twice = zlib.compress(zlib.compress(zeros, 9), 9)
    return {
        "bz2": (bz2.compress(zeros, 9), [{"id": "bz2"}]),
        "zstd": (numcodecs.Zstd(level=3).encode(zeros), [{"id": "zstd"}]),
        "lz4": (numcodecs.LZ4().encode(zeros), [{"id": "lz4"}]),
        "lzma": (lzma.compress(zeros, preset=0), [{"id": "lzma"}]),
        "blosc": (numcodecs.Blosc(cname="zstd").encode(zeros), [{"id": "blosc"}]),
        "blosc2": (Blosc2().encode(zeros), [{"id": "blosc2"}]),
        "zlib-twice": (zlib_twice, [{"id": "zlib"}, {"id": "zlib"}]),
        "astype-widening": (zlib.compress(bytes(4 * MiB)),
                            [{"id": "astype", "encode_dtype": "u1", "decode_dtype": "<f8"},
                             {"id": "zlib"}]),
        "fixedscaleoffset-widening": (zlib.compress(bytes(4 * MiB)),
                                      [{"id": "fixedscaleoffset", "offset": 0, "scale": 1,
                                        "dtype": "<f8", "astype": "u1"}, {"id": "zlib"}]),
    }


def test_decompression_bombs_stop_at_the_expected_size(tight_server: ActiveServer,
                                                       hostile_root: Path) -> None:
    before = rss(tight_server)
    for name, (stored, codecs) in _bombs().items():
        (hostile_root / f"{name}.bomb").write_bytes(stored)
        body = file_body(hostile_root, f"{name}.bomb", dtype="float64", shape=[128],
                         codecs=codecs)
        error(post(tight_server, "sum", body), 400)
        shapeless = {k: v for k, v in body.items() if k != "shape"}
        error(post(tight_server, "sum", shapeless), 400)  # bounded by max-decoded-bytes
        assert rss(tight_server) - before < 40 * MiB, name


# --- 8. memory permits in bytes ---------------------------------------------------------------


class _PeakRss:
    """Samples a process's RSS in a thread until stopped; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _concatenated_requests(root: Path, codec: str, member_bytes: int) -> list[dict[str, Any]]:
    """Two requests for the issue-19 object of ``codec``: 4 KiB of uint32 in one stream, then
    eight streams of ``member_bytes`` zeros; shaped [1024] and shapeless."""
    name = f"{codec}.concatenated"
    (root / name).write_bytes(concatenated(codec, np.arange(1024, dtype="<u4"), member_bytes))
    shaped = file_body(root, name, dtype="uint32", shape=[1024], codecs=[{"id": codec}])
    return [shaped, {k: v for k, v in shaped.items() if k != "shape"}]


#: Each codec's streams of zeros after the first: 256 MiB for zstd (the issue's 64 KiB object),
#: 64 MiB where compressing more would slow the suite.
CONCATENATED = {"zstd": 256 * MiB, "lz4": 64 * MiB, "gzip": 64 * MiB, "bz2": 64 * MiB,
                "lzma": 64 * MiB}


@pytest.mark.parametrize("codec", CONCATENATED)
def test_streams_after_the_first_are_refused_not_decoded(tight_server: ActiveServer,
                                                         hostile_root: Path,
                                                         codec: str) -> None:
    """Issue 19: one such zstd object took the RSS to 2 GiB, two at once to 2.5 GiB; here two
    requests at once (the server's --max-inflight), shaped and shapeless."""
    requests_ = _concatenated_requests(hostile_root, codec, CONCATENATED[codec]) * 2
    before = rss(tight_server)
    with _PeakRss(tight_server.process.pid) as peak, ThreadPoolExecutor(2) as pool:
        responses = list(pool.map(lambda body: post(tight_server, "sum", body), requests_))
    for response in responses:
        message = error(response, 400)
        assert "cannot decode" in message and ("one" in message or codec == "lz4"), message
    grown, kept = peak.peak - before, rss(tight_server) - before
    assert grown < 100 * MiB and kept < 100 * MiB, (grown // MiB, kept // MiB)


def test_a_zlib_chunk_is_its_first_stream(tight_server: ActiveServer,
                                          hostile_root: Path) -> None:
    """As numcodecs' Zlib, HDF5's deflate filter and Reductionist read it: the rest is skipped,
    never inflated."""
    before = rss(tight_server)
    with _PeakRss(tight_server.process.pid) as peak:
        for body in _concatenated_requests(hostile_root, "zlib", 64 * MiB):
            assert values(ok(post(tight_server, "sum", body)))[()] == sum(range(1024))
    assert peak.peak - before < 100 * MiB


def test_a_big_batch_is_held_to_the_memory_budget(tight_server: ActiveServer,
                                                  hostile_root: Path) -> None:
    data = np.arange(128 * 1024, dtype="<f8")  # 1 MiB, read whole by every item
    (hostile_root / "whole.bin").write_bytes(data.tobytes())
    items = [{"op": "sum", **file_body(hostile_root, "whole.bin", dtype="float64",
                                       shape=[data.size])} for _ in range(300)]
    before = rss(tight_server)
    with _PeakRss(tight_server.process.pid) as peak:
        response = requests.post(f"{tight_server.url}/v2/batch", json={"requests": items},
                                 timeout=120)
    results = ok(response)
    refused = [r for r in results if "status" in r]
    assert not refused, refused[:2]
    assert [values(r)[()] for r in results] == [data.sum()] * 300
    # 300 MiB read and 900 MiB decoded in all; the budget is 48 MiB.
    assert peak.peak - before < 48 * MiB + 48 * MiB


def test_batch_results_beyond_the_budget_are_refused_not_held(tight_server: ActiveServer,
                                                              hostile_root: Path) -> None:
    data = np.arange(128 * 1024, dtype="<f8")
    (hostile_root / "whole.bin").write_bytes(data.tobytes())
    items = [{"op": "select", **file_body(hostile_root, "whole.bin", dtype="float64",
                                          shape=[data.size])} for _ in range(80)]
    before = rss(tight_server)
    with _PeakRss(tight_server.process.pid) as peak:
        results = ok(requests.post(f"{tight_server.url}/v2/batch", json={"requests": items},
                                   timeout=120))
    statuses = [r.get("status", 200) for r in results]
    assert set(statuses) <= {200, 413, 503} and 200 in statuses and 503 in statuses
    assert peak.peak - before < 48 * MiB + 64 * MiB


def test_a_chunk_decoding_past_the_limit_is_refused_before_reading(
        tight_server: ActiveServer, hostile_root: Path) -> None:
    before = upstream_reads(tight_server)
    items = [{"op": "sum", **file_body(hostile_root, "whole.bin", dtype="float64",
                                       shape=[2048, 1024])}]
    [result] = ok(requests.post(f"{tight_server.url}/v2/batch", json={"requests": items},
                                timeout=30))
    assert result["status"] == 400 and "over the limit" in result["error"]["message"]
    assert upstream_reads(tight_server) == before


# --- 9. slow clients hold no slot; health reflects saturation --------------------------------


def _slow_client(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /v2/sum HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{")
    return sock


def test_slow_clients_hold_no_slot(tight_server: ActiveServer, hostile_root: Path) -> None:
    (hostile_root / "small.bin").write_bytes(np.arange(4, dtype="<i4").tobytes())
    slow = [_slow_client(tight_server.url) for _ in range(64)]
    try:
        body = file_body(hostile_root, "small.bin", dtype="int32")
        assert values(ok(post(tight_server, "sum", body)))[()] == 6
        assert requests.get(f"{tight_server.url}/healthz", timeout=5).status_code == 200
        answer = slow[0].recv(200)  # the body timeout (1 s) ends them
        assert answer.startswith(b"HTTP/1.1 408")
    finally:
        for sock in slow:
            sock.close()
    gone = _slow_client(tight_server.url)
    gone.close()  # a client leaving mid-body is no server bug
    time.sleep(0.3)
    assert "server bug" not in tight_server.output()


def test_healthz_says_503_while_saturated(tight_server: ActiveServer,
                                          web_root: tuple[str, Path]) -> None:
    body = {"interface_type": "http", "url": f"{web_root[0]}/public/slow/x", "dtype": "uint32"}
    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post, tight_server, "sum", body, auth=None) for _ in range(2)]
        time.sleep(0.5)  # both slots taken, each waiting 1.5 s for the upstream
        assert requests.get(f"{tight_server.url}/healthz", timeout=5).status_code == 503
        error(post(tight_server, "sum", body, auth=None), 503)
        assert [f.result().status_code for f in held] == [200, 200]
    assert requests.get(f"{tight_server.url}/healthz", timeout=5).status_code == 200


# --- 10. no escape from an upstream prefix -----------------------------------------------------

ESCAPES = ["../secret.bin", "..%2Fsecret.bin", "..%2fsecret.bin", "%2e%2e/secret.bin",
           "%2E%2E%2Fsecret.bin", ".%2e/secret.bin", "..%5Csecret.bin", "..\\secret.bin",
           "x/../../secret.bin", "x/..%2F..%2Fsecret.bin", "%2e%2e%5csecret.bin",
           "./../secret.bin", "%2e/%2e%2e/secret.bin", "..;/secret.bin", "..%00/secret.bin",
           "..%252Fsecret.bin", "%252e%252e/secret.bin", "....//secret.bin",
           "..%c0%afsecret.bin", "%2e%2e%2f%2e%2e%2fsecret.bin"]


def test_upstream_prefix_cannot_be_escaped(tight_server: ActiveServer,
                                           web_root: tuple[str, Path]) -> None:
    url, root = web_root
    start = len(WebAsked.paths)
    statuses = []
    for escape in ESCAPES:
        response = post(tight_server, "select", {"interface_type": "http", "dtype": "uint8",
                                                 "url": f"{url}/public/{escape}"}, auth=None)
        statuses.append(response.status_code)
        assert b"SECRET" not in response.content, escape
    assert all(s in (400, 403) for s in statuses), list(zip(ESCAPES, statuses, strict=True))
    asked = WebAsked.paths[start:]
    # What the upstream reads: its path decoded once and normalised, as a web server does.
    assert all(posixpath.normpath(unquote(p)).startswith("/public/") for p in asked), asked


# --- 11. allowed roots: no links, no FIFOs, no races --------------------------------------------


def test_symbolic_links_and_special_files_are_refused(tight_server: ActiveServer,
                                                      hostile_root: Path,
                                                      tmp_path: Path) -> None:
    (tmp_path / "outside.bin").write_bytes(b"OUTSIDE!")
    os.symlink(tmp_path / "outside.bin", hostile_root / "link.bin")
    os.symlink(tmp_path, hostile_root / "linkdir")
    os.mkfifo(hostile_root / "fifo")
    try:
        for name, status in (("link.bin", 403), ("linkdir/outside.bin", 403), ("fifo", 400),
                             (".", 403), ("", 403)):
            started = time.monotonic()
            error(post(tight_server, "select", file_body(hostile_root, name, dtype="uint8")),
                  status)
            assert time.monotonic() - started < 5
    finally:
        for name in ("link.bin", "linkdir", "fifo"):
            os.unlink(hostile_root / name)


def test_swapping_a_directory_for_a_link_never_reads_outside(tight_server: ActiveServer,
                                                             hostile_root: Path,
                                                             tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.bin").write_bytes(b"OUTSIDE!")
    inside = hostile_root / "swap"
    inside.mkdir()
    (inside / "x.bin").write_bytes(b"inside!!")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.rename(inside, hostile_root / "swap.real")
            os.symlink(outside, inside)
            os.unlink(inside)
            os.rename(hostile_root / "swap.real", inside)

    swapper = threading.Thread(target=swap, daemon=True)
    swapper.start()
    try:
        body = file_body(hostile_root, "swap/x.bin", dtype="uint8")
        with ThreadPoolExecutor(2) as pool:  # the server's two slots
            answers = list(pool.map(lambda _: post(tight_server, "select", body), range(300)))
    finally:
        stop.set()
        swapper.join()
    assert {a.status_code for a in answers} <= {200, 400, 403}
    assert not any(b"OUTSIDE" in a.content for a in answers)
    shutil.rmtree(inside, ignore_errors=True)


# --- 12. a genuine bug is a 500, logged with its traceback ------------------------------------


@pytest.fixture
def in_process_server(served_root: Path) -> Iterator[str]:
    """The application served in this process (so that a bug can be injected into it)."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(ServerConfig(roots=(str(served_root),))))
    sock = listening_socket()
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port_of(sock)}"
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_a_bug_is_a_500_with_its_traceback_logged(in_process_server: str, served_root: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (served_root / "bug.bin").write_bytes(bytes(8))
    body = json.dumps(file_body(served_root, "bug.bin", dtype="int32"))

    def broken(*args: Any) -> Any:
        raise KeyError("an injected bug")

    monkeypatch.setattr("activezarr.servers.active.service.execute", broken)
    with caplog.at_level(logging.ERROR, logger="activezarr.server"):
        response = requests.post(f"{in_process_server}/v2/sum", data=body, timeout=10)
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/json"
    [record] = [r for r in caplog.records if r.name == "activezarr.server"]
    assert record.exc_info is not None and "an injected bug" in str(record.exc_info[1])


def test_decode_and_validation_errors_stay_400(in_process_server: str,
                                               served_root: Path) -> None:
    (served_root / "junk.bin").write_bytes(b"not zlib at all")
    body = file_body(served_root, "junk.bin", dtype="int32", shape=[4],
                     compression={"id": "zlib"})
    assert requests.post(f"{in_process_server}/v2/sum", json=body, timeout=10).status_code == 400


# --- 13. ports are bound before the server starts ----------------------------------------------


def test_the_port_is_held_from_choice_to_start(tmp_path: Path) -> None:
    sock = listening_socket()
    competitor = socket.socket()
    with pytest.raises(OSError):
        competitor.bind(("127.0.0.1", port_of(sock)))
    competitor.close()
    sock.close()
    with start_active_server(tmp_path) as server:
        assert requests.get(f"{server.url}/healthz", timeout=5).ok

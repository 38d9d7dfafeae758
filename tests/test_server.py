"""The active server as a real process: PROTOCOL.md's endpoints, statuses, semantics and limits."""

from __future__ import annotations

import contextlib
import http.server
import json
import random
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import requests

from activezarr.protocol import ChunkRequest
from activezarr.servers.active.coalesce import plan_reads
from s3_servers import KEY, S3, SECRET, ActiveServer, free_port, start_active_server
from server_client import error, ok, post, values

BUCKET = "server-tests"


@pytest.fixture(scope="module")
def objects(moto_s3: S3) -> dict[str, str]:
    """Object URLs by name, uploaded once."""
    client = moto_s3.client
    moto_s3.bucket(BUCKET)
    grid = np.arange(24, dtype=np.float64).reshape(4, 6)
    bodies = {
        "vector": bytes(range(1, 9)),
        "grid": grid.tobytes(),
        "grid.zlib": zlib.compress(grid.tobytes()),
        "bomb": zlib.compress(bytes(200 * 2**20), 9),
    }
    for name, body in bodies.items():
        client.put_object(Bucket=BUCKET, Key=name, Body=body)
    return {name: f"{moto_s3.endpoint}/{BUCKET}/{name}" for name in bodies}


# --- a deliberately faulty upstream, for what a healthy store never does --------------------


class _Faults(http.server.BaseHTTPRequestHandler):
    """``/slow/...`` answers after a pause; anything else refuses the credentials."""

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/slow/"):
            time.sleep(1.5)
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(bytes(8))
        else:
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Counting(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 8 bytes after 0.2 s, keeping the most GETs it served at once."""

    lock = threading.Lock()
    now = most = 0

    def do_GET(self) -> None:  # noqa: N802
        with self.lock:
            type(self).now += 1
            type(self).most = max(self.most, self.now)
        time.sleep(0.2)
        with self.lock:
            type(self).now -= 1
        self.send_response(200)
        self.send_header("Content-Length", "8")
        self.end_headers()
        self.wfile.write(bytes(range(8)))

    def log_message(self, *args: Any) -> None:
        pass


def test_upstream_reads_are_bounded_and_their_timeout_starts_when_sent(
        tmp_path: Path) -> None:
    """Eight objects, two reads at a time, 0.2 s each: 0.8 s in all, over the 0.5 s a read
    may take, yet every read is answered (waiting for a turn is not reading)."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{upstream.server_address[1]}"
    try:
        with start_active_server(tmp_path, env={"ACTIVEZARR_UPSTREAM": url,
                                                "ACTIVEZARR_UPSTREAM_READS": "2",
                                                "ACTIVEZARR_UPSTREAM_TIMEOUT": "0.5"}) as server:
            items = [{"op": "sum", "interface_type": "http", "url": f"{url}/{i}",
                      "dtype": "uint8"} for i in range(8)]
            results = ok(requests.post(f"{server.url}/v2/batch", json={"requests": items},
                                       timeout=30))
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert [values(r)[()] for r in results] == [28] * 8
    assert _Counting.most == 2


@pytest.fixture(scope="module")
def faulty_upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Faults)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def narrow_server(faulty_upstream: str, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ActiveServer]:
    """One request at a time; upstreams: the faulty one and a port nothing listens on."""
    closed = f"http://127.0.0.1:{free_port()}"
    with start_active_server(tmp_path_factory.mktemp("narrow"),
                             env={"ACTIVEZARR_UPSTREAM": f"{faulty_upstream} "
                                                         f"http://unreachable.example={closed}",
                                  "ACTIVEZARR_MAX_INFLIGHT": "1"}) as server:
        yield server


# --- endpoints ------------------------------------------------------------------------------


def test_healthz_answers_when_ready(active_server: ActiveServer) -> None:
    assert requests.get(f"{active_server.url}/healthz", timeout=5).status_code == 200


def test_capability_document_lists_the_extensions(active_server: ActiveServer) -> None:
    document = requests.get(f"{active_server.url}/.well-known/reductionist-schema",
                            timeout=5).json()
    assert {"stats", "batch", "codecs"} <= set(document["extensions"])
    assert "pickle" not in document["codecs"] and "zlib" in document["codecs"]
    assert document["limits"]["max_body"] == 256 * 1024
    assert "file" in document["interface_types"]


def test_reductionist_test_vector(active_server: ActiveServer, objects: dict[str, str]) -> None:
    result = ok(post(active_server, "sum", {"interface_type": "s3", "url": objects["vector"],
                                            "dtype": "uint32", "byte_order": "little"}))
    assert result["dtype"] == "uint32" and result["shape"] == [] and result["count"] == [2]
    assert values(result)[()] == 201984006


def test_big_endian_reads_the_same_bytes_the_other_way(active_server: ActiveServer,
                                                       objects: dict[str, str]) -> None:
    result = ok(post(active_server, "max", {"interface_type": "s3", "url": objects["vector"],
                                            "dtype": "uint32", "byte_order": "big"}))
    assert values(result)[()] == 0x05060708


def test_trailing_slash_is_accepted(active_server: ActiveServer,
                                    objects: dict[str, str]) -> None:
    ok(post(active_server, "count/", {"interface_type": "s3", "url": objects["vector"],
                                      "dtype": "uint32"}))


@pytest.mark.parametrize("op", ["count", "sum", "min", "max"])
@pytest.mark.parametrize("axis", [None, 0, [1], [0, 1]])
def test_ranged_reads_with_selection_axis_and_missing_match_numpy(
        active_server: ActiveServer, objects: dict[str, str], op: str, axis: Any) -> None:
    grid = np.arange(24, dtype=np.float64).reshape(4, 6)
    body = {"interface_type": "s3", "url": objects["grid"], "dtype": "float64",
            "offset": 6 * 8, "size": 18 * 8, "shape": [3, 6], "selection": [[0, 3, 1], [5, 0, -2]],
            "missing": {"valid_range": [7, 20]}, "axis": axis}
    data = np.ma.masked_outside(grid[1:][:, 5:0:-2], 7, 20)
    result = ok(post(active_server, op, body))
    want = np.ma.count(data, axis=None if axis is None else tuple(np.atleast_1d(axis)))
    assert result["count"] == np.ravel(want).tolist()
    if op != "count":
        expected = getattr(data, op)(axis=None if axis is None else tuple(np.atleast_1d(axis)))
        np.testing.assert_array_equal(values(result), np.ma.getdata(expected))


def test_compressed_chunk_via_v2_compression_field(active_server: ActiveServer,
                                                   objects: dict[str, str]) -> None:
    result = ok(post(active_server, "sum", {"interface_type": "s3", "url": objects["grid.zlib"],
                                            "dtype": "float64", "shape": [4, 6],
                                            "compression": {"id": "zlib"}}))
    assert values(result)[()] == sum(range(24))


def test_blosc2_compression(active_server: ActiveServer, served_root: Path) -> None:
    blosc2 = pytest.importorskip("blosc2")
    grid = np.arange(24, dtype="<f4").reshape(4, 6)
    (served_root / "grid.blosc2").write_bytes(blosc2.compress(grid, typesize=4))
    result = ok(post(active_server, "max", {"interface_type": "file",
                                            "url": f"file://{served_root}/grid.blosc2",
                                            "dtype": "float32", "shape": [4, 6], "axis": 0,
                                            "compression": {"id": "blosc2"}}))
    np.testing.assert_array_equal(values(result), grid.max(axis=0))


def test_blosc2_header_announcing_too_much_is_refused(active_server: ActiveServer,
                                                      served_root: Path) -> None:
    blosc2 = pytest.importorskip("blosc2")
    (served_root / "big.blosc2").write_bytes(blosc2.compress(bytes(2**20), typesize=4))
    response = post(active_server, "sum", {"interface_type": "file",
                                           "url": f"file://{served_root}/big.blosc2",
                                           "dtype": "float32", "shape": [256],
                                           "compression": {"id": "blosc2"}})
    assert response.status_code == 400
    assert "announces 1048576 bytes, allowed 0 to 1024" in response.json()["error"]["message"]


def test_select_returns_the_selected_elements(active_server: ActiveServer,
                                              objects: dict[str, str]) -> None:
    result = ok(post(active_server, "select", {"interface_type": "s3", "url": objects["grid"],
                                               "dtype": "float64", "shape": [4, 6],
                                               "selection": [[1, 3, 1], [0, 6, 2]]}))
    grid = np.arange(24, dtype=np.float64).reshape(4, 6)
    np.testing.assert_array_equal(values(result), grid[1:3, ::2])


def test_stats_gives_every_moment_in_one_round_trip(active_server: ActiveServer,
                                                    objects: dict[str, str]) -> None:
    result = ok(post(active_server, "stats", {"interface_type": "s3", "url": objects["grid"],
                                              "dtype": "float64", "shape": [4, 6], "axis": 1}))
    grid = np.arange(24, dtype=np.float64).reshape(4, 6)
    np.testing.assert_array_equal(np.frombuffer(result["sum"], "<f8"), grid.sum(axis=1))
    np.testing.assert_allclose(np.frombuffer(result["m2"], "<f8"), grid.var(axis=1) * 6)


def test_batch_answers_each_request_alone(active_server: ActiveServer,
                                          objects: dict[str, str]) -> None:
    good = {"op": "sum", "interface_type": "s3", "url": objects["vector"], "dtype": "uint32"}
    bad = {**good, "codecs": [{"id": "pickle"}]}
    response = requests.post(f"{active_server.url}/v2/batch", json={"requests": [good, bad]},
                             auth=(KEY, SECRET), timeout=30)
    first, second = ok(response)
    assert values(first)[()] == 201984006
    assert second["status"] == 400 and "not allowed" in second["error"]["message"]


def test_file_interface_reads_under_an_allowed_root(active_server: ActiveServer,
                                                    served_root: Path) -> None:
    (served_root / "vector.bin").write_bytes(bytes(range(1, 9)))
    result = ok(post(active_server, "sum", {"interface_type": "file",
                                            "url": f"file://{served_root}/vector.bin",
                                            "dtype": "uint32", "byte_order": "little"}))
    assert values(result)[()] == 201984006


def test_metrics_count_requests_errors_and_bytes(active_server: ActiveServer,
                                                 objects: dict[str, str]) -> None:
    ok(post(active_server, "sum", {"interface_type": "s3", "url": objects["vector"],
                                   "dtype": "uint32"}))  # counted even when this test runs alone
    post(active_server, "nosuchop", {})
    text = requests.get(f"{active_server.url}/metrics", timeout=5).text
    assert 'activezarr_requests_total{op="sum"}' in text
    assert 'activezarr_errors_total{status="404"}' in text
    assert "activezarr_upstream_bytes_total" in text and "activezarr_request_seconds" in text


# --- every status of PROTOCOL.md's table ------------------------------------------------------


def test_400_malformed_json(active_server: ActiveServer) -> None:
    error(post(active_server, "sum", None, raw=b'{"interface_type": "s3", '), 400)


def test_400_unknown_field(active_server: ActiveServer, objects: dict[str, str]) -> None:
    message = error(post(active_server, "sum", {"interface_type": "s3", "url": objects["vector"],
                                                "dtype": "uint32", "colour": "blue"}), 400)
    assert "colour" in message


def test_400_decoded_size_mismatch(active_server: ActiveServer, objects: dict[str, str]) -> None:
    error(post(active_server, "sum", {"interface_type": "s3", "url": objects["vector"],
                                      "dtype": "uint32", "shape": [3]}), 400)


def test_400_object_not_found(active_server: ActiveServer, moto_s3: S3,
                              objects: dict[str, str]) -> None:
    message = error(post(active_server, "sum", {"interface_type": "s3", "dtype": "uint32",
                                                "url": f"{moto_s3.endpoint}/{BUCKET}/absent"}),
                    400)
    assert "not found" in message


def test_400_pickle_codec_is_not_allowed(active_server: ActiveServer,
                                         objects: dict[str, str]) -> None:
    message = error(post(active_server, "sum", {"interface_type": "s3", "url": objects["vector"],
                                                "dtype": "uint32", "shape": [2],
                                                "codecs": [{"id": "pickle"}]}), 400)
    assert "not allowed" in message


def test_401_object_store_refuses_anonymous_reads(active_server: ActiveServer,
                                                  objects: dict[str, str]) -> None:
    error(post(active_server, "sum", {"interface_type": "s3", "url": objects["vector"],
                                      "dtype": "uint32"}, auth=None), 401)


def test_401_http_upstream_refuses_credentials(narrow_server: ActiveServer,
                                               faulty_upstream: str) -> None:
    error(post(narrow_server, "sum", {"interface_type": "http", "url": f"{faulty_upstream}/x",
                                      "dtype": "uint32"}, auth=("user", "wrong")), 401)


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data",
                                 "{endpoint}/../other/key", "{endpoint}/b/%2e%2e/key",
                                 "http://localhost:{port}/bucket/key"])
def test_403_url_outside_the_upstreams(active_server: ActiveServer, moto_s3: S3,
                                       url: str) -> None:
    port = moto_s3.endpoint.rsplit(":", 1)[1]
    error(post(active_server, "sum", {"interface_type": "s3", "dtype": "uint32",
                                      "url": url.format(endpoint=moto_s3.endpoint, port=port)}),
          403)


def test_403_file_outside_the_roots(active_server: ActiveServer, served_root: Path,
                                    tmp_path: Path) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(bytes(8))
    (served_root / "link.bin").symlink_to(outside)
    for url in (f"file://{outside}", f"file://{served_root}/link.bin", "/etc/passwd"):
        error(post(active_server, "sum", {"interface_type": "file", "url": url,
                                          "dtype": "uint32"}), 403)


def test_404_unknown_operation(active_server: ActiveServer) -> None:
    assert "unknown operation" in error(post(active_server, "median", {}), 404)


def test_413_body_over_the_limit(active_server: ActiveServer, objects: dict[str, str]) -> None:
    body = {"interface_type": "s3", "url": objects["vector"], "dtype": "uint32",
            "missing": {"missing_values": list(range(100_000))}}
    error(post(active_server, "sum", body), 413)


def test_413_chunk_over_the_limit(active_server: ActiveServer, objects: dict[str, str]) -> None:
    error(post(active_server, "sum", {"interface_type": "s3", "url": objects["vector"],
                                      "dtype": "uint32", "size": 2**30}), 413)


def test_503_when_saturated(narrow_server: ActiveServer, faulty_upstream: str) -> None:
    body = {"interface_type": "http", "url": f"{faulty_upstream}/slow/x", "dtype": "uint32"}
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(post, narrow_server, "sum", body, auth=None)
        time.sleep(0.5)
        refused = post(narrow_server, "sum", body, auth=None)
        assert slow.result().status_code == 200
    error(refused, 503)


def test_503_when_the_object_store_is_unreachable(narrow_server: ActiveServer) -> None:
    error(post(narrow_server, "sum", {"interface_type": "s3", "dtype": "uint32",
                                      "url": "http://unreachable.example/bucket/key"}), 503)


# --- lifecycle ----------------------------------------------------------------------------------


def test_flags_come_from_the_environment_too(narrow_server: ActiveServer) -> None:
    document = requests.get(f"{narrow_server.url}/.well-known/reductionist-schema",
                            timeout=5).json()
    assert document["limits"]["max_inflight"] == 1


def test_serves_tls_with_the_given_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    with start_active_server(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key),
                             ca=cert) as server:
        assert requests.get(f"{server.url}/healthz", verify=str(cert), timeout=5).ok


def test_sigterm_shuts_down_cleanly(tmp_path: Path) -> None:
    with start_active_server(tmp_path) as server:
        pass
    assert server.process.returncode == 0, server.output()


# --- security ----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["zlib", "gzip"])
def test_decompression_bomb_stops_at_the_expected_size(active_server: ActiveServer,
                                                       objects: dict[str, str], codec: str
                                                       ) -> None:
    process = psutil.Process(active_server.process.pid)
    before = process.memory_info().rss
    body = {"interface_type": "s3", "url": objects["bomb"], "dtype": "uint32", "shape": [256]}
    body.update({"compression": {"id": "zlib"}} if codec == "zlib"
                else {"codecs": [{"id": "zlib", "level": 1}]})
    message = error(post(active_server, "sum", body), 400)
    assert "inflates past 1024 bytes" in message
    assert process.memory_info().rss - before < 32 * 2**20


def _malformed(rng: random.Random, url: str) -> bytes:
    """One random way of getting a request wrong."""
    valid: dict[str, Any] = {"interface_type": "s3", "url": url, "dtype": "uint32",
                             "shape": [2], "selection": [[0, 2, 1]], "axis": 0,
                             "missing": {"missing_value": 3}, "codecs": [{"id": "zlib"}]}
    junk = [None, True, -1, 0, 2**70, -(2**70), 1.5e308, "", "x" * 1000, [], {}, [[]],
            [[0, 0, 0]], {"id": "pickle"}, [{"id": "zlib", "level": "x"}],
            [{"id": "blosc", "cname": 5}], [{"id": "astype", "encode_dtype": "O",
                                             "decode_dtype": "O"}],
            [{"id": "fixedscaleoffset", "offset": 0, "scale": 1e300, "dtype": "f8"}],
            "file:///etc/passwd", "http://[::1", [2**40, 2**40], [-1], [0], "big"]
    kind = rng.randrange(6)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 1:
        text = json.dumps(valid)
        return text[:rng.randrange(len(text))].encode()
    if kind == 2:
        return (b"[" * rng.randrange(1, 5000)) + (b"]" * rng.randrange(5000))
    body = dict(valid)
    for _ in range(rng.randrange(1, 4)):
        key = rng.choice([*valid, "offset", "size", "byte_order", "order", "compression",
                          "filters", "accumulate", "unknown"])
        if kind == 3 and key in body:
            del body[key]
        else:
            body[key] = rng.choice(junk)
    return json.dumps(body).encode()


def test_random_malformed_bodies_never_get_a_5xx(active_server: ActiveServer,
                                                 objects: dict[str, str]) -> None:
    rng = random.Random(20261126)
    bodies = [_malformed(rng, objects["vector"]) for _ in range(300)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda b: post(active_server, "sum", None, raw=b).status_code,
                                 bodies))
    assert max(statuses) < 500, [b for b, s in zip(bodies, statuses) if s >= 500][:3]
    assert statuses.count(400) > 200
    test_reductionist_test_vector(active_server, objects)


def test_credentials_are_never_logged(active_server: ActiveServer,
                                      objects: dict[str, str]) -> None:
    ok(post(active_server, "sum", {"interface_type": "s3", "url": objects["vector"],
                                   "dtype": "uint32"}))
    with contextlib.suppress(Exception):
        post(active_server, "sum", {"interface_type": "s3", "dtype": "uint32",
                                    "url": objects["vector"], "shape": [5]})
    log = active_server.output()
    assert "POST /v2/sum" in log
    assert SECRET not in log and KEY not in log


# --- interoperability ----------------------------------------------------------------------------

NETCDF_VARIABLES = {"CMIP6-test.nc": "tas", "obs4MIPS_CERES-EBAF_L3B_Ed2-8_rlut.nc": "rlut",
                    "test1.nc": "tas", "cesm2_native.nc": "TREFHT", "daily_data_masked.nc": "ta"}


@pytest.mark.parametrize("name", sorted(NETCDF_VARIABLES))
def test_pyactivestorage_v2_client_gets_numpy_ma_answers(active_server: ActiveServer,
                                                         moto_s3: S3, netcdf_dir: Path,
                                                         name: str) -> None:
    """A client written for Reductionist (PyActiveStorage, API v2) cannot tell the difference."""
    active_module = pytest.importorskip("activestorage.active")
    netCDF4 = pytest.importorskip("netCDF4")
    moto_s3.client.upload_file(str(netcdf_dir / name), moto_s3.bucket("netcdf"), name)
    variable = NETCDF_VARIABLES[name]
    with netCDF4.Dataset(netcdf_dir / name) as dataset:
        data = dataset[variable][:].astype(np.float64)
    options = {"key": KEY, "secret": SECRET, "client_kwargs": {"endpoint_url": moto_s3.endpoint}}
    for method in ("mean", "min", "max", "sum"):
        active = active_module.Active(f"s3://netcdf/{name}", ncvar=variable,
                                      interface_type="s3", storage_options=options,
                                      active_storage_url=active_server.url)
        active._version = 2
        active.method = method
        np.testing.assert_allclose(np.ravel(active[:]), getattr(np.ma, method)(data), rtol=1e-6)


# --- batches read neighbouring ranges once ---------------------------------------------------


def test_neighbouring_ranges_of_one_object_are_planned_as_one_read() -> None:
    def ranged(url: str, offset: int, size: int) -> ChunkRequest:
        return ChunkRequest(interface_type="s3", url=url, dtype="uint8", offset=offset, size=size)

    requests_ = [(0, ranged("http://h/b/k", 100, 50)), (1, ranged("http://h/b/k", 0, 100)),
                 (2, ranged("http://h/b/other", 0, 10)), (3, ranged("http://h/b/k", 10**7, 8))]
    reads = plan_reads(requests_, max_bytes=2**20)
    spans = sorted((r.request.url, r.request.offset, r.request.size, sorted(r.parts))
                   for r in reads)
    assert spans == [("http://h/b/k", 0, 150, [(0, 100, 150), (1, 0, 100)]),
                     ("http://h/b/k", 10**7, 8, [(3, 0, 8)]),
                     ("http://h/b/other", 0, 10, [(2, 0, 10)])]


def test_batch_reads_the_rows_of_one_object_in_one_get(active_server: ActiveServer,
                                                       objects: dict[str, str]) -> None:
    def reads() -> float:
        text = requests.get(f"{active_server.url}/metrics", timeout=5).text
        line = next(x for x in text.splitlines() if x.startswith("activezarr_upstream_reads_total"))
        return float(line.split()[-1])

    rows = [{"op": "sum", "interface_type": "s3", "url": objects["grid"], "dtype": "float64",
             "offset": 48 * row, "size": 48, "shape": [6]} for row in range(4)]
    before = reads()
    response = requests.post(f"{active_server.url}/v2/batch", json={"requests": rows},
                             auth=(KEY, SECRET), timeout=30)
    sums = [values(result)[()] for result in ok(response)]
    assert sums == np.arange(24, dtype=np.float64).reshape(4, 6).sum(axis=1).tolist()
    assert reads() - before == 1

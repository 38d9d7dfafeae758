"""The simulated parallel file system's servers against hostile calls (issue 8): layouts and
ranges are validated, no two files share objects, and every call but /healthz needs the
cluster token."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import requests
import zarr
from aiohttp import web
from click.testing import CliRunner

import activezarr
from activezarr.errors import CredentialsError
from activezarr.ost import Cluster
from activezarr.ost.commands import ost
from activezarr.ost.wire.messages import MAX_STRIPES, TOKEN_HEADER, TOKEN_VARIABLE
from activezarr.protocol import HEALTH_PATH
from activezarr.servers.processes import listening_socket, port_of
from ost_cluster import write_array


def _call(cluster: Cluster, method: str, url: str, body: Any = None, token: bool = True,
          data: bytes | None = None) -> requests.Response:
    headers = {TOKEN_HEADER: cluster.token} if token else {}
    return requests.request(method, url, headers=headers, timeout=30,
                            data=data if data is not None else
                            None if body is None else json.dumps(body))


def _fs(cluster: Cluster, **options: Any) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("ost", host=cluster.mds.removeprefix("http://"),
                             skip_instance_cache=True, **options)


def _routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path) of every route of ``app``, each ``{variable}`` filled in."""
    return sorted({(route.method, re.sub(r"\{[^}]+\}", "x", route.resource.canonical))
                   for route in app.router.routes() if route.resource is not None})


def test_every_call_but_healthz_needs_the_cluster_token(ost_cluster: Cluster,
                                                         tmp_path: Path) -> None:
    """Walks each server's route table, so that a route added later is covered too."""
    from activezarr.ost.servers.mds import create_mds_app
    from activezarr.ost.servers.oss import create_oss_app
    from activezarr.ost.servers.target import create_target_app
    from activezarr.ost.wire.messages import ClusterMap

    apps = {
        ost_cluster.mds: create_mds_app(str(tmp_path / "mds.json"),
                                        ClusterMap(osts=ost_cluster.osts, stripe_size=1,
                                                   stripe_count=-1), "t"),
        ost_cluster.oss: create_oss_app(ost_cluster.mds, "t"),
        ost_cluster.osts[0]: create_target_app(str(tmp_path / "ost"), "t"),
    }
    asked = 0
    for server, app in apps.items():
        for method, path in _routes(app):
            for headers in ({}, {TOKEN_HEADER: "wrong"}):
                response = requests.request(method, server + path, headers=headers,
                                            data=b"{}", timeout=30)
                asked += 1
                if path == HEALTH_PATH:
                    assert response.status_code == 200
                    continue
                assert response.status_code == 401, (method, server + path)
                if method != "HEAD":
                    assert response.headers["Content-Type"] == "application/json"
                    assert TOKEN_HEADER in response.json()["error"]["message"]
    assert asked > 2 * 20  # the MDS's files calls, the objects, batches and reductions...


def test_the_ost_filesystem_passes_the_token(ost_cluster: Cluster) -> None:
    _fs(ost_cluster).pipe_file("token/ok.bin", b"written")
    assert _fs(ost_cluster).cat_file("token/ok.bin") == b"written"
    for call in (lambda fs: fs.cat_file("token/ok.bin"), lambda fs: fs.ls("token"),
                 lambda fs: fs.pipe_file("token/refused.bin", b"nope")):
        with pytest.raises(CredentialsError, match=rf"token=\.\.\.\) or set {TOKEN_VARIABLE}"):
            call(_fs(ost_cluster, token="wrong"))


def test_a_reduction_without_the_token_says_how_to_give_it(ost_cluster: Cluster) -> None:
    url = f"{ost_cluster.url}/token/array.zarr"
    write_array(url, np.arange(64.0), chunks=(16,))
    store = activezarr.ActiveStore.from_url(url, storage_options={"token": "wrong"},
                                            read_only=True)
    with pytest.raises(CredentialsError, match="cluster token"):
        activezarr.ActiveReduction(zarr.open_array(store, mode="r")).mean()


def test_an_alias_of_another_files_layout_cannot_be_committed(ost_cluster: Cluster) -> None:
    fs = _fs(ost_cluster)
    fs.pipe_file("victim.bin", b"precious data")
    layout = fs.info("victim.bin")["layout"]
    response = _call(ost_cluster, "POST", f"{ost_cluster.mds}/files/commit",
                     {"path": "alias.bin", "layout": layout})
    assert response.status_code == 400 and "not created here" in response.json()["error"]["message"]
    assert not fs.exists("alias.bin")
    assert fs.cat_file("victim.bin") == b"precious data"


def test_a_layout_is_committed_once(ost_cluster: Cluster) -> None:
    layout = _call(ost_cluster, "POST", f"{ost_cluster.mds}/files/create",
                   {"path": "once.bin", "size": 0}).json()
    first = _call(ost_cluster, "POST", f"{ost_cluster.mds}/files/commit",
                  {"path": "once.bin", "layout": layout})
    again = _call(ost_cluster, "POST", f"{ost_cluster.mds}/files/commit",
                  {"path": "twice.bin", "layout": layout})
    assert (first.status_code, again.status_code) == (200, 400)


@pytest.mark.parametrize("layout", [
    {"fid": "../../etc", "size": 1, "stripe_size": 1, "osts": [0]},
    {"fid": "a", "size": 1, "stripe_size": 1, "osts": [0, 0]},
    {"fid": "a", "size": 1, "stripe_size": 1, "osts": [-1]},
    {"fid": "a", "size": 1, "stripe_size": 0, "osts": [0]},
    {"fid": "a", "size": -5, "stripe_size": 1, "osts": [0]},
])
def test_malformed_layouts_are_refused(ost_cluster: Cluster, layout: dict[str, Any]) -> None:
    response = _call(ost_cluster, "POST", f"{ost_cluster.mds}/files/commit",
                     {"path": "bad.bin", "layout": layout})
    assert response.status_code == 400


def test_tiny_stripes_over_a_big_file_are_refused(ost_cluster: Cluster) -> None:
    started = time.monotonic()
    response = _call(ost_cluster, "POST", f"{ost_cluster.mds}/files/create",
                     {"path": "tiny.bin", "size": 2**30, "stripe_size": 1})
    assert response.status_code == 400 and str(MAX_STRIPES) in response.text
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("ranges", [[[-1, 4]], [[0, -4]], [[0, 2**40]], [[2**70, 1]],
                                    [[0, 1]] * (MAX_STRIPES + 1), "x"])
def test_reads_with_bad_ranges_are_400(ost_cluster: Cluster, ranges: Any) -> None:
    fs = _fs(ost_cluster)
    fs.pipe_file("ranges.bin", b"0123456789")
    layout = fs.info("ranges.bin")["layout"]
    ost = ost_cluster.osts[layout["osts"][0]]
    response = _call(ost_cluster, "POST", f"{ost}/objects/{layout['fid']}/read",
                     {"ranges": ranges})
    assert response.status_code == 400, response.text


def test_a_part_request_reaching_past_its_chunk_is_400(ost_cluster: Cluster) -> None:
    response = _call(ost_cluster, "POST", f"{ost_cluster.osts[0]}/v2/sum",
                     {"interface_type": "ost", "url": "http://x/objects/abc", "dtype": "int32",
                      "shape": [2], "extents": [[0, 16, 0]]})
    assert response.status_code == 400 and "past the chunk" in response.text


def test_the_oss_refuses_ranges_outside_the_file(ost_cluster: Cluster) -> None:
    _fs(ost_cluster).pipe_file("small.bin", bytes(16))
    response = _call(ost_cluster, "POST", f"{ost_cluster.oss}/v2/sum",
                     {"interface_type": "ost", "url": f"{ost_cluster.url}/small.bin",
                      "dtype": "int32", "offset": 8, "size": 16})
    assert response.status_code == 400 and "outside" in response.text


def test_a_busy_port_is_said_plainly(tmp_path: Path) -> None:
    with listening_socket() as busy:
        result = CliRunner().invoke(ost, ["start", "--root", str(tmp_path), "--port",
                                          str(port_of(busy))])
    assert result.exit_code == 1 and "cannot start the cluster" in result.output

"""A reduction from another distribution runs where the data is, on every backend.

The distribution is docs/PLUGINS.md's example, written to a directory with its dist-info and
put on the path of this process and of the servers started here (a real installed
distribution, found through its entry point). It keeps a state of its own (a count of values
above a threshold given with the request), which none of the built-in fields can hold.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import activezarr
from activezarr.chunk.reductions import plugin_operations, reductions
from activezarr.errors import FallbackWarning, UnknownReductionError
from activezarr.ost import Cluster, ClusterConfig
from activezarr.protocol import SCHEMA_PATH
from arrays import create
from runners import RUNNERS, on_s3
from s3_servers import S3, ActiveServer, start_active_server

DOCS = Path(__file__).parent.parent / "docs" / "PLUGINS.md"
NAME = "count_above"
THRESHOLD = 3.5


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """docs/PLUGINS.md's package installed as a distribution on this process's path and on
    the path of every server started while it is (``PYTHONPATH``)."""
    root = tmp_path_factory.mktemp("plugin")
    source = re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S)[0]
    (root / "az_exceed.py").write_text(source)
    info = root / "az_exceed-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: az-exceed\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[activezarr.reductions]\n{NAME} = az_exceed:CountAbove\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(root))
        patch.setenv("PYTHONPATH", os.pathsep.join(
            filter(None, [str(root), os.environ.get("PYTHONPATH")])))
        patch.setattr(reductions, "_loaded", False)  # scan the entry points again
        yield root
    reductions._pending.pop(NAME, None)
    reductions._plugins.pop(NAME, None)


@pytest.fixture(scope="module")
def plugin_server(plugin: Path, moto_s3: S3, tmp_path_factory: pytest.TempPathFactory
                  ) -> Iterator[ActiveServer]:
    """An active server told to load the plugin."""
    with start_active_server(tmp_path_factory.mktemp("plugin-server"), "--upstream",
                             moto_s3.endpoint, "--reductions", NAME) as server:
        yield server


@pytest.fixture(scope="module")
def plugin_cluster(plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """An OST cluster whose OSTs and OSS load the plugin."""
    config = ClusterConfig(root=tmp_path_factory.mktemp("plugin-ost"), osts=3,
                           stripe_size=4096, reductions=(NAME,))
    with Cluster(config) as cluster:
        yield cluster


def _data() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 8, size=(20, 30)).astype("<i4")


def _expected(data: np.ndarray, axis: Any) -> np.ndarray:
    valid = data != 7  # the fill value is missing
    return np.sum((data > THRESHOLD) & valid, axis=axis)


def _written(tmp_path: Path) -> Path:
    path = tmp_path / "a.zarr"
    create(path, _data(), layout="v3", codec="zstd", chunks=(8, 16), fill_value=7,
           attributes={"_FillValue": 7})
    return path


def _through(backend: str, path: Path, **fixtures: Any) -> zarr.Array:
    """The store at ``path`` opened through ``backend``, as the differential tests do."""
    return next(r for r in RUNNERS if r.name == backend).opener(path, fixtures)


@pytest.mark.parametrize("backend", ["file", "reference", "s3", "ost"])
def test_a_plugin_reduction_runs_storage_side_on_every_backend(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest, plugin: Path) -> None:
    fixtures = {"s3": {"moto_s3": request.getfixturevalue("moto_s3"),
                       "active_server": request.getfixturevalue("plugin_server")},
                "ost": {"ost_cluster": request.getfixturevalue("plugin_cluster")}}
    array = _through(backend, _written(tmp_path), **fixtures.get(backend, {}))
    red = activezarr.ActiveReduction(array, plain_when_cheaper=False)
    data = _data()
    labels = np.arange(30) % 4 - (np.arange(30) == 5)  # label -1: in no group
    for axis, options in ((None, {}), (0, {}), (1, {}), (0, {"groups": (1, labels)})):
        got = red.reduce(NAME, axis=axis, threshold=THRESHOLD, **options)
        if options:  # axis 0 reduced whole, axis 1 per group
            want = np.stack([_expected(data[:, labels == g], None) for g in range(4)])
        else:
            want = _expected(data, axis)
        np.testing.assert_array_equal(got, want)
        report = red.last_report
        assert report.backend == backend and report.fallbacks == 0, report.fallback_reasons


def test_a_server_not_told_to_load_it_is_answered_on_the_client_with_the_reason(
        tmp_path: Path, plugin: Path, moto_s3: S3, active_server: ActiveServer,
        plugin_server: ActiveServer) -> None:
    with urllib.request.urlopen(active_server.url + SCHEMA_PATH) as answer:
        assert NAME not in json.load(answer)["operations"]
    with urllib.request.urlopen(plugin_server.url + SCHEMA_PATH) as answer:
        assert json.load(answer)["operations"][-1] == NAME
    red = activezarr.ActiveReduction(on_s3(_written(tmp_path), moto_s3, active_server.url),
                                     plain_when_cheaper=False)
    with pytest.warns(FallbackWarning, match="does not serve the 'count_above' reduction"):
        got = red.reduce(NAME, axis=0, threshold=THRESHOLD)
    np.testing.assert_array_equal(got, _expected(_data(), 0))
    report = red.last_report
    assert report.fallbacks == report.chunks > 0
    assert list(report.fallback_reasons) == [
        "the active server cannot take this chunk: the server does not serve the "
        "'count_above' reduction"]


def test_an_ost_cluster_not_told_to_load_it_says_so_and_the_client_reduces(
        tmp_path: Path, plugin: Path, ost_cluster: Cluster) -> None:
    red = activezarr.ActiveReduction(_through("ost", _written(tmp_path), ost_cluster=ost_cluster),
                                     plain_when_cheaper=False)
    with pytest.warns(FallbackWarning, match="op 'count_above' is not served here"):
        got = red.reduce(NAME, axis=1, threshold=THRESHOLD)
    np.testing.assert_array_equal(got, _expected(_data(), 1))
    assert red.last_report.fallbacks == red.last_report.chunks


def test_a_server_refuses_to_start_with_a_plugin_that_is_not_installed(plugin: Path) -> None:
    assert plugin_operations([NAME]) == (NAME,)
    with pytest.raises(UnknownReductionError, match="no installed plugin reduction 'nope'"):
        plugin_operations(["nope"])


def test_the_plugins_parameters_are_checked_by_the_server(plugin_server: ActiveServer) -> None:
    body = {"interface_type": "s3", "url": "http://127.0.0.1:1/b/k", "dtype": "int32",
            "shape": [4], "params": {"threshold": "warm"}}
    call = urllib.request.Request(f"{plugin_server.url}/v2/{NAME}", json.dumps(body).encode(),
                                  {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(call)
    assert caught.value.code == 400
    assert "threshold" in json.load(caught.value)["error"]["message"]

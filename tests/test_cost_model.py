"""The cost model on every backend: the estimate made before a reduction is within a fifth of
what the run then reports (``bytes_from_storage``), for the cases issue 12 names, scaled down;
and where active loses, the planner reads plainly and says why. Byte counts, not times."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

import activezarr
from activezarr.commands.main import main
from activezarr.protocol import SCHEMA_PATH
from arrays import create
from runners import RUNNERS, Runner, fresh_name, s3_copy
from s3_servers import S3, ActiveServer

DAYS = 60
#: Month (0-11) of each day of a year starting on 1 January.
MONTHS = np.repeat(np.arange(12), [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])


@dataclass(frozen=True)
class Case:
    """An array (shape, chunks, rows of chunks written) and one reduction of it."""

    name: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    reduce: Callable[[activezarr.ActiveReduction], Any]
    written: int | None = None
    path: str = "active"
    shards: tuple[int, ...] | None = None


def _lat_weights(shape: tuple[int, ...]) -> np.ndarray:
    return np.cos(np.deg2rad(np.linspace(-80, 80, shape[1])))[:, None]


CASES = (
    Case("one chunk of 300", (300, 64), (1, 64), lambda r: r[5:6].mean()),
    Case("one chunk of 100,000, 20 written", (100_000, 64), (1, 64), lambda r: r[5:6].mean(),
         written=20),
    Case("daily time mean", (DAYS, 18, 36), (1, 18, 36), lambda r: r.mean(axis=0)),
    Case("whole mean", (16, 64, 64), (1, 64, 64), lambda r: r.mean()),
    Case("daily time mean, 10 days a shard", (DAYS, 18, 36), (1, 18, 36),
         lambda r: r.mean(axis=0), shards=(10, 18, 36)),
    Case("tiny chunks, nothing reduced", (64, 64), (16, 16), lambda r: r.sum(axis=()),
         path="plain"),
    Case("weighted global mean per step", (DAYS, 18, 36), (1, 18, 36),
         lambda r: r.reduce("weighted_mean", axis=(1, 2), weights=_lat_weights((DAYS, 18)))),
    Case("monthly climatology", (DAYS, 18, 36), (1, 18, 36),
         lambda r: r.reduce("mean", axis=0, groups=(0, MONTHS[:DAYS], 12))),
    Case("climatology, 24 steps a chunk", (48, 18, 36), (24, 18, 36),
         lambda r: r.reduce("mean", axis=0, groups=(0, np.arange(48) % 12, 12))),
)


def _write(path: Path, case: Case) -> np.ndarray:
    data = np.random.default_rng(12).normal(280, 5, case.shape).astype("float32")
    array = zarr.create_array(str(path), shape=case.shape, chunks=case.chunks,
                              shards=case.shards, dtype="float32", fill_value=0)
    rows = case.shape[0] if case.written is None else case.written
    array[:rows] = data[:rows]
    data[rows:] = 0
    return data


#: A plain Reductionist takes no zstd chunks: every chunk falls back to the client, which the
#: model does not price (it prices what the storage side answers).
MODELLED = [r for r in RUNNERS if r.name != "s3-reductionist"]


@pytest.mark.parametrize("runner", MODELLED, ids=[r.name for r in MODELLED])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_estimate_is_within_a_fifth_of_what_the_run_reports(
        tmp_path: Path, request: pytest.FixtureRequest, runner: Runner, case: Case) -> None:
    _write(tmp_path / "a.zarr", case)
    red = activezarr.ActiveReduction(runner.open(tmp_path / "a.zarr", request), missing=None)
    case.reduce(red)
    report = red.last_report
    assert report is not None and report.fallbacks == 0, report
    if case.path == "plain" and runner.name in ("s3", "ost"):
        assert report.backend == "plain" and "would move more" in report.plan_reason, report
    elif runner.name in ("file", "reference"):  # local: no link to save
        assert report.backend == runner.name and "nothing crosses" in report.plan_reason
    moved = report.bytes_from_storage
    assert abs(report.estimated_bytes - moved) <= 0.2 * moved, report


def test_grouped_partials_larger_than_their_chunks_are_read_plainly(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One chunk of 24 bytes per cell, each step its own group: its partials (a float64 sum
    per group and cell) outgrow it, and no other chunk shares their output region, so nothing
    merges them storage-side."""
    data = np.random.default_rng(12).integers(0, 256, (24, 18, 36)).astype("uint8")
    zarr.create_array(str(tmp_path / "a.zarr"), data=data, chunks=data.shape)
    ost = next(r for r in RUNNERS if r.name == "ost")
    red = activezarr.ActiveReduction(ost.open(tmp_path / "a.zarr", request), missing=None)
    got = red.reduce("mean", axis=0, groups=(0, np.arange(24), 24))
    np.testing.assert_allclose(got, data.astype("float64"), rtol=1e-12)
    report = red.last_report
    assert report.paths == {"plain": 1} and report.estimated_bytes > 0, report
    assert "would move more than a plain read" in report.plan_reason


def test_weights_sent_with_every_request_count_against_the_active_path(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Weights of every element travel as JSON numbers (about 20 bytes each, against 4 stored):
    the report counts the bytes from storage, the choice also what is sent."""
    case = CASES[2]
    data = _write(tmp_path / "a.zarr", case)
    s3 = next(r for r in RUNNERS if r.name == "s3")
    red = activezarr.ActiveReduction(s3.open(tmp_path / "a.zarr", request), missing=None)
    weights = np.random.default_rng(1).uniform(0.5, 1, case.shape)
    plan = red.plan("weighted_mean", axis=0, weights=weights)
    assert plan is not None and plan.path == "plain" and plan.request_bytes > data.nbytes
    assert plan.active_bytes < plan.plain_bytes  # the answers alone would be smaller
    got = red.reduce("weighted_mean", axis=0, weights=weights)
    np.testing.assert_allclose(got, (data * weights).sum(0) / weights.sum(0), rtol=1e-5)
    assert red.last_report.backend == "plain"
    assert "weights and labels sent" in red.last_report.plan_reason


def _references_on_s3(path: Path, s3: S3, server: ActiveServer) -> zarr.Array:
    """kerchunk's form of the store at ``path``, its chunks copied to S3: reduced by the server."""
    name, refs = fresh_name(), {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        key = file.relative_to(path).as_posix()
        data = file.read_bytes()
        refs[key] = data.decode() if key.endswith("zarr.json") else \
            [s3_copy(s3, data, f"{name}/{key}"), 0, len(data)]
    store = activezarr.ActiveStore.from_url("reference://", storage_options={
        "fo": {"version": 1, "refs": refs}, "remote_protocol": "s3",
        "remote_options": s3.storage_options}, active={"server": server.url})
    return zarr.open_array(store, mode="r")


@pytest.mark.parametrize("case", [c for c in CASES if c.name in (
    "daily time mean", "whole mean", "weighted global mean per step", "monthly climatology")],
    ids=lambda c: c.name)
def test_references_to_s3_are_priced_as_the_server_answers_them(
        tmp_path: Path, moto_s3: S3, active_server: ActiveServer, case: Case) -> None:
    """One partial per chunk (these requests carry no region labels), lean."""
    _write(tmp_path / "a.zarr", case)
    red = activezarr.ActiveReduction(_references_on_s3(tmp_path / "a.zarr", moto_s3,
                                                       active_server), missing=None)
    case.reduce(red)
    report = red.last_report
    assert report.backend == "reference" and report.fallbacks == 0, report
    moved = report.bytes_from_storage
    assert abs(report.estimated_bytes - moved) <= 0.2 * moved, report


def test_layout_prints_the_estimate_for_local_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.zarr", CASES[2])
    result = CliRunner().invoke(main, ["layout", str(tmp_path / "a.zarr"), "--op", "mean",
                                       "--axis", "0", "--active", json.dumps({})])
    assert result.exit_code == 0, result.output
    assert f"mean: active: {DAYS} chunks, 1 partials in 1 requests" in result.output
    assert "nothing crosses a network" in result.output


@pytest.mark.parametrize("case", CASES[0:1] + CASES[2:3], ids=lambda c: c.name)
def test_without_absent_the_probes_for_unwritten_chunks_are_priced(
        tmp_path: Path, request: pytest.FixtureRequest, active_server: ActiveServer,
        case: Case) -> None:
    """A server that cannot answer "no such key" itself: one HEAD per chunk for a point
    query, a listing of the array for a time mean; both in the estimate."""
    from activezarr.backends import servers

    with urllib.request.urlopen(active_server.url + SCHEMA_PATH, timeout=10) as answer:
        document = json.loads(answer.read())
    _write(tmp_path / "a.zarr", case)
    s3 = next(r for r in RUNNERS if r.name == "s3")
    plain_name = active_server.url.replace("127.0.0.1", "localhost")
    servers._capabilities[plain_name] = {**document, "extensions": [
        e for e in document.get("extensions", ()) if e != "absent"]}
    array = s3.opener(tmp_path / "a.zarr", {
        "moto_s3": request.getfixturevalue("moto_s3"),
        "active_server": dataclasses.replace(active_server, url=plain_name)})
    red = activezarr.ActiveReduction(array, missing=None)
    case.reduce(red)
    report = red.last_report
    assert report.backend == "s3" and report.fallbacks == 0, report
    moved = report.bytes_from_storage
    assert abs(report.estimated_bytes - moved) <= 0.2 * moved, report


@pytest.mark.parametrize("codec", ["zstd", "blosc2"])
def test_every_compressing_codec_is_priced_as_compressed(tmp_path: Path, codec: str) -> None:
    """The cost model and the decode bounds share one set of compressors: blosc2 chunks (as
    Reductionist's compression names them) were priced as their decoded size."""
    from activezarr.planning.array_layout import ArrayLayout
    from activezarr.planning.cost import stored_chunk_bytes

    array = create(tmp_path / "a.zarr", np.zeros((64, 64), "f4"), codec="none", chunks=(64, 64))
    layout = dataclasses.replace(ArrayLayout.from_array(array), codecs=({"id": codec},))
    assert stored_chunk_bytes(layout) < layout.chunk_nbytes
    uncompressed = dataclasses.replace(layout, codecs=({"id": "shuffle", "elementsize": 4},))
    assert stored_chunk_bytes(uncompressed) == layout.chunk_nbytes

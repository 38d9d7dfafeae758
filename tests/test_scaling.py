"""Bytes that scale with the question: point queries, storage-side combining, lean partials."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import activezarr
from activezarr.commands.main import main
from s3_servers import S3, ActiveServer
from test_s3_backend import s3_array


def test_a_one_chunk_reduction_does_not_list_the_array(moto_s3: S3,
                                                        active_server: ActiveServer) -> None:
    data = np.arange(3000 * 4, dtype="float32")
    array = s3_array(moto_s3, active_server.url, data, chunks=(4,), write=False)
    array_w = s3_array(moto_s3, active_server.url, data, chunks=(4,))
    for arr in (array, array_w):
        red = activezarr.ActiveReduction(arr, missing=None)
        value = red[20:24].mean()
        report = red.last_report
        expected = data[20:24].mean() if arr is array_w else 0.0
        assert value == pytest.approx(expected)
        assert report.bytes_from_storage < 10_000, report
        assert report.requests <= 4, report


def test_chunks_stacked_on_the_reduced_axis_come_back_as_one_partial(
        moto_s3: S3, active_server: ActiveServer) -> None:
    data = np.random.default_rng(1).normal(280, 5, (40, 60, 120)).astype("float32")
    red = activezarr.ActiveReduction(s3_array(moto_s3, active_server.url, data,
                                              chunks=(1, 30, 120)), missing=None)
    np.testing.assert_allclose(red.mean(axis=0), data.mean(axis=0, dtype="float64"),
                               rtol=1e-6)
    report = red.last_report
    assert report.fallbacks == 0 and report.paths["s3"] == 80
    # two output regions, one partial each: float64 sums and one count number, framing aside
    assert report.bytes_from_storage < 0.1 * report.bytes_stored, report


def test_a_whole_array_mean_returns_one_partial_per_batch(moto_s3: S3,
                                                          active_server: ActiveServer) -> None:
    data = np.random.default_rng(2).normal(0, 1, (64, 64)).astype("float64")
    red = activezarr.ActiveReduction(s3_array(moto_s3, active_server.url, data,
                                              chunks=(8, 8)), missing=None)
    for op in ("mean", "var", "min", "count"):
        value = red.reduce(op)
        assert value == pytest.approx(getattr(np, op)(data) if op != "count" else data.size)
        assert red.last_report.requests <= 3, red.last_report  # listing, batch (schema cached)


def test_missing_values_keep_their_counts_exact(moto_s3: S3,
                                                active_server: ActiveServer) -> None:
    data = np.random.default_rng(3).integers(0, 300, (30, 6, 5)).astype("int16")
    red = activezarr.ActiveReduction(s3_array(moto_s3, active_server.url, data,
                                              chunks=(2, 3, 5), fill_value=7,
                                              attributes={"_FillValue": 7}))
    masked = np.ma.masked_equal(data, 7)
    np.testing.assert_allclose(np.ma.filled(red.mean(axis=0), -1),
                               masked.mean(axis=0).filled(-1))
    np.testing.assert_array_equal(red.count(axis=0), masked.count(axis=0))


@pytest.mark.parametrize("op", ["sum", "var"])  # var: sum, min, max and m2 of every element
def test_where_active_would_move_more_it_reads_plainly_and_says_why(
        moto_s3: S3, active_server: ActiveServer, op: str) -> None:
    data = np.random.default_rng(4).normal(0, 1, (64, 64)).astype("float32")
    red = activezarr.ActiveReduction(s3_array(moto_s3, active_server.url, data,
                                              chunks=(16, 16)), missing=None)
    plan = red.plan(op, axis=())  # tiny chunks, an output as large as the input
    assert plan is not None and plan.path == "plain"
    np.testing.assert_allclose(red.reduce(op, axis=()), getattr(np, op)(data, axis=()),
                               rtol=1e-6)
    report = red.last_report
    assert report.backend == "plain" and report.paths == {"plain": 16}, report
    assert report.fallbacks == 0 and "would move more than a plain read" in report.plan_reason


@pytest.mark.parametrize("selection, axis, chunks", [
    (np.s_[...], 0, (1, 60, 120)),
    (np.s_[...], None, (4, 60, 120)),
    (np.s_[3:4], None, (1, 60, 120)),
    (np.s_[...], (0, 2), (2, 30, 120)),
])
def test_the_estimate_is_within_a_fifth_of_what_the_run_reports(
        moto_s3: S3, active_server: ActiveServer, selection: object, axis: object,
        chunks: tuple[int, ...]) -> None:
    data = np.random.default_rng(5).normal(280, 5, (24, 60, 120)).astype("float32")
    red = activezarr.ActiveReduction(s3_array(moto_s3, active_server.url, data,
                                              chunks=chunks), missing=None)
    red.mean()  # the capability document is fetched once per process, outside the model
    plan = red[selection].plan("mean", axis)
    assert plan is not None and plan.path == "active"
    red[selection].mean(axis)
    report = red.last_report
    assert report.estimated_bytes == plan.active_bytes
    assert abs(plan.active_bytes - report.bytes_from_storage) <= 0.2 * report.bytes_from_storage, \
        (plan, report)


def test_layout_prints_the_estimate_before_anything_runs(moto_s3: S3,
                                                         active_server: ActiveServer) -> None:
    data = np.zeros((30, 8, 8), "float32")
    array = s3_array(moto_s3, active_server.url, data, chunks=(1, 8, 8))
    url = "s3://" + str(array.store.root).strip("/")
    result = CliRunner().invoke(main, [
        "layout", url, "--op", "mean", "--axis", "0",
        "--storage-options", json.dumps(moto_s3.storage_options),
        "--active", json.dumps({"server": active_server.url})])
    assert result.exit_code == 0, result.output
    assert "mean: active: 30 chunks, 1 partials in 1 requests" in result.output
    assert "moves less than a plain read" in result.output


def test_the_file_backend_merges_stacked_chunks_beside_the_files(tmp_path: Path) -> None:
    import zarr

    store = activezarr.ActiveStore.from_url(str(tmp_path / "a.zarr"))
    data = np.random.default_rng(6).normal(280, 5, (48, 30, 40)).astype("float32")
    zarr.create_array(store, data=data, chunks=(4, 30, 40))
    red = activezarr.ActiveReduction(zarr.open_array(store, mode="r"), missing=None)
    np.testing.assert_allclose(red.mean(axis=0), data.mean(axis=0, dtype="float64"), rtol=1e-6)
    report = red.last_report
    assert report.backend == "file" and report.paths == {"file": 12}
    # one batch: one partial (count and float64 sum of 30 x 40 cells), not twelve
    assert report.bytes_from_storage == 30 * 40 * 16, report

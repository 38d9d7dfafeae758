"""The ``activezarr`` command line: what users type, and what they get back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
import zarr
from click.testing import CliRunner, Result

import activezarr
from activezarr.commands.main import main
from activezarr.commands.params import parse_selection

FILL = -999.0


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ma.MaskedArray]:
    """A small chunked array with CF-masked cells, and what numpy.ma makes of it."""
    path = str(tmp_path_factory.mktemp("cli") / "t.zarr")
    data = np.arange(6 * 8 * 10, dtype="f4").reshape(6, 8, 10)
    data[:, 0, 0] = FILL
    zarr.create_array(path, shape=data.shape, chunks=(2, 4, 5), dtype="f4",
                      attributes={"_FillValue": FILL})[:] = data
    return path, np.ma.masked_equal(data, FILL)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def reduce_json(path: str, *args: str) -> dict:
    result = invoke("reduce", path, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit)  # handled, not a crash with a traceback
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("command", [[], *([name] for name in main.list_commands(click.Context(main)))])
def test_every_command_has_help(command: list[str]) -> None:
    result = invoke(*command, "--help")
    assert result.exit_code == 0
    assert result.output.startswith("Usage: ")


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and activezarr.__version__ in result.output


def test_python_m_activezarr_is_the_same_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "activezarr", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"activezarr, version {activezarr.__version__}"


def test_select_string_parses_like_numpy_indexing() -> None:
    assert parse_selection("0:10, :,::2,...,-1") == (
        slice(0, 10), slice(None), slice(None, None, 2), ..., -1)


def test_reduce_over_an_axis_matches_numpy(stored: tuple[str, np.ma.MaskedArray]) -> None:
    path, expected = stored
    out = reduce_json(path, "--op", "mean", "--select", "1:5,:,::2", "--axis", "0")
    got = np.array(out["result"], dtype=float)  # masked cells come back as null -> nan
    want = expected[1:5, :, ::2].mean(axis=0)
    np.testing.assert_array_equal(np.isnan(got), np.ma.getmaskarray(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want.compressed(), rtol=1e-6)


def test_reduce_json_has_result_and_report(stored: tuple[str, np.ma.MaskedArray]) -> None:
    path, expected = stored
    out = reduce_json(path, "--op", "sum")
    assert out["result"] == pytest.approx(float(expected.sum()))
    assert out["report"]["backend"] == "file"
    assert out["report"]["chunks"] == 3 * 2 * 2
    assert out["report"]["paths"] == {"file": 12}


def test_reduce_var_with_ddof_over_repeated_axes(stored: tuple[str, np.ma.MaskedArray]) -> None:
    path, expected = stored
    out = reduce_json(path, "--op", "var", "--ddof", "1", "--axis", "1", "--axis", "2")
    np.testing.assert_allclose(out["result"], expected.var(axis=(1, 2), ddof=1), rtol=1e-6)


def test_all_missing_result_is_null(stored: tuple[str, np.ma.MaskedArray]) -> None:
    assert reduce_json(stored[0], "--op", "max", "--select", ":,0,0")["result"] is None


def test_missing_none_keeps_fill_values(stored: tuple[str, np.ma.MaskedArray]) -> None:
    assert reduce_json(stored[0], "--op", "min", "--missing", "none")["result"] == FILL


def test_reduce_prints_result_and_report_without_progress_noise(
        stored: tuple[str, np.ma.MaskedArray]) -> None:
    path, expected = stored
    result = invoke("reduce", path, "--op", "count")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert int(lines[0]) == expected.count()
    assert "bytes_from_storage" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("select", ["1:2:3:4", "a", "0,,1", "1.5"])
def test_bad_select_string_is_a_usage_error(stored: tuple[str, np.ma.MaskedArray],
                                            select: str) -> None:
    result = invoke("reduce", stored[0], "--op", "mean", "--select", select)
    assert result.exit_code == 2
    assert "Invalid value for '--select'" in result.output
    assert "integer, a slice start:stop:step" in result.output


def test_unknown_op_lists_available_ops(stored: tuple[str, np.ma.MaskedArray]) -> None:
    result = invoke("reduce", stored[0], "--op", "median")
    assert_one_line_error(result, "median", "available", "mean", "std", "var")


@pytest.mark.parametrize("args", [["--select", "6"], ["--select", "0,0,0,0"], ["--axis", "3"]])
def test_out_of_range_request_is_a_one_line_error(stored: tuple[str, np.ma.MaskedArray],
                                                  args: list[str]) -> None:
    assert_one_line_error(invoke("reduce", stored[0], "--op", "mean", *args))


def test_missing_array_is_a_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(invoke("reduce", str(tmp_path / "nope.zarr"), "--op", "mean"),
                          "nope.zarr")


def test_demo_compares_active_and_plain_reads(tmp_path: Path) -> None:
    result = invoke("demo", "--dir", str(tmp_path / "demo"), "--size", "small")
    assert result.exit_code == 0, result.output
    assert "yes" in result.output and "NO" not in result.output
    assert "HTTP/1.1" not in result.output  # the embedded S3's access log stays quiet
    assert "loopback" in result.output and "chunks on the OSTs" in result.output  # explained
    assert (tmp_path / "demo" / "tas.zarr").is_dir()
    assert (tmp_path / "demo" / "tas_sharded.zarr").is_dir()


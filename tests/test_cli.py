"""The ``activezarr`` command line: what users type, and what they get back."""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import zarr
from click.testing import CliRunner, Result

import activezarr
from activezarr.commands.main import LazyGroup, main
from activezarr.commands.params import parse_selection
from activezarr.servers.processes import listening_socket, port_of, spawn, stop
from s3_servers import S3

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


def test_argmax_over_one_axis_matches_numpy(stored: tuple[str, np.ma.MaskedArray]) -> None:
    path, expected = stored
    out = reduce_json(path, "--op", "argmax", "--select", "::-1,:,1:", "--axis", "1")
    want = expected[::-1, :, 1:].argmax(axis=1)  # numpy.ma: all-masked cells say 0, ours null
    got = np.array(out["result"], dtype=float)
    covered = np.ma.getmaskarray(expected[::-1, :, 1:]).all(axis=1)
    np.testing.assert_array_equal(np.isnan(got), covered)
    np.testing.assert_array_equal(got[~covered], np.ma.getdata(want)[~covered])


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


def test_reduce_quantiles_median_and_histogram(stored: tuple[str, np.ma.MaskedArray]) -> None:
    path, expected = stored
    valid = expected.filled(np.nan)
    out = reduce_json(path, "--op", "quantile", "--q", "0.9", "--axis", "0")
    np.testing.assert_array_equal(np.ma.masked_invalid(np.array(out["result"], float)),
                                  np.nanquantile(valid, 0.9, axis=0))
    out = reduce_json(path, "--op", "quantile", "--q", "0.1", "--q", "0.5")
    assert out["result"] == np.nanquantile(valid, [0.1, 0.5]).tolist()
    assert reduce_json(path, "--op", "median")["result"] == float(np.nanmedian(valid))
    out = reduce_json(path, "--op", "quantile", "--q", "0.5", "--method", "approximate")
    ordered = np.sort(expected.compressed())  # a stored value, its rank within the bound
    ranks = np.flatnonzero(ordered == out["result"])
    assert ranks.size and np.abs(ranks - 0.5 * (ordered.size - 1)).min() <= 1
    out = reduce_json(path, "--op", "histogram", "--bins", "0,100,480")
    assert out["result"] == np.histogram(expected.compressed(), [0, 100, 480])[0].tolist()
    assert_one_line_error(invoke("reduce", path, "--op", "histogram", "--bins", "0,a"),
                          "--bins")


def test_reduce_where_counts_the_values_meeting_every_condition(
        stored: tuple[str, np.ma.MaskedArray]) -> None:
    path, expected = stored
    out = reduce_json(path, "--op", "count", "--axis", "0", "--where", ">100",
                      "--where", "<= 400")
    inside = (expected > 100) & (expected <= 400)
    assert out["result"] == np.ma.filled(inside, False).sum(axis=0).tolist()
    assert out["report"]["fallbacks"] == 0
    assert_one_line_error(invoke("reduce", path, "--op", "count", "--where", "above 3"),
                          "not a comparison with a number")


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
    result = invoke("reduce", stored[0], "--op", "mode")
    assert_one_line_error(result, "mode", "available", "mean", "std", "var")


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



def _commands(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name in command.list_commands(click.Context(command)):
            sub = command.get_command(click.Context(command), name)
            assert sub is not None
            yield from _commands(sub, (*path, name))


def test_every_option_of_every_command_has_help_text() -> None:
    for path in _commands(main):
        command = main
        for name in path:
            command = command.get_command(click.Context(command), name)  # type: ignore[attr-defined]
        assert command.help, path
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, (path, param.name)


def test_json_has_no_bare_nan(tmp_path: Path) -> None:
    path = str(tmp_path / "nan.zarr")
    zarr.create_array(path, data=np.array([1.0, np.nan, np.inf]), chunks=(3,))
    text = invoke("reduce", path, "--op", "max", "--select", "0:2", "--json").stdout
    assert json.loads(text, parse_constant=pytest.fail)["result"] == "NaN"
    text = invoke("reduce", path, "--op", "sum", "--select", "2:", "--json").stdout
    assert json.loads(text, parse_constant=pytest.fail)["result"] == "Infinity"


def test_a_group_needs_var(tmp_path: Path) -> None:
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("tas", data=np.arange(4.0))
    group.create_array("pr", data=np.arange(3.0))
    assert_one_line_error(invoke("reduce", str(tmp_path / "g.zarr"), "--op", "sum"),
                          "zarr group", "--var", "pr, tas")
    assert_one_line_error(invoke("reduce", str(tmp_path / "g.zarr"), "--op", "sum", "--var", "x"),
                          "no array 'x'", "pr, tas")
    out = reduce_json(str(tmp_path / "g.zarr"), "--op", "sum", "--var", "tas")
    assert out["result"] == 6.0


def test_a_netcdf_file_reduces_one_variable(netcdf_dir: Path) -> None:
    import netCDF4

    path = str(netcdf_dir / "test1.nc")
    assert_one_line_error(invoke("reduce", path, "--op", "mean"), "netCDF", "--var", "tas")
    out = reduce_json(path, "--op", "mean", "--var", "tas")
    with netCDF4.Dataset(path) as ds:
        assert out["result"] == pytest.approx(float(ds["tas"][:].mean()))
    assert out["report"]["backend"] == "reference"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command in its own process: what a user sees on stderr, up to its exit."""
    return subprocess.run([sys.executable, "-m", "activezarr", *args], capture_output=True,
                          text=True, timeout=120, env=env)


def assert_one_line_stderr(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with listening_socket() as sock:
        return port_of(sock)


def test_unreachable_endpoint_is_one_line() -> None:
    port = closed_port()
    options = json.dumps({"endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s"})
    assert_one_line_stderr(run_cli("reduce", "s3://bucket/a.zarr", "--op", "mean",
                                   "--storage-options", options), "Could not connect")


def test_missing_credentials_say_what_to_pass(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               AWS_CONFIG_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    port = closed_port()
    options = json.dumps({"endpoint_url": f"http://127.0.0.1:{port}"})
    assert_one_line_stderr(run_cli("reduce", "s3://bucket/a.zarr", "--op", "mean",
                                   "--storage-options", options, env=env),
                           "credentials", '"key"', "anon")


@pytest.mark.parametrize("args", [["layout", "/no/such/array.zarr"],
                                  ["layout", "ost://127.0.0.1:1/a.zarr"]])
def test_layout_errors_are_one_line(args: list[str]) -> None:
    assert_one_line_error(invoke(*args))


def test_serve_on_a_taken_port_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_line_error(invoke("serve", "--port", str(port)), "address already in use")


def test_serve_says_where_it_listens(tmp_path: Path) -> None:
    sock = listening_socket()  # bound here and handed over: no other process can take it
    port = port_of(sock)
    process = spawn([sys.executable, "-m", "activezarr", "serve", "--allow-root", str(tmp_path)],
                    sock, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once it listens
        assert f"listening on http://127.0.0.1:{port}" in line and str(tmp_path) in line
    finally:
        stop(process)


def test_a_command_whose_extra_is_missing_says_what_to_install() -> None:
    group = LazyGroup(lazy_commands={"serve": ".no_such_module:serve"})
    assert "pip install 'activezarr[server]'" in CliRunner().invoke(group, ["--help"]).output
    result = CliRunner().invoke(group, ["serve", "--port", "1"])
    assert_one_line_error(result, "activezarr serve needs", "activezarr[server]")


# --- messages that name the thing to fix (issue 20, item 6) ---------------------------------

MESSAGES_BUCKET = "cli-messages"


@pytest.fixture(scope="module")
def on_s3(moto_s3: S3) -> str:
    """A small float32 array (2 chunks, zstd) on moto's S3."""
    moto_s3.bucket(MESSAGES_BUCKET)
    url = f"s3://{MESSAGES_BUCKET}/a.zarr"
    store = zarr.storage.FsspecStore.from_url(url, storage_options=moto_s3.storage_options)
    zarr.create_array(store, shape=(8,), chunks=(4,), dtype="f4")[:] = np.arange(8.0)
    return url


def s3_options(moto_s3: S3, **more: Any) -> str:
    return json.dumps({**moto_s3.storage_options, **more})


def assert_fell_back_visibly(result: Result, *fragments: str) -> None:
    """Exit 0 (the result is right), and the last line of all says it was not storage-side."""
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"] == pytest.approx(3.5)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("NOT STORAGE-SIDE: 2 of 2 chunk(s)") and "--no-fallback" in last
    for fragment in fragments:
        assert fragment in last, last


def test_a_url_that_is_no_active_server_is_named_with_its_answer(on_s3: str,
                                                                 moto_s3: S3) -> None:
    result = invoke("reduce", on_s3, "--op", "mean", "--json", "--storage-options",
                    s3_options(moto_s3), "--active", json.dumps({"server": moto_s3.endpoint}))
    assert_fell_back_visibly(result, f"is {moto_s3.endpoint} an active server?",
                             "answered HTTP 404", "NoSuchBucket")


class _WebPage(http.server.BaseHTTPRequestHandler):
    """A web site: every path, whatever the method, is the same page."""

    def _page(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<!doctype html><html><body>Welcome</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _page

    def log_message(self, *args: Any) -> None:
        pass  # no access log in the test output


def test_a_web_page_as_active_server_is_named_with_its_answer(moto_s3: S3) -> None:
    """Uncompressed float32 chunks are said in plain Reductionist requests: they are posted,
    and the page that answers is quoted."""
    moto_s3.bucket(MESSAGES_BUCKET)
    url = f"s3://{MESSAGES_BUCKET}/plain.zarr"
    store = zarr.storage.FsspecStore.from_url(url, storage_options=moto_s3.storage_options)
    zarr.create_array(store, shape=(8,), chunks=(4,), dtype="f4", compressors=None,
                      overwrite=True)[:] = np.arange(8.0)
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _WebPage) as site:
        threading.Thread(target=site.serve_forever, daemon=True).start()
        page = f"http://127.0.0.1:{site.server_address[1]}"
        result = invoke("reduce", url, "--op", "mean", "--json", "--storage-options",
                        s3_options(moto_s3), "--active", json.dumps({"server": page}))
        site.shutdown()
    assert_fell_back_visibly(result, "is not CBOR", "Welcome", f"is {page} an active server?")


def test_a_dead_server_is_the_last_line_said(on_s3: str, moto_s3: S3) -> None:
    server = f"http://127.0.0.1:{closed_port()}"
    result = invoke("reduce", on_s3, "--op", "mean", "--json", "--storage-options",
                    s3_options(moto_s3), "--active", json.dumps({"server": server}))
    assert_fell_back_visibly(result, server)


def test_a_missing_array_on_s3_names_the_url(moto_s3: S3) -> None:
    url = f"s3://{MESSAGES_BUCKET}/no-such.zarr"
    moto_s3.bucket(MESSAGES_BUCKET)
    assert_one_line_error(invoke("reduce", url, "--op", "mean", "--storage-options",
                                 s3_options(moto_s3)), f"no zarr array at {url}")


def test_refused_anonymous_access_says_which_credentials_and_how_to_give_them(
        on_s3: str, moto_s3: S3) -> None:
    options = json.dumps({"endpoint_url": moto_s3.endpoint, "anon": True})
    assert_one_line_error(invoke("reduce", on_s3, "--op", "mean", "--storage-options", options),
                          on_s3, "Forbidden", 'anonymous access ("anon": true)', '"key"',
                          "AWS_ACCESS_KEY_ID")


def test_a_weighted_op_needs_weights(stored: tuple[str, np.ma.MaskedArray]) -> None:
    path, _ = stored
    assert_one_line_error(invoke("reduce", path, "--op", "weighted_mean"),
                          "--op weighted_mean needs --weights VAR", "coslat")
    assert_one_line_error(invoke("reduce", path, "--op", "mean", "--weights", "coslat"),
                          "--weights goes with --op weighted_mean")
    red = activezarr.ActiveReduction(activezarr.open_array(path))
    with pytest.raises(ValueError, match="weighted_mean needs weights="):
        red.reduce("weighted_mean")
    with pytest.raises(ValueError, match="weights go with weighted_sum or weighted_mean"):
        red.reduce("sum", weights=np.ones(10))


def test_weights_name_a_variable_or_coslat(tmp_path: Path) -> None:
    xr = pytest.importorskip("xarray")
    rng = np.random.default_rng(8)
    lat = np.linspace(-60, 60, 5)
    tas = rng.normal(280, 5, (4, 5, 6))
    area = rng.uniform(1, 2, (5, 6))
    path = str(tmp_path / "w.zarr")
    xr.Dataset({"tas": (("time", "lat", "lon"), tas), "area": (("lat", "lon"), area)},
               coords={"lat": lat}).to_zarr(path, consolidated=False)
    out = reduce_json(path, "--var", "tas", "--op", "weighted_mean", "--weights", "area",
                      "--axis", "1,2", "--select", "1:,...")
    want = (tas[1:] * area).sum((1, 2)) / area.sum()
    np.testing.assert_allclose(out["result"], want, rtol=1e-12)
    out = reduce_json(path, "--var", "tas", "--op", "weighted_mean", "--weights", "coslat",
                      "--axis", "0,1", "--select", "...,::-2")
    w = np.cos(np.deg2rad(lat))[None, :, None]
    want = (tas[..., ::-2] * w).sum((0, 1)) / (w.sum() * 4)
    np.testing.assert_allclose(out["result"], want, rtol=1e-12)
    assert_one_line_error(invoke("reduce", path, "--var", "tas", "--op", "weighted_sum",
                                 "--weights", "nope"), "--weights nope", "no variable 'nope'")


def test_layout_takes_var_for_a_netcdf_file(netcdf_dir: Path) -> None:
    path = str(netcdf_dir / "test1.nc")
    result = invoke("layout", path, "--var", "tas", "--op", "mean")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("mean: ")


def test_layout_off_ost_without_op_says_what_to_give(stored: tuple[str, np.ma.MaskedArray]
                                                     ) -> None:
    path, _ = stored
    result = invoke("layout", path)
    assert_one_line_error(result, f"{path} is not on an ost:// file system", "--op")
    assert "wrapping" not in result.output

"""Settings are declared once: ``activezarr serve``'s and ``activezarr ost``'s options, their
help, defaults and ``ACTIVEZARR_*`` variables come from the servers' settings models, and the
``active`` options of each backend from its options model."""

from __future__ import annotations

import os
import re
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from pydantic import BaseModel

import activezarr
from activezarr.backends.file import FileBackend, FileOptions
from activezarr.commands.serve import serve
from activezarr.commands.settings import envvar, is_option, option_name, options_from, settings_from
from activezarr.ost.commands import ost
from activezarr.ost.servers.cluster import ClusterConfig
from activezarr.ost.wire.messages import TOKEN_VARIABLE
from activezarr.servers.active.config import MiB, ServerConfig, ServeSettings
from activezarr.servers.processes import listening_socket, port_of, spawn, stop, wait_healthy
from s3_servers import start_active_server

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _options(model: type[BaseModel]) -> dict[str, Any]:
    return {name: field for name, field in model.model_fields.items() if is_option(field)}


def _help(command: click.Command, *args: str) -> str:
    done = CliRunner().invoke(command, [*args, "--help"], terminal_width=1000,
                              max_content_width=1000)
    assert done.exit_code == 0, done.output
    return done.output


def _probe(model: type[BaseModel], prefix: str = "ACTIVEZARR_") -> tuple[click.Command, list]:
    """A command with ``model``'s options that keeps the settings it was given."""
    made: list[Any] = []

    @click.command()
    @options_from(model, prefix)
    def probe(**given: Any) -> None:
        made.append(settings_from(model, given))

    return probe, made


# --- serve: one declaration --------------------------------------------------------------------

def _documented(text: str, model: type[BaseModel], prefix: str = "ACTIVEZARR_") -> None:
    """Each option of ``model`` is in the help ``text`` with its help, variable and default."""
    text = " ".join(text.split())
    for name, field in _options(model).items():
        option = option_name(name, field)
        shown = field.json_schema_extra.get("shown")  # click puts a text in parentheses
        shown = f"({shown})" if shown else field.default
        default = "" if shown in (None, (), False) else f"; default: {shown}"
        if field.is_required():
            default = "; required"
        entry = (rf"{option}(?: [A-Z]+)? {re.escape(field.description)} \[env var: "
                 rf"{envvar(option, prefix)}{re.escape(default)}[;\]]")
        assert re.search(entry, text), (entry, text)


def test_serve_help_shows_every_setting_with_its_help_default_and_variable() -> None:
    text = _help(serve)
    _documented(text, ServeSettings)
    assert "default: (the number of CPUs)" in text  # --workers: what the default means, not this machine's count
    assert "--fd" not in text  # internal: how a parent hands over its socket


def test_every_serve_setting_reads_its_environment_variable(tmp_path: Path) -> None:
    values = {"host": "127.0.0.2", "port": 9999, "max_connections": 7, "access_log": True,
              "upstreams": "http://a.example http://b.example=http://127.0.0.2:9000",
              "roots": str(tmp_path), "max_body": MiB, "max_chunk_bytes": 2 * MiB,
              "max_decoded_bytes": 3 * MiB, "max_request_decoded_bytes": 4 * MiB,
              "max_memory": 5 * MiB, "max_inflight": 6, "memory_wait": 1.5, "body_timeout": 2.5,
              "request_timeout": 3.5, "workers": 3, "s3_region": "eu-west-2",
              "upstream_timeout": 1.25, "upstream_reads": 9, "reductions": (),
              "tls_cert": str(tmp_path / "cert.pem"), "tls_key": str(tmp_path / "key.pem")}
    (tmp_path / "cert.pem").write_text("")
    (tmp_path / "key.pem").write_text("")
    fields = _options(ServeSettings)
    assert set(values) == set(fields)  # a new setting gets a line here
    probe, made = _probe(ServeSettings)
    env = {envvar(option_name(n, fields[n])): " ".join(v) if isinstance(v, tuple) else str(v)
           for n, v in values.items()}
    done = CliRunner().invoke(probe, [], env=env)
    assert done.exit_code == 0, done.output
    settings = made[0]
    assert [str(u.internal) for u in settings.upstreams] == ["http://a.example",
                                                              "http://127.0.0.2:9000"]
    for name, value in values.items():
        if name not in ("upstreams", "roots", "tls_cert", "tls_key"):
            assert getattr(settings, name) == value, name
    assert settings.roots == (str(tmp_path),) and settings.tls_key == tmp_path / "key.pem"


def test_an_option_given_wins_over_its_variable() -> None:
    probe, made = _probe(ServeSettings)
    done = CliRunner().invoke(probe, ["--max-inflight", "3"],
                              env={"ACTIVEZARR_MAX_INFLIGHT": "5", "ACTIVEZARR_PORT": "81"})
    assert done.exit_code == 0, done.output
    assert (made[0].max_inflight, made[0].port) == (3, 81)


def test_the_defaults_are_the_models() -> None:
    probe, made = _probe(ServeSettings)
    assert CliRunner().invoke(probe, [], env={}).exit_code == 0
    assert made[0] == ServeSettings() and made[0].workers >= 1


@pytest.mark.parametrize(("args", "message"), [
    (["--max-memory", str(6 * MiB), "--max-chunk-bytes", str(MiB), "--max-body", str(4 * MiB)],
     r"--max-memory 6291456 is below twice --max-body 4194304 .*raise --max-memory or lower "
     r"--max-body"),
    (["--max-memory", str(MiB)], r"--max-memory 1048576 is below --max-chunk-bytes"),
    (["--request-timeout", "0"], r"invalid value for --request-timeout 0.0: .*greater than 0"),
    (["--max-connections", "0"], r"invalid value for --max-connections 0: .*greater than or equal"),
    (["--upstream", "s3.example.org"], r"invalid value for --upstream 's3.example.org': upstream "
     r"'s3.example.org' is not an absolute http\(s\) URL"),
    (["--allow-root", "/no/such/dir"], r"invalid value for --allow-root '/no/such/dir': "),
    (["--tls-cert", __file__], r"--tls-cert and --tls-key go together"),
])
def test_a_refused_setting_is_one_line_naming_its_option(args: list[str], message: str) -> None:
    done = CliRunner().invoke(serve, args)
    assert done.exit_code == 2
    error = done.output.strip().splitlines()[-1]
    assert re.search(message, error), error
    assert error.startswith("Error: ")


def test_a_body_takes_twice_its_size_of_the_memory_budget() -> None:
    assert ServerConfig(max_memory=8 * MiB, max_body=4 * MiB, max_chunk_bytes=MiB)
    with pytest.raises(ValueError, match="below twice --max-body"):
        ServerConfig(max_memory=8 * MiB - 1, max_body=4 * MiB, max_chunk_bytes=MiB)


def test_an_upstream_read_times_out_before_the_request() -> None:
    """A hanging upstream read ends as a 503 the client retries, not the request's 504."""
    defaults = ServerConfig()
    assert defaults.upstream_timeout <= defaults.request_timeout / 2
    assert "keep it below --request-timeout" in ServerConfig.model_fields[
        "upstream_timeout"].description


def test_the_readme_lists_every_serve_setting_as_the_model_declares_it() -> None:
    section = README[README.index("## The active server"):]
    section = section[:section.index("\n## ", 1)]
    rows = re.findall(r"^\| `(--[a-z0-9-]+)` \| `(ACTIVEZARR_\w+)` \| (.*?) \| (.*) \|$", section,
                      re.M)
    expected = []
    for name, field in _options(ServeSettings).items():
        option = option_name(name, field)
        shown = field.json_schema_extra.get("shown", field.default)
        default = "" if shown in (None, (), False) else str(shown)
        expected.append((option, envvar(option), default, field.description))
    assert sorted(rows) == sorted(expected)


# --- serve: what it prints ---------------------------------------------------------------------

def test_the_server_logs_no_line_per_request_unless_asked(tmp_path: Path) -> None:
    for args, logged in (((), False), (("--access-log",), True)):
        with start_active_server(tmp_path, *args) as server:
            for _ in range(3):
                urllib.request.urlopen(server.url + "/healthz", timeout=10).read()
        output = server.log.read_text()
        assert ("GET /healthz" in output) == logged, output
        assert "listening on" in output


# --- ost: one declaration, and served as the active server is --------------------------------

def test_ost_start_help_comes_from_the_cluster_config() -> None:
    _documented(_help(ost, "start"), ClusterConfig, "ACTIVEZARR_OST_")


def test_the_servers_settings_are_declared_with_the_clusters() -> None:
    assert f"env var: {TOKEN_VARIABLE}" in _help(ost, "oss")
    assert "--disk-rate" in _help(ost, "target") and "--lan-rate" in _help(ost, "mds")
    for command in ("target", "oss", "mds"):
        assert "ACTIVEZARR_OST_MAX_CONNECTIONS" in _help(ost, command)


def test_an_ost_server_refuses_connections_over_its_limit(tmp_path: Path) -> None:
    sock = listening_socket()
    url = f"http://127.0.0.1:{port_of(sock)}"
    process = spawn([sys.executable, "-m", "activezarr.ost", "target", "--root",
                     str(tmp_path), "--token", "t"], sock,
                    env={**os.environ, "ACTIVEZARR_OST_MAX_CONNECTIONS": "2"})
    try:
        wait_healthy([url + "/healthz"], {"ost target": process}, 30.0)
        held = [socket.create_connection(("127.0.0.1", port_of_url(url)), timeout=10)
                for _ in range(2)]
        try:
            with socket.create_connection(("127.0.0.1", port_of_url(url)), timeout=10) as third:
                answer = third.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503") and b"--max-connections" in answer
        finally:
            for held_socket in held:
                held_socket.close()
    finally:
        stop(process)


def port_of_url(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# --- backend options: one model each -----------------------------------------------------------

def test_an_unknown_option_lists_the_valid_ones_from_the_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as raised:
        activezarr.ActiveStore.from_url(str(tmp_path), active={"workerz": 4})
    valid = ", ".join(sorted(FileOptions.model_fields))
    assert str(raised.value) == (f"unknown option(s) 'workerz' for the file backend; "
                                 f"known: {valid}")


@pytest.mark.parametrize(("active", "message"), [
    ({"workers": "four"}, r"option 'workers' of the file backend: .*integer.*, got 'four'; "
                          r"known: backend, .*workers$"),
    ({"workers": 0}, r"option 'workers' of the file backend: .*greater than or equal to 1, "
                     r"got 0; known: "),
    ({"timeout": "soon"}, r"option 'timeout' of the file backend: .*number.*, got 'soon'"),
    ({"server": "h:1"}, r"option 'server' of the file backend: active server 'h:1' is not an "
                        r"http\(s\) URL"),
])
def test_a_wrongly_typed_option_is_one_error_naming_it(tmp_path: Path, active: dict[str, Any],
                                                       message: str) -> None:
    with pytest.raises(ValueError, match=message):
        activezarr.ActiveStore.from_url(str(tmp_path), active=active)


def test_options_are_coerced_and_defaults_come_from_the_model(tmp_path: Path) -> None:
    store = activezarr.ActiveStore.from_url(str(tmp_path), active={"workers": "3",
                                                                   "deadline": "2.5"})
    backend = FileBackend(store, store.active)
    assert backend.options.workers == 3 and backend.options.deadline == 2.5
    assert backend.options.retries == 3 and backend.options.timeout == 120.0


def test_the_readme_names_every_option_of_the_active_servers() -> None:
    from activezarr.backends.servers import ServerOptions

    section = README[README.index("The client resolves S3 credentials"):]
    section = section[:section.index("\n\n")]
    assert [n for n in ServerOptions.model_fields
            if n not in ("backend", "server", "deadline") and f"`{n}`" not in section] == []


def test_an_ost_spread_policy_outside_the_choices_is_refused() -> None:
    from activezarr.ost.client.backend import OSTBackend

    with pytest.raises(ValueError, match=r"option 'spread_compressed' of the ost backend: .*'oss'"
                                         r" or 'client'.*got 'osts'"):
        OSTBackend.check_options({"spread_compressed": "osts"})

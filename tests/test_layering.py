"""The layering rules hold at run time too: what a server process imports, and lint-imports."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import activezarr

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CLIENT_ONLY = ("zarr", "fsspec", "s3fs", "activezarr.client", "activezarr.backends",
               "activezarr.planning")


def imported_modules(*args: str) -> set[str]:
    """The modules ``python -X importtime *args`` imported (importtime's report is on stderr)."""
    out = subprocess.run([sys.executable, "-X", "importtime", *args],
                         capture_output=True, text=True, check=True, timeout=120)
    return {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def top_packages(modules: set[str]) -> set[str]:
    return {m for m in modules for p in CLIENT_ONLY if m == p or m.startswith(p + ".")}


@pytest.mark.parametrize("command", [
    ["-m", "activezarr", "serve", "--help"],
    ["-m", "activezarr.servers.active", "--help"],
    ["-m", "activezarr.ost", "target", "--help"],
    ["-c", "import activezarr.servers.active.app, activezarr.ost.servers.oss"],
])
def test_a_server_process_imports_no_client_code(command: list[str]) -> None:
    modules = imported_modules(*command)
    assert "aiohttp" in modules or "click" in modules  # the report was read
    assert top_packages(modules) == set()


def test_public_names_load_on_first_use() -> None:
    modules = imported_modules("-c", "import activezarr")
    assert top_packages(modules) == set()
    assert activezarr.ActiveStore.__name__ == "ActiveStore"
    assert set(activezarr.__all__) <= set(dir(activezarr))
    with pytest.raises(AttributeError, match="no_such_name"):
        activezarr.no_such_name  # noqa: B018


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"],  # finds pyproject.toml in ROOT
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_lint_imports_keeps_every_contract() -> None:
    result = lint_imports(ROOT / "src")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


LAYERS = ("Layers: the commands on top; the client above the backends above the planner; the "
          "kernel at the bottom")


@pytest.mark.parametrize(("module", "planted", "arrow", "contract"), [
    ("servers/errors.py", "from ..client.store import ActiveStore",
     "activezarr.servers.errors -> activezarr.client.store",
     "Servers never import zarr, fsspec or the client side"),
    ("backends/base.py", "from ..client.report import Report",
     "activezarr.backends.base -> activezarr.client.report", LAYERS),
    ("planning/chunks.py", "from ..client.store import ActiveStore",
     "activezarr.planning.chunks -> activezarr.client.store", LAYERS),
    ("planning/chunks.py", "from ..backends.base import Backend",
     "activezarr.planning.chunks -> activezarr.backends.base", LAYERS),
    ("client/report.py", "from ..servers.errors import ServerError",
     "activezarr.client.report -> activezarr.servers.errors",
     "The client side never imports the servers"),
    ("client/engine.py", "from ..ost.client.backend import OSTBackend",
     "activezarr.client.engine -> activezarr.ost.client.backend",
     "The core never imports the ost wing"),
    ("ost/wire/striping.py", "from ..client.filesystem import OSTFileSystem",
     "activezarr.ost.wire.striping -> activezarr.ost.client.filesystem",
     "The ost wing: its commands and client above its servers above its wire types"),
], ids=["servers->client", "backends->client", "planning->client", "planning->backends",
        "client->servers", "core->ost", "ost.wire->ost.client"])
def test_lint_imports_fails_on_an_import_against_the_layers(
        tmp_path: Path, module: str, planted: str, arrow: str, contract: str) -> None:
    copy = tmp_path / "activezarr"
    shutil.copytree(ROOT / "src" / "activezarr", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{planted}\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert arrow in result.stdout
    assert f"{contract} BROKEN" in " ".join(result.stdout.split())

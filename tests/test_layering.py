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


def test_lint_imports_fails_when_a_server_imports_the_client(tmp_path: Path) -> None:
    copy = tmp_path / "activezarr"
    shutil.copytree(ROOT / "src" / "activezarr", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    errors = copy / "servers" / "errors.py"
    errors.write_text(errors.read_text() + "\nfrom ..client.store import ActiveStore\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "activezarr.servers.errors -> activezarr.client.store" in result.stdout
    assert "Servers never import zarr, fsspec or the client side BROKEN" in result.stdout

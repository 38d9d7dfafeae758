"""The ost wing plugs in through entry points alone: the package without it works.

A copy of ``src/activezarr`` without ``activezarr/ost/``, with the distribution's entry points
less the wing's, stands first on the path, as a build without the wing would be installed; the
tests of every other backend (file, reference, s3, client and the active servers) pass there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WING = "activezarr.ost"
#: The other backends' tests: every backend's differential cases, the store, the plugins, S3.
OTHER_BACKENDS = ["tests/test_differential.py", "tests/test_store.py", "tests/test_plugins.py",
                  "tests/test_s3_backend.py"]


def without_the_wing(site: Path) -> Path:
    """``site`` holding the package less its ost wing, and metadata less the wing's entry
    points (found before the installed distribution's)."""
    package = ROOT / "src" / "activezarr"
    shutil.copytree(package, site / "activezarr", ignore=lambda folder, names: [
        n for n in names if n == "__pycache__" or (Path(folder) == package and n == "ost")])
    info = site / "activezarr-0.1.0.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text("Metadata-Version: 2.1\nName: activezarr\n"
                                         "Version: 0.1.0\n")
    groups: dict[str, list[str]] = {}
    for ep in distribution("activezarr").entry_points:
        if not ep.value.startswith(WING + "."):
            groups.setdefault(ep.group, []).append(f"{ep.name} = {ep.value}")
    info.joinpath("entry_points.txt").write_text("".join(
        f"[{group}]\n" + "\n".join(lines) + "\n\n" for group, lines in groups.items()))
    return site


def run(site: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


@pytest.mark.timeout(1800)  # four test files in a subprocess: minutes on a loaded machine
def test_the_package_works_without_the_ost_wing(tmp_path: Path) -> None:
    site = without_the_wing(tmp_path)
    probe = run(site, "-c", "import activezarr, fsspec, importlib.util; "
                "from activezarr.backends import backends; "
                f"print(activezarr.__file__, importlib.util.find_spec({WING!r}), "
                "'ost' in backends, 'ost' in fsspec.available_protocols())", timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [str(site / "activezarr" / "__init__.py"), "None", "False",
                                    "False"]
    commands = run(site, "-m", "activezarr", "--help", timeout=120)
    assert commands.returncode == 0, commands.stderr
    assert "reduce" in commands.stdout and "ost" not in commands.stdout.split()
    tests = run(site, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *OTHER_BACKENDS,
                timeout=1800)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    summary = tests.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary

"""The README is tested: its Python blocks (and PROTOCOL.md's) run as written, its set-up
commands are what CI runs."""

from __future__ import annotations

import re
import tempfile
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCUMENTS = {name: (ROOT / name).read_text() for name in ("README.md", "docs/PROTOCOL.md")}
# A block's info string may name what it needs after the language: ```python requires=pkg>=1.
FENCE = re.compile(r"^([ \t]*)```(\w*)(?: requires=(\S+))?\n(.*?)^\1```",
                   re.MULTILINE | re.DOTALL)
DEMO_COMMAND = 'python3 -m venv .venv && .venv/bin/pip install -e ".[demo]" && .venv/bin/activezarr demo'
TEST_COMMAND = ('python3 -m venv .venv && .venv/bin/pip install -e ".[test]" '
                "&& .venv/bin/python -m pytest")


def _python_blocks(name: str = "README.md") -> list[tuple[int, str, str | None]]:
    """(first line number, code, requirement) of every ```python block of document ``name``."""
    text = DOCUMENTS[name]
    return [(text.count("\n", 0, m.start(4)) + 1, textwrap.dedent(m.group(4)), m.group(3))
            for m in FENCE.finditer(text) if m.group(2) == "python"]


def _unmet(requirement: str | None) -> str | None:
    """Why this environment cannot run a block needing ``requirement``, or None if it can."""
    if requirement is None:
        return None
    needed = Requirement(requirement)
    installed = version(needed.name)
    return None if needed.specifier.contains(installed) else f"needs {needed}, has {installed}"


def test_readme_has_python_examples() -> None:
    assert _python_blocks()


@pytest.mark.parametrize("name, line, code", [
    pytest.param(name, n, c, id=f"{name}:line{n}" if name != "README.md" else f"line{n}",
                 marks=pytest.mark.skipif(_unmet(r) is not None, reason=str(_unmet(r))))
    for name in DOCUMENTS for n, c, r in _python_blocks(name)])
def test_python_block_runs(name: str, line: int, code: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the block's temp dirs land here
    # Padding keeps README line numbers in tracebacks.
    exec(compile("\n" * (line - 1) + code, str(ROOT / name), "exec"),
         {"__name__": "__readme__"})


def test_readme_starts_with_the_two_setup_commands() -> None:
    first, second = list(FENCE.finditer(README))[:2]
    assert [first.group(4).strip(), second.group(4).strip()] == [DEMO_COMMAND, TEST_COMMAND]
    intro = README[:first.start()].strip().split("\n\n")
    assert len(intro) == 2 and intro[0].startswith("# ")  # a title and one paragraph


def test_ci_runs_the_readme_test_command() -> None:
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()

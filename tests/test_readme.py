"""The README is tested: its Python blocks run as written, its set-up commands are what CI runs."""

from __future__ import annotations

import re
import tempfile
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^([ \t]*)```(\w*)\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
DEMO_COMMAND = 'python3 -m venv .venv && .venv/bin/pip install -e ".[demo]" && .venv/bin/activezarr demo'
TEST_COMMAND = ('python3 -m venv .venv && .venv/bin/pip install -e ".[test]" '
                "&& .venv/bin/python -m pytest")


def _python_blocks() -> list[tuple[int, str]]:
    """(first line number, code) of every ```python block."""
    return [(README.count("\n", 0, m.start(3)) + 1, textwrap.dedent(m.group(3)))
            for m in FENCE.finditer(README) if m.group(2) == "python"]


def test_readme_has_python_examples() -> None:
    assert _python_blocks()


@pytest.mark.parametrize("line, code", [pytest.param(n, c, id=f"line{n}")
                                        for n, c in _python_blocks()])
def test_python_block_runs(line: int, code: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the block's temp dirs land here
    # Padding keeps README line numbers in tracebacks.
    exec(compile("\n" * (line - 1) + code, str(ROOT / "README.md"), "exec"),
         {"__name__": "__readme__"})


def test_readme_starts_with_the_two_setup_commands() -> None:
    first, second = list(FENCE.finditer(README))[:2]
    assert [first.group(3).strip(), second.group(3).strip()] == [DEMO_COMMAND, TEST_COMMAND]
    intro = README[:first.start()].strip().split("\n\n")
    assert len(intro) == 2 and intro[0].startswith("# ")  # a title and one paragraph


def test_ci_runs_the_readme_test_command() -> None:
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()

"""benchmarks/small_chunks.py's machinery on a tiny file: every measurement runs, the answers
are checked, the ratios are printed. The figures themselves are measured by running the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "small_chunks.py"


def test_a_tiny_run_measures_the_floors_activezarr_and_pyactivestorage() -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--size", "4", "--repeat", "1"],
                         capture_output=True, text=True, timeout=240, check=True)
    for name in ("floor (numcodecs)", "floor (activezarr decode)", "activezarr",
                 "PyActiveStorage"):
        assert f"  {name} " in run.stdout
    assert "activezarr / floor (numcodecs): " in run.stdout
    assert "PyActiveStorage / activezarr: " in run.stdout

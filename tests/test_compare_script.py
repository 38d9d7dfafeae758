"""benchmarks/compare.py's machinery on a tiny dataset: cases run, answers agree, skips say why.

Only the machinery: the figures themselves are measured by running the script, never here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compare.py"


def test_quick_run_checks_answers_repeats_and_names_what_it_skips(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--loopback", "--json", str(out), "--repeat",
         "2", "--methods", "zarr-http", "az-file-server", "pas-local", "--queries", "mean",
         "climatology"],
        capture_output=True, text=True, timeout=240, check=True)
    assert "no network emulation (--loopback)" in run.stdout
    results = {(r["method"], r["query"]): r for r in json.loads(out.read_text())["results"]}
    for method in ("zarr-http", "az-file-server", "pas-local"):
        mean = results[method, "mean"]
        assert mean["check"] == "ok" and mean["seconds"] > 0 and mean["peak_mib"] > 10
        assert len(mean["runs"]) == 2 and mean["seconds"] == sorted(mean["runs"])[0]
        assert mean["cpu"] > 0
    assert results["pas-local", "climatology"]["skip"] == (
        "PyActiveStorage has no weighted, grouped, quantile, histogram or argmax reductions")
    assert results["zarr-http", "climatology"]["check"] == "ok"
    assert "pas-local          skipped: PyActiveStorage has no" in run.stdout.replace(
        "climatology ", "")

"""benchmarks/scale_out.py's machinery on a tiny dataset and grid, on loopback: every case runs
and agrees with numpy, a killed server still gives the right answer, and the figures are drawn.

Only the machinery: the figures themselves are measured by running the script, never here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "scale_out.py"


def test_quick_grid_checks_answers_survives_a_killed_server_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "scale_out.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--loopback", "--servers", "2", "--workers",
         "0", "1", "--sweep", "64", "--json", str(out), "--docs", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=True)
    assert "no site emulation (--loopback)" in run.stdout
    result = json.loads(out.read_text())
    cases = {(r["method"], r["query"], r["k"], r["w"]) for r in result["grid"]}
    assert cases == {("active", q, 2, w) for q in ("mean", "climatology") for w in (0, 1)} | {
        ("plain", q, 0, 1) for q in ("mean", "climatology")}
    for record in result["grid"]:
        assert record["check"] == "ok" and record["seconds"] > 0, record
        assert 0 <= record["cpu_busy"] <= 1 and record["load"] >= 0
    killed = result["killed"]
    assert (killed["k"], killed["w"], killed["check"]) == (2, 1, "ok")
    assert [r["killed"] for r in killed["runs"]] == [killed["killed"]]
    assert [row["chunk_kib"] for row in result["sweep"]] == [64]
    for row in result["sweep"]:
        assert row["decoder_seconds"] > 0 and row["chunks"] > 0
        assert row["active"] > 0 and row["plain"] > 0
    if importlib.util.find_spec("matplotlib") is None:  # the bench extra draws them
        assert "no figures: matplotlib is not installed" in run.stdout
    else:
        assert (tmp_path / "scale_out.png").stat().st_size > 10000
        assert (tmp_path / "chunk_cost.png").stat().st_size > 10000
    assert "mean of 4 MiB, per-node link loopback: median seconds" in run.stdout

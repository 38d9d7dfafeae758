"""benchmarks/scale_out.py's machinery on a tiny dataset and grid, on loopback: every case runs
and agrees with numpy, a killed server still gives the right answer, and the figures are drawn.

Only the machinery: the figures themselves are measured by running the script, never here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

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


def _benchmark_module() -> Any:
    """benchmarks/scale_out.py as a module (which puts its directory on the path, for its
    helpers)."""
    spec = importlib.util.spec_from_file_location("scale_out", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_pause_of_the_process_is_seen_by_its_pause_watch() -> None:
    """A machine paused (a virtual machine stopped, then resumed) freezes the benchmark's
    process: stopped for 1.5 s, its watch reports the gap, so the run is not kept."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.path.insert(0, sys.argv[1]); "
         "import scale_out; w = scale_out.PauseWatch(); w.__enter__(); print('go', flush=True); "
         "time.sleep(3); w.__exit__(); print(w.longest)", str(SCRIPT.parent)],
        stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline() == "go\n"
    os.kill(child.pid, signal.SIGSTOP)
    time.sleep(1.5)
    os.kill(child.pid, signal.SIGCONT)
    longest = float(child.stdout.read())
    assert child.wait(30) == 0
    assert longest >= 1.0, longest


def _run_with_fault(tmp_path: Path, name: str, fault: Callable[[Any], None]
                    ) -> tuple[Any, dict[str, Any], list[str], list[str]]:
    """One plain mean of a tiny dataset ``name`` on two dask workers on loopback (their logs
    in ``tmp_path``), ``fault(cluster)`` done as its first run starts: the runner, the record
    kept, and the workers' addresses before and after."""
    scale_out = _benchmark_module()
    import _rig

    shape = _rig.Shape(size_mib=1, lat=16, lon=16, days=32)
    with scale_out.object_store("127.0.0.1") as endpoint, \
            contextlib.closing(scale_out.DaskNodes(2, 1, 0, tmp_path, site=False,
                                                   logs=tmp_path)) as cluster:
        # moto's objects outlive its server within a process: a name of each test's own
        ds = scale_out._write(endpoint, shape, name)
        want = scale_out.answer(ds, "mean")
        before = cluster.addresses()

        class Faulty(scale_out.Runner):
            def _answer(self, *args: Any) -> Any:
                if not getattr(self, "faulted", False):
                    self.faulted = True
                    fault(cluster)
                return super()._answer(*args)

        runner = Faulty(cluster, [], endpoint, 0)
        record = runner.run("plain", "mean", 0, 2, name, ds, want)
        return runner, record, before, cluster.addresses()


def test_a_dask_worker_lost_mid_run_is_started_again_and_the_run_repeated(tmp_path: Path
                                                                         ) -> None:
    """The scheduler drops a worker silent past its worker-ttl (a machine paused that long)
    and computes its results again elsewhere: that run's time is no measure, and every later
    run would have one worker fewer. Here the worker is killed mid-run (the loss a pause
    causes, at once): the run is kept aside and repeated, the worker started again, and the
    scheduler's log says so."""
    def kill_w1(cluster: Any) -> None:
        victim = cluster.processes[2]  # the scheduler, w0, w1
        victim.kill()
        victim.wait()
        while "w1" in cluster._names():
            time.sleep(0.05)

    runner, record, before, after = _run_with_fault(tmp_path, "lost.zarr", kill_w1)
    assert record["check"] == "ok" and "spoilt" not in record, record
    assert [r["spoilt"] for r in runner.spoilt] == ["dask worker(s) w1 lost (started again)"]
    assert runner.spoilt[0]["check"] == "ok"  # dask computed it again: right, but slower
    assert runner.records == [record]
    assert after[0] == before[0] and after[1] != before[1]
    removed = [line for line in (tmp_path / "scheduler.log").read_text().splitlines()
               if "Remove worker" in line]
    assert "name: w1" in removed[0], removed  # the others went at the end
    assert {p.name for p in tmp_path.glob("w*.log")} == {"w0.log", "w1.log"}


def test_a_pause_that_loses_every_worker_of_a_run_is_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers silent past the scheduler's worker-ttl (5 s here, 300 s by default) are all
    removed, as after the machine paused that long: the run, whose tasks may run on them
    alone, would wait for ever. It ends, is set aside and run again on the workers started
    again."""
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL", "5s")  # the scheduler's

    def pause_both(cluster: Any) -> None:
        frozen = list(cluster.processes[1:])

        def pause() -> None:  # longer than the ttl
            for process in frozen:
                os.kill(process.pid, signal.SIGSTOP)
            time.sleep(12)
            for process in frozen:
                os.kill(process.pid, signal.SIGCONT)

        threading.Thread(target=pause).start()
        time.sleep(0.5)  # stopped before the run's tasks reach them

    runner, record, _, _ = _run_with_fault(tmp_path, "paused.zarr", pause_both)
    assert record["check"] == "ok" and "spoilt" not in record, record
    [spoilt] = runner.spoilt
    assert spoilt["check"] in ("failed: WorkersLost", "failed: KilledWorker"), spoilt
    assert spoilt["spoilt"] == "dask worker(s) w0, w1 lost (started again)"
    assert "Worker failed to heartbeat" in (tmp_path / "scheduler.log").read_text()

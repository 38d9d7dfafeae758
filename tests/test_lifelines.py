"""No process activezarr starts outlives it (issue 19): ``activezarr demo`` and ``activezarr
ost start`` killed by SIGTERM or SIGKILL, during start-up or while serving, leave none of
their processes, ports or temporary folders behind."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from activezarr.protocol import HEALTH_PATH
from activezarr.servers.processes import listening_socket

#: Seconds the children have to go once their parent has: a server's shutdown (2 s) and the
#: reaper's wait for the folder to stay removed (3 s), on a loaded machine.
GONE_WITHIN = 30.0
Children = dict[int, psutil.Process]


def _ports(pids: set[int]) -> set[int]:
    """The loopback ports ``pids`` listen on."""
    return {c.laddr.port for c in psutil.net_connections(kind="inet")
            if c.pid in pids and c.status == psutil.CONN_LISTEN}


def _answers_health(children: Children, name: str) -> bool:
    """Whether a child whose command line holds ``name`` answers ``/healthz``."""
    pids = {pid for pid, child in children.items() if name in " ".join(_cmdline(child))}
    for port in _ports(pids):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=1):
                return True
        except (urllib.error.URLError, OSError):
            pass
    return False


def _cmdline(child: psutil.Process) -> list[str]:
    try:
        return child.cmdline()
    except psutil.Error:
        return []


def _started(children: Children, name: str) -> bool:
    return any(name in " ".join(_cmdline(child)) for child in children.values())


def _running(child: psutil.Process) -> bool:
    try:
        return child.is_running() and child.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def _free_ports(count: int) -> int:
    """A first port of ``count`` consecutive ones that can be bound right now, below Linux's
    ephemeral range, where no outgoing connection takes them meanwhile."""
    rng = random.Random()
    for _ in range(100):
        first = rng.randrange(20000, 32000)
        try:
            for port in range(first, first + count):
                listening_socket(port=port).close()
        except OSError:
            continue
        return first
    raise RuntimeError("no free ports")


#: (command line, moment) -> when to kill, judged from the children seen so far.
MOMENTS: dict[str, Callable[[Children], bool]] = {
    "demo start-up": lambda children: _started(children, "activezarr.servers.active"),
    "demo serving": lambda children: _answers_health(children, " mds "),
    "ost start-up": lambda children: _started(children, " target "),
    "ost serving": lambda children: _answers_health(children, " mds "),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_nothing_outlives_a_killed_command(tmp_path: Path, moment: str, signum: int) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    command = (["demo"] if moment.startswith("demo") else
               ["ost", "start", "--root", str(tmp_path / "root"), "--osts", "2",
                "--port", str(_free_ports(4))])
    log = tmp_path / "output"
    with open(log, "wb") as output:
        parent = subprocess.Popen([sys.executable, "-m", "activezarr", *command],
                                  stdout=output, stderr=subprocess.STDOUT,
                                  env={**os.environ, "TMPDIR": str(temporary)})
    children: Children = {}
    try:
        deadline = time.monotonic() + 180
        while not MOMENTS[moment](children):
            assert parent.poll() is None, f"exited before {moment}: {log.read_text()}"
            assert time.monotonic() < deadline, f"{command} never reached {moment}"
            children.update((c.pid, c) for c in psutil.Process(parent.pid).children(True))
            time.sleep(0.05)
        ports = _ports(set(children))
        os.kill(parent.pid, signum)
        parent.wait(30)
    finally:
        if parent.poll() is None:
            parent.kill()
    deadline = time.monotonic() + GONE_WITHIN
    while (any(map(_running, children.values())) or any(temporary.iterdir())
           or not all(map(_refused, ports))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [" ".join(_cmdline(c)) for c in children.values() if _running(c)] == []
    assert [port for port in ports if not _refused(port)] == []
    assert list(temporary.iterdir()) == []
    if moment == "demo serving":
        assert len(children) >= 1 + 6  # the reaper and the cluster, at least
    if signum == signal.SIGTERM:
        assert parent.returncode == 128 + signal.SIGTERM or moment == "ost serving"

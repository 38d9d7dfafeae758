"""Starting our servers as real processes on loopback, for the demo, benchmarks and tests."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..protocol import HEALTH_PATH


def listening_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A socket bound (port 0: any free port) and listening, for a child server to inherit.

    Binding in the parent and handing the socket over leaves no moment in which another
    process could take the port between choosing it and the child binding it.
    """
    sock = socket.create_server((host, port), backlog=128)
    sock.set_inheritable(True)
    return sock


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def spawn(command: Sequence[str], sock: socket.socket, **popen: Any
          ) -> subprocess.Popen[bytes]:
    """Start ``command --fd N`` with ``sock`` as descriptor N; the parent's copy is closed."""
    fd = sock.fileno()
    try:
        return subprocess.Popen([*command, "--fd", str(fd)], pass_fds=(fd,), **popen)
    finally:
        sock.close()


def wait_healthy(urls: Sequence[str], processes: Mapping[str, subprocess.Popen[bytes]],
                 timeout: float = 30.0, context: ssl.SSLContext | None = None) -> None:
    """Return once every ``url`` answers; raise at once if one of ``processes`` has exited."""
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            dead = [n for n, p in processes.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"process(es) {dead} exited during start-up")
            try:
                with urllib.request.urlopen(url, timeout=1, context=context):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{url} not healthy after {timeout} s") from None
                time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, as a service manager would; SIGKILL if it does not go in ``timeout`` s."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def active_server(*args: str, log: Path | None = None, env: Mapping[str, str] | None = None,
                  context: ssl.SSLContext | None = None, timeout: float = 30.0,
                  host: str = "127.0.0.1") -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``activezarr serve`` with ``args`` on a port of ``host`` bound here: yields (URL, process).

    Its output goes to ``log`` (default: discarded), which a start-up error quotes. With
    ``context`` it is reached over https. On exit it is stopped with SIGTERM.
    """
    sock = listening_socket(host)
    url = f"{'https' if context else 'http'}://{host}:{port_of(sock)}"
    with contextlib.ExitStack() as files:  # the child keeps its own copy of the descriptor
        output = files.enter_context(open(log, "wb")) if log else subprocess.DEVNULL
        process = spawn(
            [sys.executable, "-m", "activezarr.servers.active", *args], sock,
            stdout=output, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    try:
        try:
            wait_healthy([url + HEALTH_PATH], {"active server": process}, timeout, context)
        except (RuntimeError, TimeoutError) as exc:
            printed = log.read_text(errors="replace") if log else "(output discarded)"
            raise RuntimeError(f"active server did not start: {exc}\n{printed}") from exc
        yield url, process
    finally:
        stop(process)

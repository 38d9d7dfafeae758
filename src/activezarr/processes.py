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
from typing import IO


def free_ports(n: int = 1, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports nobody listens on right now."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


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
                  context: ssl.SSLContext | None = None, timeout: float = 30.0
                  ) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``activezarr serve`` with ``args`` on a free loopback port: yields (URL, process).

    Its output goes to ``log`` (default: discarded), which a start-up error quotes. With
    ``context`` it is reached over https. On exit it is stopped with SIGTERM.
    """
    [port] = free_ports()
    url = f"{'https' if context else 'http'}://127.0.0.1:{port}"
    output: IO[bytes] | int = open(log, "wb") if log else subprocess.DEVNULL
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "activezarr.server", "--host", "127.0.0.1",
             "--port", str(port), *args],
            stdout=output, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    finally:
        if not isinstance(output, int):
            output.close()
    try:
        try:
            wait_healthy([f"{url}/healthz"], {"active server": process}, timeout, context)
        except (RuntimeError, TimeoutError) as exc:
            output = log.read_text(errors="replace") if log else "(output discarded)"
            raise RuntimeError(f"active server did not start: {exc}\n{output}") from exc
        yield url, process
    finally:
        stop(process)

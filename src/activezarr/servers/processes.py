"""Starting our servers as real processes on loopback, for the demo, benchmarks and tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..protocol import HEALTH_PATH
from .lifeline import LIFELINE_VARIABLE


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
    """Start ``command --fd N`` with ``sock`` as descriptor N; the parent's copy is closed.

    The child's stdin is its lifeline (:mod:`.lifeline`): our servers stop when this process
    goes, by any signal. Keep the returned process while the child should run: dropping it
    closes the lifeline.
    """
    fd = sock.fileno()
    env = {**(popen.pop("env", None) or os.environ), LIFELINE_VARIABLE: "stdin"}
    try:
        return subprocess.Popen([*command, "--fd", str(fd)], pass_fds=(fd,),
                                stdin=subprocess.PIPE, env=env, **popen)
    finally:
        sock.close()


@contextlib.contextmanager
def temporary_directory(prefix: str = "activezarr-") -> Iterator[Path]:
    """A new temporary folder, removed on leaving. A SIGKILL leaves this process no chance to
    remove it, so a small process of its own (the reaper, :func:`.lifeline.reap`) waits for
    this one to go and removes it then."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        # A session of its own: a terminal's Ctrl-C or a kill of the process group leaves it.
        reaper = subprocess.Popen([sys.executable, "-m", "activezarr.servers.lifeline",
                                   str(path)], stdin=subprocess.PIPE, start_new_session=True)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        reaper.kill()  # nothing left for it to do
        stop(reaper)


@contextlib.contextmanager
def terminated_as_exit() -> Iterator[None]:
    """While inside, SIGTERM (a job scheduler's, a CI runner's or ``timeout``'s stop) raises
    SystemExit(143) in the main thread as Ctrl-C raises KeyboardInterrupt, so that the servers
    started are stopped and temporary folders removed on the way out. A second SIGTERM during
    that clean-up is ignored; SIGKILL still ends it, and the lifelines end the servers."""

    def exit_once(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_once)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    if process.stdin is not None:
        process.stdin.close()  # its lifeline, now that it is gone


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

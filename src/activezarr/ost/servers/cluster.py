"""Starting and stopping a cluster: one process per OST, an OSS and an MDS, all on loopback."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from ...protocol import HEALTH_PATH
from ...servers.metrics import parse_links
from ...servers.processes import listening_socket, port_of, spawn, stop, wait_healthy
from ...servers.settings import (
    Listening,
    Reductions,
    Settings,
    reductions_setting,
    same_as,
    setting,
)
from ..wire.messages import TOKEN_HEADER, TOKEN_VARIABLE
from ..wire.ratelimit import MB
from ..wire.transport import register_token

LAN_HELP = "MB/s between the storage and the client; unlimited when absent."
DISK_HELP = "MB/s of each OST's disk; unlimited when absent."


class ClusterConfig(Settings):
    """A cluster's shape (``activezarr ost start``'s options). Every socket is bound here and
    handed to its server, so no other process can take a port between its choice and the
    server's start."""

    root: Path = setting(..., "Directory holding the MDS state and one directory per OST.")
    osts: int = setting(4, "Number of OSTs (object storage targets), one process each.", ge=1)
    stripe_size: int = setting(1 << 20, "Default stripe size in bytes.", ge=1)
    stripe_count: int = setting(-1, "Default OSTs per file; -1 stripes over all.", ge=-1)
    port: int = setting(0, "MDS port (0: free ports, printed); OST i listens on PORT+1+i and the "
                        "OSS on PORT+OSTS+1.", ge=0, le=65535)
    host: str = setting("127.0.0.1", "Interface every server listens on.")
    lan_rate: float | None = setting(None, LAN_HELP, gt=0)
    disk_rate: float | None = setting(None, DISK_HELP, gt=0)
    #: Each server's, as its own command declares it.
    max_connections: int = same_as(Listening, "max_connections")
    #: The OSTs and the OSS serve these besides the built-ins.
    reductions: Reductions = reductions_setting()
    #: A client remembers a stalled server within one reduction; the OSS serves them all.
    stall_memory: float = setting(
        5.0, "Seconds the OSS answers at once for an OST that stalled or could not be reached, "
        "without asking it again (0: every request waits for it).", ge=0)

    def sockets(self) -> list[socket.socket]:
        """Listening sockets for [MDS, OST 0, ..., OST N-1, OSS]."""
        made: list[socket.socket] = []
        try:
            for i in range(self.osts + 2):
                made.append(listening_socket(self.host, self.port + i if self.port else 0))
        except BaseException:
            for sock in made:
                sock.close()
            raise
        return made


@dataclass
class Cluster:
    """A running cluster; a context manager that stops every process it started."""

    config: ClusterConfig
    mds: str = ""
    osts: list[str] = field(default_factory=list)
    oss: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: The token every call but ``/healthz`` must carry; clients in this process get it
    #: registered.
    token: str = field(default_factory=lambda: secrets.token_hex(16))

    @property
    def url(self) -> str:
        """The ``ost://`` URL of the root of the file system."""
        return "ost://" + self.mds.removeprefix("http://")

    @property
    def token_file(self) -> Path:
        """Where the token is kept for other processes (readable by its owner only)."""
        return self.config.root / "token"

    def _spawn(self, name: str, sock: socket.socket, *args: str) -> None:
        command = [sys.executable, "-m", "activezarr.ost", *args,
                   "--max-connections", str(self.config.max_connections)]
        self.processes[name] = spawn(command, sock, start_new_session=True,
                                     env={**os.environ, TOKEN_VARIABLE: self.token})

    def start(self, timeout: float = 30.0) -> Self:
        c = self.config
        c.root.mkdir(parents=True, exist_ok=True)
        self.token_file.touch(mode=0o600)
        self.token_file.chmod(0o600)  # also when it was left by an earlier cluster
        self.token_file.write_text(self.token)
        sockets = c.sockets()
        base = f"http://{c.host}"
        self.mds, self.oss = f"{base}:{port_of(sockets[0])}", f"{base}:{port_of(sockets[-1])}"
        self.osts = [f"{base}:{port_of(s)}" for s in sockets[1:-1]]
        register_token(self.mds, self.token)
        rate = [] if c.disk_rate is None else ["--disk-rate", str(c.disk_rate)]
        plugins = ["--reductions", ",".join(c.reductions)] if c.reductions else []
        try:
            for i, sock in enumerate(sockets[1:-1]):
                self._spawn(f"ost{i}", sock, "target", "--root", str(c.root / f"ost{i}"), *rate,
                            *plugins)
            self._spawn("oss", sockets[-1], "oss", "--mds", self.mds, "--stall-memory",
                        str(c.stall_memory), *plugins)
            lan = [] if c.lan_rate is None else ["--lan-rate", str(c.lan_rate)]
            self._spawn("mds", sockets[0], "mds", "--state", str(c.root / "mds.json"),
                        "--oss", self.oss, "--stripe-size", str(c.stripe_size),
                        "--stripe-count", str(c.stripe_count), *lan,
                        *(a for url in self.osts for a in ("--ost", url)))
        finally:
            for sock in sockets:
                sock.close()
        try:
            wait_healthy([u + HEALTH_PATH for u in (self.mds, self.oss, *self.osts)],
                         self.processes, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def links(self) -> Counter[str]:
        """Bytes each link has carried so far, summed over the servers' ``/metrics``."""
        total: Counter[str] = Counter()
        for url in (self.mds, self.oss, *self.osts):
            asked = urllib.request.Request(url + "/metrics", headers={TOKEN_HEADER: self.token})
            with urllib.request.urlopen(asked, timeout=5) as response:
                total.update(parse_links(response.read().decode()))
        return total

    def kill(self, name: str) -> None:
        """Kill one process (``ost2``, ``oss``, ``mds``) at once, as a crash would."""
        process = self.processes[name]
        process.kill()
        stop(process)

    def stop(self, timeout: float = 5.0) -> None:
        for process in self.processes.values():  # all at once, then wait for each
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            stop(process, timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mb_per_s(rate: float | None) -> float | None:
    """Bytes per second from the MB/s the command line speaks."""
    return None if rate is None else rate * MB


def run_until_signalled(cluster: Cluster) -> None:
    """Keep ``cluster`` up until SIGINT or SIGTERM, or until one of its processes dies."""
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop:
            dead = [n for n, p in cluster.processes.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"cluster process(es) {dead} exited")
            time.sleep(0.2)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        cluster.stop()

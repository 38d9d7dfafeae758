"""An emulated LAN: two network namespaces of our own joined by a veth pair shaped with tc tbf.

The storage side (S3, active server, OST cluster) runs in ``az13-store``, each client case in
``az13-client``; the only addresses are the two ends of the veth pair, inside those namespaces,
so no traffic leaves them. Bytes to the client are the store end's ``tx_bytes`` (Ethernet
frames: TCP/IP headers included), read by the kernel, not by the process measured.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

#: ``AZ_BENCH_NETNS`` names them otherwise, so that two runs on one machine do not collide.
PREFIX = os.environ.get("AZ_BENCH_NETNS", "az13")
STORE, CLIENT = f"{PREFIX}-store", f"{PREFIX}-client"
STORE_IF, CLIENT_IF = "az13s", "az13c"
#: The veth pair's addresses: they exist only inside the two namespaces made here.
STORE_IP, CLIENT_IP = "10.213.13.1", "10.213.13.2"


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True, timeout=30)


def teardown() -> None:
    """Delete both namespaces (the veth pair goes with them); quiet if they are already gone."""
    for name in (CLIENT, STORE):
        _ip("netns", "del", name, check=False)


def can_emulate() -> str | None:
    """None if namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "not root: cannot make network namespaces"
    if not all(Path(p).exists() for p in ("/usr/sbin/ip", "/usr/sbin/tc")) and \
            subprocess.run(["which", "ip", "tc"], capture_output=True).returncode:
        return "`ip` or `tc` is missing"
    return None


def _shape(namespace: str, device: str, rate: str) -> None:
    # burst: at least rate/HZ worth of bytes so tbf can reach its rate; 1 MiB covers 10 Gbit
    subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", device,
                    "root", "tbf", "rate", rate, "burst", "1mb", "latency", "50ms"],
                   check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def torn_down(remove: Callable[[], None]) -> Iterator[None]:
    """Call ``remove`` before (a previous run killed with SIGKILL may have left namespaces) and
    on any exit: SIGINT/SIGTERM/SIGHUP raise SystemExit here so that the ``finally`` runs, and
    atexit covers an exit from elsewhere."""
    remove()

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    atexit.register(remove)
    try:
        yield
    finally:
        remove()
        atexit.unregister(remove)
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def lan(rate: str | None) -> Iterator[None]:
    """Make the namespaces (``rate`` None: an unshaped veth); remove them on any exit."""
    with torn_down(teardown):
        for name in (STORE, CLIENT):
            _ip("netns", "add", name)
            _ip("-n", name, "link", "set", "lo", "up")
        _ip("link", "add", STORE_IF, "netns", STORE, "type", "veth",
            "peer", "name", CLIENT_IF, "netns", CLIENT)
        for name, dev, addr in ((STORE, STORE_IF, STORE_IP), (CLIENT, CLIENT_IF, CLIENT_IP)):
            _ip("-n", name, "addr", "add", f"{addr}/30", "dev", dev)
            _ip("-n", name, "link", "set", dev, "up")
            if rate:
                _shape(name, dev, rate)
        yield


def in_namespace(name: str, command: list[str]) -> list[str]:
    return ["ip", "netns", "exec", name, *command]


def bytes_to_client() -> int:
    """Bytes sent so far by the store end of the pair (read inside the store namespace)."""
    return int(Path(f"/sys/class/net/{STORE_IF}/statistics/tx_bytes").read_text())

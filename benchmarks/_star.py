"""An emulated site: an object store in a hub namespace, and nodes each on a link of its own.

Node ``i`` is the network namespace ``{PREFIX}-n{i}``, joined to ``{PREFIX}-hub`` by a veth pair
(10.222.i.1 on the hub, 10.222.i.2 on the node; the hub routes between nodes). The object store
listens on ``STORE_IP`` in the hub, and only what it sends is shaped, on the hub end of each
pair, with an htb class of ``rate``: every node has a bounded link to storage, while requests,
answers and dask's transfers between nodes cross the site's (unshaped) compute network. A
node's bytes from storage are that hub end's counter of the shaped class, read by the kernel.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Iterator

import _netns

#: ``AZ_BENCH_STAR`` names them otherwise, so that two runs on one machine do not collide.
PREFIX = os.environ.get("AZ_BENCH_STAR", "az22")
HUB = f"{PREFIX}-hub"
#: The object store's address: on the hub's loopback, reached by every node through its link.
STORE_IP = "10.222.255.1"
#: What the rest of the hub sends (nodes to nodes): fast enough never to be the bound.
UNSHAPED = "10gbit"


def node(i: int) -> str:
    return f"{PREFIX}-n{i}"


def node_ip(i: int) -> str:
    return f"10.222.{i}.2"


def _link(i: int) -> str:
    return f"h{i}"


def _tc(*args: str) -> None:
    subprocess.run(["ip", "netns", "exec", HUB, "tc", *args], check=True, capture_output=True,
                   timeout=30)


def teardown() -> None:
    """Delete every namespace of ours (their veth pairs go with them)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in re.findall(rf"^({re.escape(PREFIX)}-\S+)", listed, re.MULTILINE):
        _netns._ip("netns", "del", name, check=False)


def set_rate(nodes: int, rate: str) -> None:
    """Every node's link to storage at ``rate`` from now on."""
    for i in range(nodes):
        _tc("class", "change", "dev", _link(i), "parent", "1:", "classid", "1:10", "htb",
            "rate", rate)


def bytes_from_store(i: int) -> int:
    """Bytes the object store has sent to node ``i`` so far (the shaped class's counter)."""
    shown = subprocess.run(["ip", "netns", "exec", HUB, "tc", "-s", "class", "show", "dev",
                            _link(i), "classid", "1:10"], capture_output=True, text=True,
                           check=True, timeout=30).stdout
    return int(re.search(r"Sent (\d+) bytes", shown).group(1))  # type: ignore[union-attr]


@contextlib.contextmanager
def site(nodes: int, rate: str) -> Iterator[None]:
    """Make the hub and ``nodes`` nodes, links shaped at ``rate``; remove them on any exit."""
    with _netns.torn_down(teardown):
        _netns._ip("netns", "add", HUB)
        _netns._ip("-n", HUB, "link", "set", "lo", "up")
        _netns._ip("-n", HUB, "addr", "add", f"{STORE_IP}/32", "dev", "lo")
        subprocess.run(["ip", "netns", "exec", HUB, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True, capture_output=True, timeout=30)
        for i in range(nodes):
            name, link = node(i), _link(i)
            _netns._ip("netns", "add", name)
            _netns._ip("-n", name, "link", "set", "lo", "up")
            _netns._ip("link", "add", link, "netns", HUB, "type", "veth", "peer", "name", "eth0",
                       "netns", name)
            _netns._ip("-n", HUB, "addr", "add", f"10.222.{i}.1/30", "dev", link)
            _netns._ip("-n", HUB, "link", "set", link, "up")
            _netns._ip("-n", name, "addr", "add", f"{node_ip(i)}/30", "dev", "eth0")
            _netns._ip("-n", name, "link", "set", "eth0", "up")
            _netns._ip("-n", name, "route", "add", "default", "via", f"10.222.{i}.1")
            _tc("qdisc", "add", "dev", link, "root", "handle", "1:", "htb", "default", "20")
            _tc("class", "add", "dev", link, "parent", "1:", "classid", "1:10", "htb",
                "rate", rate)
            _tc("class", "add", "dev", link, "parent", "1:", "classid", "1:20", "htb",
                "rate", UNSHAPED)
            _tc("filter", "add", "dev", link, "parent", "1:", "protocol", "ip", "prio", "1",
                "u32", "match", "ip", "src", f"{STORE_IP}/32", "flowid", "1:10")
        yield


def in_hub(command: list[str]) -> list[str]:
    return _netns.in_namespace(HUB, command)


def on_node(i: int, command: list[str]) -> list[str]:
    return _netns.in_namespace(node(i), command)

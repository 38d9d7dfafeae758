"""``activezarr ost ...``: the simulated file system's cluster and its server processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..commands.params import REDUCTIONS_HELP, OneLineErrorsGroup, comma_separated
from ..servers.lifeline import follow_parent
from ..servers.processes import terminated_as_exit
from .servers.cluster import Cluster, ClusterConfig, mb_per_s, run_until_signalled
from .servers.serving import serve
from .wire.messages import TOKEN_VARIABLE

_RATE: dict[str, Any] = {"type": float, "default": None}
LAN_HELP = "MB/s between the storage and the client; unlimited when absent."
DISK_HELP = "MB/s of each OST's disk; unlimited when absent."
HOST_HELP = "Interface to listen on."
PORT_HELP = "Port to listen on."
_REDUCTIONS = click.option("--reductions", default="", callback=comma_separated,
                           help=REDUCTIONS_HELP)


@click.group("ost", cls=OneLineErrorsGroup)
def ost() -> None:
    """The simulated parallel file system (ost://): an MDS, OSTs and an OSS on loopback."""
    follow_parent()  # a server the cluster launcher started stops when the launcher goes


@ost.command("start")
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory holding the MDS state and one directory per OST.")
@click.option("--osts", type=click.IntRange(1), default=4, show_default=True,
              help="Number of OSTs (object storage targets), one process each.")
@click.option("--stripe-size", type=click.IntRange(1), default=1 << 20, show_default=True,
              help="Default stripe size in bytes.")
@click.option("--stripe-count", type=click.IntRange(-1), default=-1, show_default=True,
              help="Default OSTs per file; -1 stripes over all.")
@click.option("--port", type=click.IntRange(1, 65535), default=7070, show_default=True,
              help="MDS port; OST i listens on PORT+1+i and the OSS on PORT+OSTS+1.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface every server listens on.")
@click.option("--lan-rate", **_RATE, help=LAN_HELP)
@click.option("--disk-rate", **_RATE, help=DISK_HELP)
@_REDUCTIONS
def start(root: Path, osts: int, stripe_size: int, stripe_count: int, port: int, host: str,
          lan_rate: float | None, disk_rate: float | None, reductions: tuple[str, ...]) -> None:
    """Run a cluster in the foreground until SIGINT or SIGTERM."""
    config = ClusterConfig(root=root, osts=osts, stripe_size=stripe_size,
                           stripe_count=stripe_count, port=port, host=host,
                           lan_rate=lan_rate, disk_rate=disk_rate, reductions=reductions)
    with terminated_as_exit():  # SIGTERM during start-up stops what has started
        try:
            cluster = Cluster(config).start()
        except OSError as exc:  # a port in use: said plainly, not as a traceback
            raise click.ClickException(f"cannot start the cluster: {exc}") from None
    click.echo(f"MDS {cluster.mds}  OSS {cluster.oss}  OSTs {' '.join(cluster.osts)}")
    click.echo(f"file system at {cluster.url}/ ; stop with Ctrl-C")
    click.echo(f"clients need the cluster token: "
               f"export {TOKEN_VARIABLE}=$(cat {cluster.token_file})")
    run_until_signalled(cluster)


def _listening(function: Callable[..., None]) -> Callable[..., None]:
    """``--host``/``--port`` or an inherited socket (``--fd``), and the cluster's token."""
    for decorator in reversed((
        click.option("--host", default="127.0.0.1", help=HOST_HELP),
        click.option("--port", type=int, default=None, help=PORT_HELP),
        click.option("--fd", type=int, default=None, hidden=True,
                     help="Serve on this inherited listening socket."),
        click.option("--token", envvar=TOKEN_VARIABLE, required=True, show_envvar=True,
                     help="The cluster's token, required on every call but /healthz."),
    )):
        function = decorator(function)
    return function


@ost.command("target")
@click.option("--root", required=True, type=click.Path(file_okay=False),
              help="Directory holding this OST's objects.")
@click.option("--disk-rate", **_RATE, help=DISK_HELP)
@_REDUCTIONS
@_listening
def target(root: str, host: str, port: int | None, fd: int | None, token: str,
           disk_rate: float | None, reductions: tuple[str, ...]) -> None:
    """Run one OST server (the cluster launcher starts these)."""
    from .servers.target import create_target_app

    serve(create_target_app(root, token, mb_per_s(disk_rate), reductions), host, port, fd)


@ost.command("oss")
@click.option("--mds", required=True, help="MDS URL.")
@_REDUCTIONS
@_listening
def oss(host: str, port: int | None, fd: int | None, token: str, mds: str,
        reductions: tuple[str, ...]) -> None:
    """Run the OSS server (the cluster launcher starts it)."""
    from .servers.oss import create_oss_app

    serve(create_oss_app(mds, token, reductions), host, port, fd)


@ost.command("mds")
@click.option("--state", required=True, type=click.Path(dir_okay=False),
              help="JSON file where the MDS keeps every file's layout.")
@_listening
@click.option("--ost", "osts", multiple=True, required=True, help="OST URL, in order. Repeatable.")
@click.option("--oss", default=None, help="OSS URL.")
@click.option("--stripe-size", type=click.IntRange(1), required=True,
              help="Default stripe size in bytes.")
@click.option("--stripe-count", type=click.IntRange(-1), default=-1,
              help="Default OSTs per file; -1 stripes over all.")
@click.option("--lan-rate", **_RATE, help=LAN_HELP)
def mds(state: str, host: str, port: int | None, fd: int | None, token: str,
        osts: tuple[str, ...], oss: str | None, stripe_size: int, stripe_count: int,
        lan_rate: float | None) -> None:
    """Run the MDS server (the cluster launcher starts it)."""
    from .servers.mds import create_mds_app
    from .wire.messages import ClusterMap

    cluster_map = ClusterMap(osts=osts, oss=oss, stripe_size=stripe_size,
                             stripe_count=stripe_count, lan_rate=mb_per_s(lan_rate))
    serve(create_mds_app(state, cluster_map, token), host, port, fd)

"""``activezarr ost ...``: the simulated file system's cluster and its server processes. Their
settings are declared once, in :class:`~activezarr.ost.servers.cluster.ClusterConfig` and
:class:`~activezarr.ost.servers.serving.Serving`; the options are made from them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from ..commands.params import OneLineErrorsGroup
from ..commands.settings import options_from, settings_from
from ..servers.lifeline import follow_parent
from ..servers.processes import terminated_as_exit
from ..servers.settings import Reductions, reductions_setting, same_as
from .servers.cluster import Cluster, ClusterConfig, mb_per_s, run_until_signalled
from .servers.serving import Serving, serve
from .wire.messages import TOKEN_VARIABLE

#: ``ACTIVEZARR_OST_TOKEN`` for ``--token``.
PREFIX = "ACTIVEZARR_OST_"


class TargetSettings(Serving):
    """An OST server's settings."""

    disk_rate: float | None = same_as(ClusterConfig, "disk_rate")
    reductions: Reductions = reductions_setting()


class OSSSettings(Serving):
    """The OSS's settings."""

    reductions: Reductions = reductions_setting()
    stall_memory: float = same_as(ClusterConfig, "stall_memory")


class MDSSettings(Serving):
    """The MDS's settings: the cluster's default striping and its LAN."""

    stripe_size: int = same_as(ClusterConfig, "stripe_size")
    stripe_count: int = same_as(ClusterConfig, "stripe_count")
    lan_rate: float | None = same_as(ClusterConfig, "lan_rate")


@click.group("ost", cls=OneLineErrorsGroup)
def ost() -> None:
    """The simulated parallel file system (ost://): an MDS, OSTs and an OSS on loopback."""
    follow_parent()  # a server the cluster launcher started stops when the launcher goes


@ost.command("start")
@options_from(ClusterConfig, PREFIX)
def start(**given: Any) -> None:
    """Run a cluster in the foreground until SIGINT or SIGTERM."""
    config = settings_from(ClusterConfig, given)
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


def _server(settings: type[Serving]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options of ``settings`` and an inherited listening socket (``--fd``)."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        function = click.option("--fd", type=int, default=None, hidden=True,
                                help="Serve on this inherited listening socket.")(function)
        return options_from(settings, PREFIX)(function)

    return decorate


@ost.command("target")
@click.option("--root", required=True, type=click.Path(file_okay=False),
              help="Directory holding this OST's objects.")
@_server(TargetSettings)
def target(root: str, fd: int | None, **given: Any) -> None:
    """Run one OST server (the cluster launcher starts these)."""
    from .servers.target import create_target_app

    settings = settings_from(TargetSettings, given)
    serve(create_target_app(root, settings.token, mb_per_s(settings.disk_rate),
                            settings.reductions), settings, fd)


@ost.command("oss")
@click.option("--mds", required=True, help="MDS URL.")
@_server(OSSSettings)
def oss(mds: str, fd: int | None, **given: Any) -> None:
    """Run the OSS server (the cluster launcher starts it)."""
    from .servers.oss import create_oss_app

    settings = settings_from(OSSSettings, given)
    serve(create_oss_app(mds, settings.token, settings.reductions, settings.stall_memory),
          settings, fd)


@ost.command("mds")
@click.option("--state", required=True, type=click.Path(dir_okay=False),
              help="JSON file where the MDS keeps every file's layout.")
@click.option("--ost", "osts", multiple=True, required=True, help="OST URL, in order. Repeatable.")
@click.option("--oss", default=None, help="OSS URL.")
@_server(MDSSettings)
def mds(state: str, osts: tuple[str, ...], oss: str | None, fd: int | None,
        **given: Any) -> None:
    """Run the MDS server (the cluster launcher starts it)."""
    from .servers.mds import create_mds_app
    from .wire.messages import ClusterMap

    settings = settings_from(MDSSettings, given)
    cluster_map = ClusterMap(osts=osts, oss=oss, stripe_size=settings.stripe_size,
                             stripe_count=settings.stripe_count,
                             lan_rate=mb_per_s(settings.lan_rate))
    serve(create_mds_app(state, cluster_map, settings.token), settings, fd)

"""``activezarr serve``: run the active server. Its options are made from
:class:`~activezarr.servers.active.config.ServeSettings`; each also reads an ACTIVEZARR_*
variable."""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

import click

from ..servers import http
from ..servers.active.app import create_app
from ..servers.active.config import ServeSettings
from ..servers.lifeline import follow_parent
from .params import one_line_errors
from .settings import options_from, settings_from


@click.command("serve")
@options_from(ServeSettings)
@click.option("--fd", type=int, default=None, hidden=True,
              help="Serve on this inherited listening socket instead of HOST:PORT.")
def serve(fd: int | None, **given: Any) -> None:
    """Serve the active-storage protocol (Reductionist v2 compatible)."""
    follow_parent()  # started by activezarr (demo, tests): stop when that process goes
    settings = settings_from(ServeSettings, given)
    context = None
    if settings.tls_cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    scheme = "https" if context else "http"
    reaches = [str(u.public) for u in settings.upstreams] + list(settings.roots)
    host, port = settings.host, settings.port
    sock = None if fd is None else socket.socket(fileno=fd)  # bound by the parent
    if sock is not None:
        host, port = sock.getsockname()[:2]
    where: dict[str, Any] = {"host": host, "port": port} if sock is None else {"sock": sock}
    with one_line_errors():  # e.g. the port is taken
        http.run(create_app(settings), ssl_context=context, shutdown_timeout=10,
                 max_connections=settings.max_connections, access_log=settings.access_log,
                 # called once listening: the address, and what the server may read
                 listening=lambda: click.echo(
                     f"activezarr serve: listening on {scheme}://{host}:{port} "
                     f"(reads {', '.join(reaches) or 'nothing: give --upstream or --allow-root'}"
                     "); Ctrl-C stops"), **where)

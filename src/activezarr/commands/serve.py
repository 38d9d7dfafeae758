"""``activezarr serve``: run the active server. Every flag also reads an ACTIVEZARR_* variable."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

import click

from ..errors import UnknownReductionError
from ..servers import http
from ..servers.active.app import create_app
from ..servers.active.config import ServerConfig, Upstream
from ..servers.lifeline import follow_parent
from .params import REDUCTIONS_HELP, comma_separated, one_line_errors


def _upstream(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
              ) -> tuple[Upstream, ...]:
    try:
        return tuple(Upstream.parse(v) for v in values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _option(*names: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option that also reads ``ACTIVEZARR_<NAME>`` from the environment."""
    env = "ACTIVEZARR_" + names[0].lstrip("-").replace("-", "_").upper()
    return click.option(*names, envvar=env, show_envvar=True, **kwargs)


@click.command("serve")
@_option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@_option("--port", type=int, default=8080, show_default=True, help="Port to listen on.")
@click.option("--fd", type=int, default=None, hidden=True,
              help="Serve on this inherited listening socket instead of HOST:PORT.")
@_option("--upstream", multiple=True, callback=_upstream,
         help="Object store the server may read: PUBLIC[=INTERNAL] URL. Repeatable.")
@_option("--allow-root", multiple=True, type=click.Path(exists=True, file_okay=False),
         help="Directory served to interface_type 'file'. Repeatable.")
@_option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
         help="Certificate (PEM) to serve https with; needs --tls-key.")
@_option("--tls-key", type=click.Path(exists=True, dir_okay=False),
         help="Private key (PEM) of --tls-cert.")
@_option("--max-body", type=int, default=ServerConfig.max_body, show_default=True,
         help="Largest request body accepted, in bytes; larger is refused with 413.")
@_option("--max-chunk-bytes", type=int, default=ServerConfig.max_chunk_bytes, show_default=True,
         help="Largest stored chunk read, in bytes; larger is refused with 413.")
@_option("--max-decoded-bytes", type=int, default=ServerConfig.max_decoded_bytes,
         show_default=True, help="Largest decoded chunk, in bytes; larger is refused.")
@_option("--max-memory", type=int, default=ServerConfig.max_memory, show_default=True,
         help="Bytes all requests may hold at once (read, decoded, results).")
@_option("--max-inflight", type=int, default=ServerConfig.max_inflight, show_default=True,
         help="Requests served at once; more are refused with 503.")
@_option("--memory-wait", type=float, default=ServerConfig.memory_wait, show_default=True,
         help="Seconds a request waits for memory before a 503.")
@_option("--body-timeout", type=float, default=ServerConfig.body_timeout, show_default=True,
         help="Seconds a client has to send its request body.")
@_option("--request-timeout", type=click.FloatRange(min=0, min_open=True),
         default=ServerConfig.request_timeout, show_default=True,
         help="Seconds a request may take; then its remaining work stops and it is answered "
         "504 (keep it below the clients' timeout).")
@_option("--max-request-decoded-bytes", type=click.IntRange(min=1),
         default=ServerConfig.max_request_decoded_bytes, show_default=True,
         help="Bytes one request (a whole batch) may decode in all; more is refused with 413.")
@_option("--max-connections", type=click.IntRange(min=1), default=ServerConfig.max_connections,
         show_default=True, help="Connections open at once; more are answered 503 and closed.")
@_option("--workers", type=int, default=None, help="Decode/reduce threads [default: CPUs].")
@_option("--s3-region", default=ServerConfig.s3_region, show_default=True,
         help="Region S3 requests are signed for.")
@_option("--upstream-timeout", type=click.FloatRange(min=0, min_open=True),
         default=ServerConfig.upstream_timeout, show_default=True,
         help="Seconds an upstream read may take (keep it below the clients' timeout).")
@_option("--upstream-reads", type=click.IntRange(min=1), default=ServerConfig.upstream_reads,
         show_default=True, help="Reads from the object stores in flight at once; more wait "
         "(their timeout starts when they are sent).")
@_option("--reductions", default="", callback=comma_separated, help=REDUCTIONS_HELP)
def serve(host: str, port: int, fd: int | None, upstream: tuple[Upstream, ...],
          allow_root: tuple[str, ...],
          tls_cert: str | None, tls_key: str | None, max_body: int, max_chunk_bytes: int,
          max_decoded_bytes: int, max_memory: int, max_inflight: int, memory_wait: float,
          body_timeout: float, request_timeout: float, max_request_decoded_bytes: int,
          max_connections: int, workers: int | None, s3_region: str,
          upstream_timeout: float, upstream_reads: int, reductions: tuple[str, ...]) -> None:
    """Serve the active-storage protocol (Reductionist v2 compatible)."""
    follow_parent()  # started by activezarr (demo, tests): stop when that process goes
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        config = ServerConfig(upstreams=upstream, roots=allow_root, max_body=max_body,
                              max_chunk_bytes=max_chunk_bytes,
                              max_decoded_bytes=max_decoded_bytes, max_memory=max_memory,
                              max_inflight=max_inflight, memory_wait=memory_wait,
                              body_timeout=body_timeout, request_timeout=request_timeout,
                              max_request_decoded_bytes=max_request_decoded_bytes,
                              max_connections=max_connections, s3_region=s3_region,
                              upstream_timeout=upstream_timeout, upstream_reads=upstream_reads,
                              reductions=reductions,
                              **({"workers": workers} if workers else {}))
    except (ValueError, UnknownReductionError) as exc:
        raise click.UsageError(str(exc)) from None
    context = None
    if tls_cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls_cert, tls_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    scheme = "https" if context else "http"
    reaches = [str(u.public) for u in upstream] + list(allow_root)
    sock = None if fd is None else socket.socket(fileno=fd)  # bound by the parent
    if sock is not None:
        host, port = sock.getsockname()[:2]
    where: dict[str, Any] = {"host": host, "port": port} if sock is None else {"sock": sock}
    with one_line_errors():  # e.g. the port is taken
        http.run(create_app(config), ssl_context=context, shutdown_timeout=10,
                 max_connections=config.max_connections,
                 # called once listening: the address, and what the server may read
                 listening=lambda: click.echo(
                     f"activezarr serve: listening on {scheme}://{host}:{port} "
                     f"(reads {', '.join(reaches) or 'nothing: give --upstream or --allow-root'}"
                     "); Ctrl-C stops"), **where)

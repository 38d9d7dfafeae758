"""A TCP relay on loopback that counts the bytes crossing it: an outside witness of traffic."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Relay:
    """Forwards ``url``'s connections to ``upstream`` (host, port) and counts both directions."""

    url: str
    upstream: tuple[str, int]
    to_client: int = 0
    #: What clients sent, kept whole (tests search it for headers).
    from_client: bytearray = field(default_factory=bytearray)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.to_client = 0
            self.from_client.clear()

    def _pump(self, source: socket.socket, sink: socket.socket, downstream: bool) -> None:
        try:
            while data := source.recv(65536):
                with self._lock:
                    if downstream:
                        self.to_client += len(data)
                    else:
                        self.from_client += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@contextlib.contextmanager
def relay(upstream_url: str) -> Iterator[Relay]:
    """A relay in front of ``http://host:port`` (the scheme and path of the URL are kept)."""
    scheme, _, rest = upstream_url.partition("://")
    host, _, port = rest.split("/", 1)[0].partition(":")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    here = Relay(f"{scheme}://127.0.0.1:{listener.getsockname()[1]}", (host, int(port)))
    stop = threading.Event()
    sockets: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(here.upstream, timeout=30)
            client.settimeout(None)
            server.settimeout(None)
            sockets.extend((client, server))
            for source, sink, down in ((client, server, False), (server, client, True)):
                threading.Thread(target=here._pump, args=(source, sink, down),
                                 daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield here
    finally:
        stop.set()
        thread.join(5)
        listener.close()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.close()

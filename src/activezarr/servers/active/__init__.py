"""The active server: PROTOCOL.md over aiohttp, reducing chunks next to their storage.

It imports the kernel and the wire protocol, never the client side (zarr, stores, backends).
"""

from .app import create_app
from .config import ServerConfig

__all__ = ["ServerConfig", "create_app"]

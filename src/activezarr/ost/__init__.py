"""The simulated parallel file system (``ost://``): MDS, OST and OSS servers on loopback.

Files are striped round-robin over OST objects; the OSTs reduce the chunk bytes they hold and
the OSS reduces whole chunks gathered over the storage network. A wing of its own: ``wire``
(both sides), ``servers``, ``client``; it plugs in through entry points alone
(docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .wire.striping import Extent, FileLayout

if TYPE_CHECKING:
    from .servers.cluster import Cluster, ClusterConfig

__all__ = ["Cluster", "ClusterConfig", "Extent", "FileLayout"]


def __getattr__(name: str) -> Any:
    # The cluster (every server's web application) is imported only by who starts one: the
    # ost client imports this package's wire types, and pays for nothing more.
    if name in ("Cluster", "ClusterConfig"):
        from .servers import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

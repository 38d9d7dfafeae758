"""The simulated parallel file system (``ost://``): MDS, OST and OSS servers on loopback.

Files are striped round-robin over OST objects; the OSTs reduce the chunk bytes they hold and
the OSS reduces whole chunks gathered over the storage network.
"""

from .cluster import Cluster, ClusterConfig
from .striping import Extent, FileLayout

__all__ = ["Cluster", "ClusterConfig", "Extent", "FileLayout"]

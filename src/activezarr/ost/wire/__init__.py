"""What both sides of ``ost://`` share: messages, striping, namespace paths, the layouts'
encoding and the cluster's HTTP transport. Server-safe: no zarr, fsspec or client code."""

"""The simulated file system's MDS, OSS and OST processes and the cluster that starts them.
Servers: nothing here imports zarr, fsspec or client code."""

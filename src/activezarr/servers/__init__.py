"""The storage side: what every server shares (errors, operations, metrics, processes),
the active server (``servers.active``) and the simulated file system's MDS, OSS and
OST processes (``servers.ost``). Nothing here imports the client side or zarr.
"""

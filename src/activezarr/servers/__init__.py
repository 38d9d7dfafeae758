"""The storage side: what every server shares (errors, operations, metrics, processes) and
the active server (``servers.active``). The simulated file system's servers are
``activezarr.ost.servers``. Nothing here imports the client side or zarr.
"""

"""The client side of ``ost://``: its fsspec file system, its backend, and the survey and
placement that say which path serves each chunk. Plugged in by entry points alone."""

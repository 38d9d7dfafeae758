"""The chunk kernel and its spec: stored bytes -> decoded chunk -> selection -> partials.

Shared by every side; numpy and numcodecs only (no zarr, fsspec or aiohttp).
"""

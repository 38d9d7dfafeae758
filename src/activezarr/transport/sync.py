"""Run our coroutines on zarr's own event loop, where its stores and sessions live."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on zarr's I/O loop and wait for it.

    Stores opened by zarr (fsspec sessions included) are bound to that loop, and zarr has no
    public way to reach it, hence the one import from ``zarr.core`` in this package.
    """
    from zarr.core.sync import sync

    return sync(coroutine)

"""activezarr: active storage for Zarr — reductions computed where the data lives."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .chunk.codec import ChunkReduction
from .client.active import ActiveReduction, ActiveSelection
from .client.report import Report
from .client.store import ActiveStore
from .errors import (
    ActiveZarrError,
    ActiveZarrWarning,
    ChunkDecodeError,
    ChunkReadError,
    ClientReductionWarning,
    CodecNotAllowedError,
    CredentialsError,
    DeadlineExceededError,
    FallbackWarning,
    SelectionError,
    StorageUnavailableError,
    UnknownBackendError,
    UnknownPluginError,
    UnknownReductionError,
    UnsupportedArrayError,
)

try:
    __version__ = version("activezarr")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"


def open_array(url: str, storage_options: dict[str, Any] | None = None,
               active: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Open the zarr array at ``url`` read-only on an :class:`ActiveStore`."""
    import zarr

    store = ActiveStore.from_url(url, storage_options=storage_options, active=active,
                                 read_only=True)
    return zarr.open_array(store, mode="r", **kwargs)


__all__ = [
    "ActiveReduction", "ActiveSelection", "ActiveStore", "ActiveZarrError", "ActiveZarrWarning",
    "ChunkDecodeError", "ChunkReadError", "ChunkReduction", "ClientReductionWarning",
    "CodecNotAllowedError", "CredentialsError", "DeadlineExceededError", "FallbackWarning",
    "Report", "SelectionError",
    "StorageUnavailableError", "UnknownBackendError", "UnknownPluginError",
    "UnknownReductionError", "UnsupportedArrayError", "open_array",
]

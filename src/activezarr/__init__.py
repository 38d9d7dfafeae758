"""activezarr: active storage for Zarr — reductions computed where the data lives.

The public names are imported on first use (PEP 562), so that a server process, which imports
``activezarr.servers``, loads no zarr, fsspec or client backend. The xarray accessor
(``DataArray.active``) is registered whenever xarray is imported, before or after activezarr.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ._hooks import register_xarray_accessor

if TYPE_CHECKING:
    from .chunk.codec import ChunkReduction
    from .client.active import ActiveReduction, ActiveSelection
    from .client.report import Report, Reports, collect_reports
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

register_xarray_accessor()

#: public name -> the module that defines it.
_EXPORTS = {
    "ActiveReduction": ".client.active",
    "ActiveSelection": ".client.active",
    "ActiveStore": ".client.store",
    "ChunkReduction": ".chunk.codec",
    "Report": ".client.report",
    "Reports": ".client.report",
    "collect_reports": ".client.report",
    **dict.fromkeys(
        ["ActiveZarrError", "ActiveZarrWarning", "ChunkDecodeError", "ChunkReadError",
         "ClientReductionWarning", "CodecNotAllowedError", "CredentialsError",
         "DeadlineExceededError", "FallbackWarning", "SelectionError", "StorageUnavailableError",
         "UnknownBackendError", "UnknownPluginError", "UnknownReductionError",
         "UnsupportedArrayError"], ".errors"),
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


def open_array(url: str, storage_options: dict[str, Any] | None = None,
               active: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    """Open the zarr array at ``url`` read-only on an :class:`ActiveStore`."""
    import zarr

    from .client.store import ActiveStore

    store = ActiveStore.from_url(url, storage_options=storage_options, active=active,
                                 read_only=True)
    return zarr.open_array(store, mode="r", **kwargs)


__all__ = [
    "ActiveReduction", "ActiveSelection", "ActiveStore", "ActiveZarrError", "ActiveZarrWarning",
    "ChunkDecodeError", "ChunkReadError", "ChunkReduction", "ClientReductionWarning",
    "CodecNotAllowedError", "CredentialsError", "DeadlineExceededError", "FallbackWarning",
    "Report", "Reports", "SelectionError", "StorageUnavailableError", "UnknownBackendError",
    "UnknownPluginError", "UnknownReductionError", "UnsupportedArrayError", "collect_reports",
    "open_array",
]

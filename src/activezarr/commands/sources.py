"""What ``activezarr reduce`` opens: a zarr array, an array of a zarr group, or a variable of a
netCDF/HDF5 file (through kerchunk references, as the ``reference`` backend reads them)."""

from __future__ import annotations

from typing import Any

import click
import zarr
from fsspec.core import split_protocol

from ..client.store import ActiveStore

#: Paths read as netCDF4/HDF5 files rather than zarr stores.
HDF5_SUFFIXES = (".nc", ".nc4", ".h5", ".hdf5", ".he5")


def open_source(url: str, var: str | None, storage_options: dict[str, Any],
                active: dict[str, Any]) -> zarr.Array:
    """The array to reduce; a group or a file without ``var`` is an error naming the choices."""
    if url.lower().endswith(HDF5_SUFFIXES):
        return _open_hdf5(url, var, storage_options, active)
    store = ActiveStore.from_url(url, storage_options=storage_options, active=active,
                                 read_only=True)
    try:
        return zarr.open_array(store, mode="r", path=var or "")
    except (ValueError, OSError, KeyError):
        names = _group_arrays(store)
        if names is None:
            raise
        what = "pass --var NAME" if var is None else f"it has no array {var!r}"
        raise click.ClickException(f"{url} is a zarr group: {what}; its arrays: "
                                   f"{', '.join(names) or 'none'}") from None


def _group_arrays(store: ActiveStore) -> list[str] | None:
    """The array names of the group in ``store``, or None when it holds no group."""
    try:
        group = zarr.open_group(store, mode="r")
    except (ValueError, OSError, KeyError):
        return None
    return sorted(group.array_keys())


def _open_hdf5(url: str, var: str | None, storage_options: dict[str, Any],
               active: dict[str, Any]) -> zarr.Array:
    try:
        from kerchunk.hdf import SingleHdf5ToZarr
    except ImportError:
        raise click.ClickException(f"{url} is a netCDF/HDF5 file; reading one needs kerchunk: "
                                   "pip install 'activezarr[kerchunk]'") from None
    refs = SingleHdf5ToZarr(url, storage_options=storage_options or None,
                            inline_threshold=0).translate()
    names = sorted(key.rsplit("/", 1)[0] for key in refs["refs"] if key.endswith("/.zarray"))
    if var is None or var not in names:
        what = "pass --var NAME" if var is None else f"it has no variable {var!r}"
        raise click.ClickException(f"{url} is a netCDF/HDF5 file: {what}; its variables: "
                                   f"{', '.join(names) or 'none'}")
    store = ActiveStore.from_url(
        "reference://", active=active, read_only=True,
        storage_options={"fo": refs, "remote_protocol": split_protocol(url)[0] or "file",
                         "remote_options": storage_options})
    return zarr.open_array(store, path=var, mode="r", zarr_format=2)

"""What ``activezarr reduce`` opens: a zarr array, an array of a zarr group, or a variable of a
netCDF/HDF5 file (through kerchunk references, as the ``reference`` backend reads them)."""

from __future__ import annotations

from typing import Any

import click
import numpy as np
import zarr
from fsspec.core import split_protocol
from zarr.errors import NodeNotFoundError

from ..client.store import ActiveStore
from ..planning.array_layout import dimension_names

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
    except PermissionError as exc:
        raise click.ClickException(refused(url, storage_options, exc)) from None
    except (ValueError, OSError, KeyError) as exc:
        names = _group_arrays(store)
        if names is None:
            if isinstance(exc, NodeNotFoundError):  # zarr's message names the store's repr
                raise click.ClickException(
                    f"no zarr array at {url}" + (f" (--var {var})" if var else "")
                    + ": check the URL (and --var for an array inside a group)") from None
            raise
        what = "pass --var NAME" if var is None else f"it has no array {var!r}"
        raise click.ClickException(f"{url} is a zarr group: {what}; its arrays: "
                                   f"{', '.join(names) or 'none'}") from None


def refused(url: str, storage_options: dict[str, Any], exc: Exception) -> str:
    """Why the store refused ``url``: what it said, which credentials were tried, how to give
    others (never the credentials themselves)."""
    if storage_options.get("anon"):
        tried = 'anonymous access ("anon": true)'
    elif storage_options.get("key"):
        tried = "the key and secret given in --storage-options"
    else:
        tried = "the credentials botocore found (environment, ~/.aws, instance profile)"
    return (f"{url}: access refused ({exc}) with {tried}; give others with --storage-options "
            '\'{"key": "...", "secret": "..."}\' or \'{"profile": "NAME"}\', or '
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")


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


#: ``--weights coslat``: the cosine of the latitude, the usual area weight of a regular grid.
COSLAT = "coslat"
#: Names a latitude dimension goes by.
LATITUDE_NAMES = ("lat", "latitude", "nav_lat", "y")


def weights_for(arr: zarr.Array, name: str, selection: tuple[Any, ...]) -> np.ndarray:
    """The weights ``--weights name`` gives: the variable ``name`` of the array's group (its
    dimensions among the array's), or ``coslat``; shaped to broadcast to ``arr[selection]``."""
    dims = dimension_names(arr)
    if dims is None:
        raise click.ClickException(f"--weights {name}: the array does not name its dimensions "
                                   "(_ARRAY_DIMENSIONS or dimension_names), so weights cannot "
                                   "be placed on them")
    w_dims: tuple[str, ...]
    if name == COSLAT:
        found = [d for d in dims if d.lower() in LATITUDE_NAMES]
        if not found:
            raise click.ClickException(f"--weights coslat: no latitude dimension among {dims} "
                                       f"(one of {', '.join(LATITUDE_NAMES)})")
        variable, w_dims = _sibling(arr, found[0]), (found[0],)
        values = np.cos(np.deg2rad(np.asarray(variable[...], np.float64)))
    else:
        variable = _sibling(arr, name)
        w_dims = dimension_names(variable) or ()
        if not set(w_dims) <= set(dims) or len(w_dims) != variable.ndim:
            raise click.ClickException(f"--weights {name}: its dimensions {tuple(w_dims)} are "
                                       f"not among the array's {dims}")
        values = np.asarray(variable[...], np.float64)
    # The weights' axes in the array's order, size 1 along the array's other dimensions.
    order = [w_dims.index(d) for d in dims if d in w_dims]
    full = values.transpose(order).reshape([arr.shape[i] if d in w_dims else 1
                                            for i, d in enumerate(dims)])
    return full[_selection_on(full.shape, selection, arr.ndim)]


def _sibling(arr: zarr.Array, name: str) -> zarr.Array:
    """The array ``name`` next to ``arr`` in its group."""
    parent = arr.path.rpartition("/")[0]
    path = f"{parent}/{name}" if parent else name
    try:
        return zarr.open_array(arr.store, path=path, mode="r",
                               zarr_format=arr.metadata.zarr_format)
    except (ValueError, OSError, KeyError):
        raise click.ClickException(f"--weights {name}: no variable {name!r} next to the "
                                   f"array") from None


def _selection_on(shape: tuple[int, ...], selection: tuple[Any, ...],
                  ndim: int) -> tuple[Any, ...]:
    """``selection`` of the array applied to weights of ``shape`` (size 1: broadcast, kept)."""
    entries = list(selection)
    if Ellipsis in entries:
        at = entries.index(Ellipsis)
        entries[at:at + 1] = [slice(None)] * (ndim - len(entries) + 1)
    entries += [slice(None)] * (ndim - len(entries))
    return tuple((0 if isinstance(e, int) else slice(None)) if n == 1 else e
                 for e, n in zip(entries, shape))

"""The client side of compare.py: each method, each query, as a user of that method writes it.

``run(method, query, where)`` opens the data (opening is timed: it is part of what a user waits
for) and answers the query; it returns the answer as a float64 numpy array, or raises
``Unsupported`` with the reason when that method cannot express that query.
"""

from __future__ import annotations

import importlib
import json
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

QUERIES = ("mean", "point", "box", "timemean", "weighted", "climatology", "p90", "hist",
           "hotdays", "argmax")
#: What each query means, for the table's legend.
LEGEND = {
    "mean": "whole-array mean",
    "point": "time series at one grid point",
    "box": "regional box mean (a quarter of lat x lon, all times)",
    "timemean": "time mean (a lat x lon field) of the multi-day-chunked data",
    "weighted": "cos(lat)-weighted global mean per time step",
    "climatology": "monthly climatology (12 x lat x lon)",
    "p90": "exact 90th percentile over time per grid cell (a lat x lon field)",
    "hist": "histogram of the whole array (30 bins of 2 K from 240 K)",
    "hotdays": "days above 288.15 K per year per grid cell (years x lat x lon)",
    "argmax": "the day of the maximum per grid cell (a lat x lon field of positions)",
}
#: The histogram's edges and the hot day's threshold.
EDGES = np.linspace(240.0, 300.0, 31)
HOT = 288.15


class Unsupported(Exception):
    """This method has no way to say this query (the reason is the message)."""


def _point(shape: dict[str, int]) -> tuple[int, int]:
    return shape["lat"] // 3, shape["lon"] // 4


def _box(shape: dict[str, int]) -> tuple[slice, slice]:
    return slice(shape["lat"] // 4, shape["lat"] // 2), slice(shape["lon"] // 8, shape["lon"] // 8
                                                             + shape["lon"] // 2)


def _months(shape: dict[str, int]) -> np.ndarray:
    import pandas as pd
    return np.asarray(pd.date_range("2000-01-01", periods=_ntime(shape), freq="D").month)


def _years(shape: dict[str, int]) -> np.ndarray:
    import pandas as pd
    return np.asarray(pd.date_range("2000-01-01", periods=_ntime(shape), freq="D").year)


def _ntime(shape: dict[str, int]) -> int:
    return int(np.ceil(shape["size_mib"] * 2**20 / (shape["lat"] * shape["lon"] * 4)))


def _weights(shape: dict[str, int]) -> np.ndarray:
    return np.cos(np.deg2rad(np.linspace(-89.5, 89.5, shape["lat"])))


# -- plain zarr + numpy: read what is needed, reduce here -------------------------------------

def _numpy(array: Any, query: str, shape: dict[str, int]) -> np.ndarray:
    j, i = _point(shape)
    ys, xs = _box(shape)
    if query == "mean":
        return np.asarray(array[...].mean(dtype=np.float64))
    if query == "point":
        return np.asarray(array[:, j, i], dtype=np.float64)
    if query == "box":
        return np.asarray(array[:, ys, xs].mean(dtype=np.float64))
    data = array[...]
    if query == "p90":
        return np.nanquantile(data, [0.9], axis=0)[0]
    if query == "hist":
        return np.histogram(data, EDGES)[0].astype(np.float64)
    if query == "hotdays":
        years = _years(shape)
        return np.stack([(data[years == y] > HOT).sum(axis=0) for y in np.unique(years)])
    if query == "argmax":
        return data.argmax(axis=0)
    if query == "timemean":
        return data.mean(axis=0, dtype=np.float64)
    if query == "weighted":
        w = _weights(shape)
        return (data.mean(axis=2, dtype=np.float64) * w).sum(axis=1) / w.sum()
    months = _months(shape)
    return np.stack([data[months == m].mean(axis=0, dtype=np.float64) for m in range(1, 13)])


# -- xarray (+ dask, or + the activezarr accessor) ----------------------------------------------

def _xarray(da: Any, query: str, shape: dict[str, int], active: bool) -> np.ndarray:
    import xarray as xr
    j, i = _point(shape)
    ys, xs = _box(shape)
    if active:
        try:  # registers the accessor; a fallback to the client would be measured unawares
            module = importlib.import_module("activezarr.xarray")
            warnings.simplefilter("error", module.ActiveFallbackWarning)
            # ... and so would chunks the storage side could not reduce
            warnings.simplefilter("error", importlib.import_module("activezarr").FallbackWarning)
        except ModuleNotFoundError:
            pass
        if not hasattr(xr.DataArray, "active"):
            raise Unsupported("needs the `da.active` xarray accessor (issue 11), not here yet")
        acc = da.active
        weighted, grouped = acc.weighted, acc.groupby
    else:
        weighted, grouped = da.weighted, da.groupby
    if query == "weighted":
        w = xr.DataArray(_weights(shape), dims="lat", coords={"lat": da.lat})
        out = weighted(w).mean(("lat", "lon"))
    elif query == "climatology":
        out = grouped("time.month").mean()
    elif query == "mean":
        out = da.mean()
    elif query == "point":
        out = da.isel(lat=j, lon=i)
    elif query == "box":
        out = da.isel(lat=ys, lon=xs).mean()
    elif query == "p90":
        out = (da.active if active else da).quantile(0.9, "time")
    elif query == "hotdays":
        hot = da.active.where(lambda x: x > HOT) if active else da > HOT
        by_year = hot.resample(time="1YS")
        out = by_year.count() if active else by_year.sum()
    elif query == "argmax":
        out = da.argmax("time")
    elif query == "hist":  # xarray has none: dask's, of the dask array under it
        import dask.array
        out = dask.array.histogram(da.data, bins=EDGES)[0]
    else:
        out = da.mean("time")
    return np.asarray(getattr(out, "compute", lambda: out)(), dtype=np.float64)


# -- activezarr's ActiveReduction --------------------------------------------------------------

def _active(array: Any, query: str, shape: dict[str, int]) -> np.ndarray:
    import activezarr
    red = activezarr.ActiveReduction(array, fallback=False)
    j, i = _point(shape)
    ys, xs = _box(shape)
    if query == "mean":
        out = red.mean()
    elif query == "point":  # a one-cell box per time step: each chunk answers its few values
        out = red[:, j:j + 1, i:i + 1].mean(axis=(1, 2))
    elif query == "box":
        out = red[:, ys, xs].mean()
    elif query == "timemean":
        out = red.mean(axis=0)
    elif query == "p90":
        out = red.quantile([0.9], axis=0)[0]
    elif query == "hist":
        out = red.reduce("histogram", bins=EDGES)
    elif query == "argmax":
        out = red.argmax(axis=0)
    else:
        raise Unsupported("grouped/weighted: through the accessor")
    return np.ma.filled(np.ma.asarray(out, dtype=np.float64), np.nan)


# -- PyActiveStorage ---------------------------------------------------------------------------

def _pas(active: Callable[[], Any], query: str, shape: dict[str, int]) -> np.ndarray:
    j, i = _point(shape)
    ys, xs = _box(shape)
    if query == "mean":
        out = active().mean()[...]
    elif query == "point":
        out = active().mean(axis=(1, 2))[:, j:j + 1, i:i + 1]
    elif query == "box":
        out = active().mean()[:, ys, xs]
    elif query == "timemean":
        out = active().mean(axis=(0,))[...]
    else:
        raise Unsupported("PyActiveStorage has no weighted, grouped or quantile reductions")
    return np.squeeze(np.ma.filled(np.ma.asarray(out, dtype=np.float64), np.nan))


# -- opening each method's data -----------------------------------------------------------------

def _s3_options(where: dict[str, Any]) -> dict[str, Any]:
    return {"endpoint_url": where["endpoint"], "key": "bench", "secret": "bench"}


def _active_store(method: str, where: dict[str, Any]) -> tuple[Any, int]:
    """(store, zarr format) of an activezarr method."""
    import activezarr
    server = {"server": where["server"]}
    if method == "az-file":
        return activezarr.ActiveStore.from_url(where["zarr"], read_only=True), 3
    if method == "az-file-server":  # the server reads the same files below its --allow-root
        return activezarr.ActiveStore.from_url(where["zarr"], active=server, read_only=True), 3
    if method == "az-s3":
        return activezarr.ActiveStore.from_url(where["s3_zarr"], active=server, read_only=True,
                                               storage_options=_s3_options(where)), 3
    if method == "az-ost":
        return activezarr.ActiveStore.from_url(f"{where['ost']}/tas.zarr", read_only=True,
                                               storage_options={"token": where["ost_token"]}), 3
    refs = {"az-reference": "refs_s3", "az-nc-local": "refs_local",
            "az-nc-local-small": "refs_local_small"}[method]
    with open(where[refs]) as f:
        fo = json.load(f)
    options: dict[str, Any] = {"fo": fo}
    if method == "az-reference":
        options |= {"remote_protocol": "s3", "remote_options": _s3_options(where)}
    return activezarr.ActiveStore.from_url("reference://", active=server, read_only=True,
                                           storage_options=options), 2


#: What each kind of method imports before the clock starts (imports are not the query's).
#: ``activezarr`` imports its client on first use of ``ActiveStore``: named here, as
#: ``activestorage.active`` is, or the clock would count 0.1-0.2 s of imports.
IMPORTS = {"pas-": ("activestorage.active",),
           "az-": ("activezarr", "activezarr.client.store", "activezarr.client.active", "xarray",
                   "zarr", "s3fs", "fsspec.implementations.reference"),
           "xarray": ("xarray", "dask.array", "s3fs"), "zarr": ("zarr", "s3fs", "fsspec.implementations.http")}


def prepare(method: str) -> None:
    for prefix, modules in IMPORTS.items():
        if method.startswith(prefix):
            for module in modules:
                importlib.import_module(module)


def run(method: str, query: str, where: dict[str, Any]) -> np.ndarray:
    shape = where["shape"]
    if method.startswith("pas-"):
        if query in ("weighted", "climatology", "p90", "hist", "hotdays", "argmax"):
            raise Unsupported("PyActiveStorage has no weighted, grouped, quantile, histogram "
                              "or argmax reductions")
        if method == "pas-server" and query in ("point", "timemean"):
            # Reductionist answers `count` as a flat list (docs/PROTOCOL.md), which
            # PyActiveStorage 0.8 assigns to a cell block and fails (its reductionist.py:
            # REDUCTIONIST_AXIS_READY = False); the same against Reductionist itself.
            raise Unsupported("PyActiveStorage 0.8 cannot place a Reductionist's per-cell "
                              "counts: no axis reductions through a server")
        from activestorage.active import Active

        def active() -> Any:
            if method == "pas-server":
                a = Active(where["s3_nc"], ncvar="tas", interface_type="s3",
                           active_storage_url=where["server"], storage_options={
                               "key": "bench", "secret": "bench",
                               "client_kwargs": {"endpoint_url": where["endpoint"]}})
                a._version = 2
                return a
            return Active(where["nc_small" if method.endswith("small") else "nc"], ncvar="tas")
        return _pas(active, query, shape)
    if method.startswith("az-"):
        import xarray as xr
        import zarr
        store, fmt = _active_store(method, where)
        if query in ("weighted", "climatology", "hotdays"):
            da = xr.open_zarr(store, zarr_format=fmt, consolidated=False, chunks=None)["tas"]
            return _xarray(da, query, shape, active=True)
        return _active(zarr.open_array(store, path="tas", mode="r", zarr_format=fmt),
                       query, shape)
    if method == "xarray-dask-s3":
        import xarray as xr
        da = xr.open_zarr(where["s3_zarr"], storage_options=_s3_options(where),
                          consolidated=False, chunks={})["tas"]
        return _xarray(da, query, shape, active=False)
    import zarr
    if method == "zarr-s3":
        group = zarr.open_group(where["s3_zarr"], mode="r",
                                storage_options=_s3_options(where))
    elif method == "zarr-http":
        group = zarr.open_group(where["http_zarr"], mode="r")
    else:
        group = zarr.open_group(where["zarr"], mode="r")
    return _numpy(group["tas"], query, shape)

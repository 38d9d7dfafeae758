"""``DataArray.active``: xarray's reductions, weighted and grouped ones too, computed storage-side.

Importing this module registers the accessor (``import activezarr`` does so when xarray was
imported before it). A DataArray reduces actively when its values are still
the zarr array xarray opened (``xr.open_dataset(..., engine="zarr")`` or ``xr.open_zarr``, on an
``ActiveStore``, an ``active::`` URL or kerchunk references), selected with ``sel``/``isel`` by
slices and scalars. Anything else (loaded, computed, fancy-indexed) is reduced by xarray itself,
with an :class:`ActiveFallbackWarning` that says why. Results equal xarray's: same values, dtype,
dims, coords and name; attrs with ``keep_attrs=True``. The CF rules come from xarray's own
decoding of the DataArray, so ``valid_*`` (which xarray leaves unapplied) mask nothing here.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
import zarr

from . import _xarray_internals as internals
from .chunk.conditions import Condition, Where
from .chunk.reductions import Bins, Reduction, get_reduction
from .client.active import ActiveReduction
from .client.report import Report
from .errors import ActiveZarrError, ActiveZarrWarning
from .planning.array_layout import dimension_names

Dims = str | Iterable[Hashable] | None
Grouping = Callable[[xr.DataArray], Any]

__all__ = ["ActiveAccessor", "ActiveFallbackWarning", "NotActiveError", "source_of"]
#: Where no condition was given to ``da.active.where``.
NO_CONDITIONS: tuple[Grouping, ...] = ()


class ActiveFallbackWarning(ActiveZarrWarning):
    """The accessor handed a reduction to xarray; the message says why."""


class NotActiveError(ValueError):
    """Why a DataArray cannot be reduced storage-side."""


@dataclass(frozen=True)
class Source:
    """The zarr array behind a DataArray, the DataArray's place in it (slices and ints), and
    the CF rules xarray applied to its values (``_FillValue``, ``_Unsigned``, ``scale_factor``,
    ``add_offset``), read from xarray's own decoding layers: they hold what xarray shows, even
    after ``attrs`` or ``encoding`` were edited."""

    array: zarr.Array
    selection: tuple[slice | int, ...]
    cf: Mapping[str, Any] = field(default_factory=dict)
    decoders: tuple[Any, ...] = ()  # xarray's decoding layers, outermost first

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """``stored`` values (viewed as ``_Unsigned`` says) decoded as xarray decodes this
        array's, none masked: what a condition on the DataArray's values compares."""
        values = stored.view(np.dtype(self.array.dtype).newbyteorder("="))
        for layer in reversed(self.decoders):
            values = internals.unmasked_decoder(layer)(values)
        return values


def source_of(da: xr.DataArray) -> Source:
    """The zarr array and selection ``da`` still is, or :class:`NotActiveError` saying why.

    xarray keeps lazily opened values as wrappers around its ``ZarrArrayWrapper``; each lazy
    indexing wrapper holds a key, composed here from the innermost outwards. What is read from
    xarray to do so is listed, and pinned by tests, in :mod:`activezarr._xarray_internals`.
    """
    data = internals.lazy_values(da)
    if hasattr(data, "__dask_graph__"):
        return _dask_source(da, data)
    found = _unwrap(data)
    if found is None:
        raise NotActiveError(f"its values are a {type(data).__name__}, not the zarr array "
                             "xarray opened (loaded or computed: reduce before computing)")
    return found


def _unwrap(layer: Any) -> Source | None:
    """The zarr array under xarray's lazy wrappers, with their indexing keys composed and
    their CF decoding collected; a wrapper that transforms values otherwise is refused."""
    keys: list[tuple[Any, ...]] = []
    decoders: list[Any] = []
    for _ in range(32):
        key = internals.indexing_key(layer)
        if key is not None:
            keys.append(key)
        opened = internals.opened_array(layer)
        if isinstance(opened, zarr.Array):
            cf = {k: v for step in decoders for k, v in _cf_step(step).items()}
            return Source(opened, _compose(opened.shape, reversed(keys)), cf, tuple(decoders))
        below = internals.inner(layer)
        if below is None:
            return None
        if type(layer).__name__ not in internals.PASSING:
            decoders.append(layer)
        layer = below
    return None


def _cf_step(layer: Any) -> dict[str, Any]:
    """The CF rule one of xarray's decoding layers applies (CFMaskCoder's mask, the view of
    ``_Unsigned``, CFScaleOffsetCoder's unpacking), as the attribute that states it."""
    name, kw = internals.decoding(layer)
    if name == "_apply_mask":
        # xarray compares each fill value, as given, with the values it sees: one no value of
        # theirs equals exactly (1.1 in float32) masks nothing.
        seen = np.dtype(layer.array.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            fills = [v for v in kw["encoded_fill_values"] if np.asarray(v).astype(seen) == v]
        return {"_FillValue": sorted(fills)}
    if name == "_scale_offset_decoding":
        return {"scale_factor": kw["scale_factor"], "add_offset": kw["add_offset"]}
    if name == "asarray" and np.dtype(kw.get("dtype")).kind in "iu":
        return {"_Unsigned": "true" if np.dtype(kw["dtype"]).kind == "u" else "false"}
    raise NotActiveError(f"xarray decodes it with {name or type(layer).__name__}, which the "
                         "storage side does not apply")


def _dask_source(da: xr.DataArray, data: Any) -> Source:
    """The source of a dask-backed DataArray: the zarr array its graph opens, located by the
    DataArray's coordinates in that array's own (a graph that computes anything is refused)."""
    graph = data.__dask_graph__()
    transforms = [name for name in graph.layers if not name.startswith(internals.SELECTING)]
    if transforms:
        raise NotActiveError(f"its dask graph computes on the stored values ({transforms[0]})")
    opened = [found for lazy in internals.opened_in_graph(graph)
              for found in [_unwrap(lazy)] if found]
    if len(opened) != 1:
        raise NotActiveError("its dask graph does not open exactly one zarr array")
    whole = opened[0]
    if any(s != slice(0, n, 1) for s, n in zip(whole.selection, whole.array.shape)):
        raise NotActiveError("its dask graph opens a part of the zarr array")
    return Source(whole.array, _locate(da, whole.array), whole.cf, whole.decoders)


def _locate(da: xr.DataArray, array: zarr.Array) -> tuple[slice | int, ...]:
    """``da``'s positions in ``array``, found from the coordinates xarray decodes for it."""
    dims = _array_dims(array)
    parent = array.path.rpartition("/")[0] or None
    store: Any = array.store
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # xarray's note on consolidated metadata
        stored = xr.open_dataset(store, engine="zarr", group=parent, chunks=None)
    with stored:
        selection: list[slice | int] = []
        for dim, n in zip(dims, array.shape):
            if dim not in stored.indexes:
                if da.sizes.get(dim) != n:
                    raise NotActiveError(f"dimension {dim!r} has no coordinate to locate by")
                selection.append(slice(0, n, 1))
                continue
            index = stored.get_index(dim)
            wanted = da.get_index(dim) if dim in da.dims else [da[dim].values[()]]
            positions = index.get_indexer(wanted)
            step = int(positions[1] - positions[0]) if len(positions) > 1 else 1
            if (positions < 0).any() or step == 0 or not np.array_equal(
                    positions, positions[0] + step * np.arange(len(positions))):
                raise NotActiveError(f"its {dim!r} coordinates are not a strided run of the "
                                     "stored ones")
            first = int(positions[0])
            selection.append(first if dim not in da.dims else _as_slice(
                range(first, first + step * len(positions), step)))
    return tuple(selection)


def _array_dims(array: zarr.Array) -> tuple[str, ...]:
    names = dimension_names(array)
    if names is None:
        raise NotActiveError("the zarr array does not name its dimensions")
    return names


def _compose(shape: Sequence[int], keys: Iterable[tuple[Any, ...]]) -> tuple[slice | int, ...]:
    positions: list[range | int] = [range(n) for n in shape]
    for key in keys:
        visible = [i for i, p in enumerate(positions) if isinstance(p, range)]
        for i, entry in zip(visible, key):
            if not isinstance(entry, (slice, int, np.integer)):
                raise NotActiveError(f"it was indexed by {type(entry).__name__} (only slices "
                                     "and scalars map onto storage-side selections)")
            positions[i] = positions[i][entry]  # type: ignore[index]
    return tuple(p if isinstance(p, int) else _as_slice(p) for p in positions)


def _as_slice(r: range) -> slice:
    stop = None if r.step < 0 and r.stop < 0 else r.stop
    return slice(r.start, stop, r.step)


def _dim_tuple(da: xr.DataArray, dim: Dims) -> tuple[Hashable, ...]:
    if dim is None or dim is ...:
        return tuple(da.dims)
    names = (dim,) if isinstance(dim, str) else tuple(dim)
    missing = [d for d in names if d not in da.dims]
    if missing:
        raise ValueError(f"{missing} not found in array dimensions {da.dims}")
    return names


def _warn(why: str) -> None:
    warnings.warn(f"reduced by xarray, not storage-side: {why}", ActiveFallbackWarning,
                  stacklevel=4)


@dataclass(frozen=True)
class _Groups:
    """A grouping along one dimension as integer group codes (-1: in no group), found by
    xarray itself on a 1-D probe of positions, so that the groups are exactly xarray's."""

    dim: Hashable
    new_dim: Hashable
    codes: np.ndarray
    template: xr.DataArray  # xarray's count over a 1-D probe: the result's coords along new_dim

    @classmethod
    def of(cls, da: xr.DataArray, dim: Hashable, make: Grouping) -> _Groups:
        coords = {k: c for k, c in da.coords.items() if c.dims == (dim,)}
        probe = xr.DataArray(np.arange(da.sizes[dim]), dims=(dim,), coords=coords,
                             attrs={"probe": 1})  # the template keeps it if xarray keeps attrs
        template = make(probe).count()
        (new_dim,) = template.dims
        index = template.get_index(new_dim)
        codes = np.full(da.sizes[dim], -1, np.int64)
        for label, members in make(probe):
            codes[members.values] = index.get_loc(label)
        return cls(dim, new_dim, codes, template)


class _Values:
    """What a condition given to ``da.active.where`` is called with in place of the values:
    comparing it with a number makes a :class:`~activezarr.chunk.conditions.Where`."""

    __array_ufunc__ = None  # numpy's scalars defer to the comparisons below
    __hash__ = None  # type: ignore[assignment]

    def __gt__(self, other: Any) -> Where:
        return Where((Condition(">", other),))

    def __ge__(self, other: Any) -> Where:
        return Where((Condition(">=", other),))

    def __lt__(self, other: Any) -> Where:
        return Where((Condition("<", other),))

    def __le__(self, other: Any) -> Where:
        return Where((Condition("<=", other),))

    def __eq__(self, other: Any) -> Where:  # type: ignore[override]
        return Where((Condition("==", other),))

    def __ne__(self, other: Any) -> Where:  # type: ignore[override]
        return Where((Condition("!=", other),))

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"it uses .{name} of the values")


def _condition(cond: Any) -> Where:
    """The comparisons ``cond`` (a function of the values, as xarray's ``where`` takes)
    makes, or a one-line error saying what the storage side can compare."""
    if not callable(cond) or isinstance(cond, (xr.DataArray, xr.Dataset)):
        raise TypeError("da.active.where takes the condition as a function of the values, e.g. "
                        "da.active.where(lambda x: x > 298.15): a computed condition (da > "
                        "298.15) has already read every value")
    try:
        where = cond(_Values())
    except (TypeError, AttributeError, ValueError) as exc:
        where = exc
    if not isinstance(where, Where):
        why = f": {where}" if isinstance(where, Exception) else f", not {type(where).__name__}"
        raise ValueError("da.active.where's condition must compare the values with numbers (> "
                         f">= < <= == !=, joined by &){why}")
    return where


class _Reducer:
    """What the accessor, its weighted and its grouped forms share: run or hand to xarray.

    ``conditions`` are the functions given to ``da.active.where``, in order: only values
    meeting them all are reduced (the storage side masks the others)."""

    _last_report: Report | None = None

    def __init__(self, da: xr.DataArray, conditions: tuple[Grouping, ...] = NO_CONDITIONS
                 ) -> None:
        self._da = da
        self._conditions = conditions
        wheres = [_condition(cond) for cond in conditions]
        self._where = functools.reduce(Where.__and__, wheres) if wheres else None

    @property
    def _shown(self) -> xr.DataArray:
        """What xarray reduces: ``da.where(cond)`` for each condition (made only when xarray
        reduces: for values not in dask, it reads them)."""
        shown = self._da
        for cond in self._conditions:
            shown = shown.where(cond)
        return shown

    @property
    def _dtype(self) -> np.dtype:
        """The dtype xarray reduces: ``where`` makes integers floats."""
        if not self._conditions:
            return np.dtype(self._da.dtype)
        return np.dtype(xr.DataArray(np.zeros(1, self._da.dtype)).where(False).dtype)

    @property
    def last_report(self) -> Report:
        """The report of this object's last storage-side reduction. ``ds.tas`` is a new
        DataArray, with a new accessor, each time: :func:`activezarr.collect_reports` collects
        the reports of every reduction, however reached."""
        if self._last_report is None:
            raise AttributeError("no storage-side reduction ran on this object (ds.tas is a new "
                                 "object each time): use 'with activezarr.collect_reports() as "
                                 "reports:' around the reduction, then reports.total")
        return self._last_report

    def _active(self, op: str, dim: Dims, *, skipna: bool | None, keep_attrs: bool | None,
                fallback: Callable[[], xr.DataArray], weights: xr.DataArray | None = None,
                groups: _Groups | None = None, compute: bool = True,
                cells: Mapping[Hashable, np.ndarray] | None = None,
                **options: Any) -> xr.DataArray:
        da = self._da
        reduction = get_reduction(op, **options)  # its options (q, ddof), before weights/groups
        reduced = _dim_tuple(da, dim)
        if groups is not None:
            reduced = tuple(d for d in reduced if d != groups.dim)
        try:
            if skipna is False and self._dtype.kind == "f":
                raise NotActiveError("skipna=False keeps NaN, which the storage side skips")
            source = source_of(da)
            if weights is not None:
                options["weights"] = _weights_for(da, weights)
            # xarray's values: its CF rules (never valid_*, which it leaves in attrs) and NaN
            # skipped, as its reductions do by default.
            red = ActiveReduction(source.array, skipna=True, cf_attrs=source.cf,
                                  decode=source.decode)
        except (NotActiveError, ActiveZarrError) as exc:
            _warn(str(exc))
            result = fallback()
            return result if compute else result.chunk()
        if self._where is not None:
            red = red.where(self._where)
        if groups is not None:
            options["groups"] = (da.dims.index(groups.dim), groups.codes,
                                 groups.template.sizes[groups.new_dim])
        axes = tuple(da.dims.index(d) for d in reduced)
        # One dimension as an int and all as None: what numpy's argmax takes (the same to others).
        axis: Any = None if len(axes) == da.ndim else axes[0] if len(axes) == 1 else axes
        if compute:
            values = red[source.selection].reduce(op, axis, **options)
            self._last_report = red.last_report
        else:
            from .dask import reduce

            values = reduce(red, op, axis, selection=source.selection, **options)
        return self._package(reduction, values, reduced, keep_attrs, groups, cells)

    def _package(self, reduction: Reduction, values: Any, reduced: tuple[Hashable, ...],
                 keep_attrs: bool | None, groups: _Groups | None,
                 cells: Mapping[Hashable, np.ndarray] | None = None) -> xr.DataArray:
        """``values`` as xarray returns them: all-missing cells NaN (0 for sums and counts),
        empty groups NaN (as xarray fills resample's gaps), the kept dims' coords, the name,
        attrs if kept; ``cells`` names the dimensions each cell adds (a histogram's bins) and
        their coordinates."""
        da = self._da
        kept = [d for d in da.dims if d not in reduced]
        coords = {k: c.variable for k, c in da.coords.items()
                  if not set(c.dims) & {*reduced, *(() if groups is None else (groups.dim,))}}
        dims = list(kept)
        empty = None
        if groups is not None:
            at = kept.index(groups.dim)
            dims[at] = groups.new_dim
            coords.update({k: c.variable for k, c in groups.template.coords.items()})
            members = groups.template.values  # 0 or NaN (resample's gaps) where empty
            if not (members > 0).all():
                empty = (at, ~(members > 0))
        # xarray reduces the floats it decoded to (e.g. float32 for masked int16): so do we.
        decoded = reduction.result_dtype(self._dtype) if self._dtype.kind == "f" else None
        decoded = decoded if decoded is not None and decoded.kind == "f" else None  # not counts
        fill = functools.partial(_xarray_values,
                                 zero=reduction.name in ("sum", "count", "weighted_sum"),
                                 empty=empty, dtype=decoded)
        if hasattr(values, "map_blocks"):  # one block: the lazy result of activezarr.dask
            floats = empty is not None and values.dtype.kind != "f"
            filled = values.map_blocks(fill, dtype=decoded or (
                np.float64 if floats else values.dtype))
        else:
            filled = fill(values)
        attrs = dict(da.attrs) if _keeps_attrs(keep_attrs, groups) else {}
        for name, centres in (cells or {}).items():
            dims.append(name)
            coords[name] = xr.Variable(name, centres)
        return xr.DataArray(filled, dims=dims, coords=coords, name=da.name, attrs=attrs)


def _one_dim(dim: Hashable | None) -> Dims:
    """``dim`` when it names one dimension (or None): argmax and argmin take no more."""
    if dim is ... or (not isinstance(dim, str) and isinstance(dim, Iterable)):
        raise TypeError(f"argmax/argmin/idxmax/idxmin take one dim (or None), got {dim!r}; "
                        "xarray's over several return a dict: ask per dim")
    return dim if dim is None or isinstance(dim, str) else (dim,)


def _keeps_attrs(keep_attrs: bool | None, groups: _Groups | None = None) -> bool:
    """Whether xarray's reductions keep attrs: its default (and ``set_options``) change, and
    its grouped reductions kept them before its plain ones did (xarray 2025.6)."""
    if keep_attrs is not None:
        return keep_attrs
    if groups is not None:
        return bool(groups.template.attrs)
    return bool(xr.DataArray(0.0, attrs={"probe": 1}).mean().attrs)


def _xarray_values(values: Any, *, zero: bool, empty: tuple[int, np.ndarray] | None,
                   dtype: np.dtype | None = None) -> np.ndarray:
    """A masked result as xarray has it: masked -> 0 (sums, counts) or NaN; empty groups NaN;
    of ``dtype`` where given."""
    values = np.ma.asarray(values)
    if not zero and values.dtype.kind != "f" and np.ma.getmaskarray(values).any():
        values = values.astype(np.float64)
    filled = np.ma.filled(values, 0 if zero else np.nan)
    if empty is not None:
        at, where = empty
        filled = filled.astype(np.result_type(filled.dtype, np.float64))
        index: list[Any] = [slice(None)] * filled.ndim
        index[at] = where
        filled[tuple(index)] = np.nan
    return filled if dtype is None else filled.astype(dtype, copy=False)


def _weights_for(da: xr.DataArray, weights: xr.DataArray) -> np.ndarray:
    """``weights`` as an array that broadcasts to ``da``'s dims (size 1 where it has none)."""
    aligned, w = xr.align(da, weights, join="inner", copy=False)
    if aligned.sizes != da.sizes:
        raise NotActiveError("the weights' coordinates do not cover the array's")
    order = [d for d in da.dims if d in w.dims]
    values = np.asarray(w.transpose(*order).values, np.float64)
    return values.reshape([da.sizes[d] if d in w.dims else 1 for d in da.dims])


class _XarrayNamedReductions(_Reducer):
    """xarray's reductions by name; ``compute=False`` returns a lazy (dask) result."""

    def _reduce(self, op: str, dim: Dims, skipna: bool | None, keep_attrs: bool | None,
                compute: bool, **options: Any) -> xr.DataArray:
        raise NotImplementedError

    def quantile(self, q: Any, dim: Dims = None, *, skipna: bool | None = None,
                 keep_attrs: bool | None = None) -> xr.DataArray:
        """``quantile(q, dim)`` (``method="linear"``), exactly, found in storage-side rounds
        (:mod:`activezarr.client.quantiles`), per group too: a ``quantile`` dimension first
        where ``q`` is a sequence, a scalar ``quantile`` coordinate where it is a number."""
        qs = np.asarray(q, np.float64)  # xarray's q is float64 (so are its answers)
        parts = [self._reduce("quantile", dim, skipna, keep_attrs, True, q=value
                              ).assign_coords(quantile=value) for value in qs.reshape(-1)]
        return parts[0] if qs.ndim == 0 else xr.concat(parts, "quantile")

    def median(self, dim: Dims = None, *, skipna: bool | None = None,
               keep_attrs: bool | None = None) -> xr.DataArray:
        """``median(dim)``, exactly, as :meth:`quantile` finds it."""
        return self._reduce("median", dim, skipna, keep_attrs, True)

    def sum(self, dim: Dims = None, *, skipna: bool | None = None,
            keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        return self._reduce("sum", dim, skipna, keep_attrs, compute)

    def mean(self, dim: Dims = None, *, skipna: bool | None = None,
             keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        return self._reduce("mean", dim, skipna, keep_attrs, compute)

    def min(self, dim: Dims = None, *, skipna: bool | None = None,
            keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        return self._reduce("min", dim, skipna, keep_attrs, compute)

    def max(self, dim: Dims = None, *, skipna: bool | None = None,
            keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        return self._reduce("max", dim, skipna, keep_attrs, compute)

    def count(self, dim: Dims = None, *, keep_attrs: bool | None = None,
              compute: bool = True) -> xr.DataArray:
        return self._reduce("count", dim, None, keep_attrs, compute)

    def var(self, dim: Dims = None, *, skipna: bool | None = None, ddof: int = 0,
            keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        return self._reduce("var", dim, skipna, keep_attrs, compute, ddof=ddof)

    def std(self, dim: Dims = None, *, skipna: bool | None = None, ddof: int = 0,
            keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        return self._reduce("std", dim, skipna, keep_attrs, compute, ddof=ddof)


def _xarray(obj: Any, op: str, dim: Dims, skipna: bool | None, keep_attrs: bool | None,
            **options: Any) -> xr.DataArray:
    """xarray's own reduction (``count`` takes no ``skipna``; ``quantile`` takes ``q`` first
    and adds a ``quantile`` coordinate, which the caller sets)."""
    if op != "count":
        options["skipna"] = skipna
    if op == "quantile":
        q = options.pop("q")
        return obj.quantile(q, dim, keep_attrs=keep_attrs, **options).drop_vars("quantile")
    return getattr(obj, op)(dim, keep_attrs=keep_attrs, **options)


@xr.register_dataarray_accessor("active")
class ActiveAccessor(_XarrayNamedReductions):
    """``da.active.mean("time")`` and friends: ``da.mean("time")``, computed storage-side.

    ``last_report`` is the :class:`~activezarr.Report` of this accessor's last storage-side
    reduction; :func:`activezarr.collect_reports` collects every reduction's, however reached.
    """

    def reduce(self, op: str, dim: Dims = None, *, skipna: bool | None = None,
               keep_attrs: bool | None = None, compute: bool = True,
               **options: Any) -> xr.DataArray:
        """Any reduction xarray and activezarr both name (``"mean"``, ``"std"``, ...)."""
        return self._reduce(op, dim, skipna, keep_attrs, compute, **options)

    def _reduce(self, op: str, dim: Dims, skipna: bool | None, keep_attrs: bool | None,
                compute: bool, **options: Any) -> xr.DataArray:
        return self._active(op, dim, skipna=skipna, keep_attrs=keep_attrs, compute=compute,
                            fallback=lambda: _xarray(self._shown, op, dim, skipna, keep_attrs,
                                                     **options), **options)

    def argmax(self, dim: Hashable | None = None, *, skipna: bool | None = None,
               keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        """``da.argmax(dim)``: the first position of the largest value along one dimension
        (None: in the flattened array, as xarray's flat index). All-missing cells are NaN."""
        return self._reduce("argmax", _one_dim(dim), skipna, keep_attrs, compute)

    def argmin(self, dim: Hashable | None = None, *, skipna: bool | None = None,
               keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        """``da.argmin(dim)``, as :meth:`argmax`."""
        return self._reduce("argmin", _one_dim(dim), skipna, keep_attrs, compute)

    def idxmax(self, dim: Hashable | None = None, *, skipna: bool | None = None,
               keep_attrs: bool | None = None) -> xr.DataArray:
        """``da.idxmax(dim)``: the coordinate label of the largest value along ``dim``, from
        the positions found storage-side; all-missing cells NaN, as xarray's."""
        return self._label_of("argmax", dim, skipna, keep_attrs)

    def idxmin(self, dim: Hashable | None = None, *, skipna: bool | None = None,
               keep_attrs: bool | None = None) -> xr.DataArray:
        """``da.idxmin(dim)``, as :meth:`idxmax`."""
        return self._label_of("argmin", dim, skipna, keep_attrs)

    def _label_of(self, op: str, dim: Hashable | None, skipna: bool | None,
                  keep_attrs: bool | None) -> xr.DataArray:
        """xarray's ``_calc_idxminmax`` with the positions computed storage-side."""
        da = self._da
        if dim is None:
            if da.ndim != 1:
                raise ValueError("Must supply 'dim' argument for multidimensional arrays")
            dim = da.dims[0]
        if dim not in da.dims:
            raise KeyError(f"Dimension {dim!r} not in dimension")
        positions = self._reduce(op, _one_dim(dim), skipna, keep_attrs, True)
        none_valid = positions.isnull()
        labels = da[dim][(positions.fillna(0).astype(np.intp),)]
        del labels.coords[dim]
        if skipna or (skipna is None and da.dtype.kind in "cfO"):
            labels = labels.where(~none_valid)
        labels.attrs = positions.attrs
        return labels

    def where(self, cond: Grouping) -> ActiveAccessor:
        """``da.where(cond)`` then a reduction, storage-side, for conditions comparing the
        values with numbers: ``da.active.where(lambda x: x > 298.15).resample(time="1YS")
        .count()`` is ``da.where(lambda x: x > 298.15).resample(time="1YS").count()``.

        ``cond`` is a function of the values, as xarray's ``where`` takes (``da > 298.15``
        would read every value before this call): comparisons ``> >= < <= == !=`` with a
        number, joined by ``&``. Each becomes an exact mask of stored values
        (:mod:`activezarr.chunk.conditions`); anything else is a ValueError."""
        return type(self)._conditioned(self._da, (*self._conditions, cond))

    @classmethod
    def _conditioned(cls, da: xr.DataArray, conditions: tuple[Grouping, ...]
                     ) -> ActiveAccessor:
        accessor = cls.__new__(cls)
        _Reducer.__init__(accessor, da, conditions)
        return accessor

    def histogram(self, bins: Any = 10, range: tuple[float, float] | None = None,
                  dim: Dims = None) -> xr.DataArray:
        """numpy's ``histogram`` of the values over ``dim`` (all by default) per remaining
        cell, storage-side, as xhistogram's ``histogram(da, bins=..., dim=...)`` names it:
        ``histogram_<name>``, the bins last along ``<name>_bin`` (their centres).

        ``bins`` are the edges, or a number of equal bins over ``range`` (by default the
        values' smallest to largest, found storage-side first, as numpy finds them)."""
        da = self._da
        edges = np.asarray(bins, np.float64) if np.ndim(bins) else self._bin_edges(bins, range)
        name = "bin" if da.name is None else f"{da.name}_bin"
        cells: dict[Hashable, np.ndarray] = {name: (edges[:-1] + edges[1:]) / 2}
        reduced = _dim_tuple(da, dim)

        def here() -> xr.DataArray:  # xarray's values, binned on the client
            shown = self._shown.transpose(*[d for d in da.dims if d not in reduced], *reduced)
            values = np.asarray(shown.values)
            flat = values.reshape(*values.shape[:values.ndim - len(reduced)], -1)
            nan = np.isnan(flat) if flat.dtype.kind == "f" else None
            counts = Bins(flat.dtype, params={"edges": edges.tolist()}).reduce(
                flat, nan, (flat.ndim - 1,))["counts"]
            return self._package(get_reduction("histogram", bins=edges), counts, reduced, False,
                                 None, cells)

        result = self._active("histogram", dim, skipna=None, keep_attrs=False, fallback=here,
                              cells=cells, bins=edges)
        return result.rename("histogram" if da.name is None else f"histogram_{da.name}")

    def _bin_edges(self, bins: int, range: tuple[float, float] | None) -> np.ndarray:
        """numpy's edges of ``bins`` equal bins over ``range``, or over the values' extremes
        (two storage-side reductions), in numpy's dtype for them."""
        if range is None:
            low, high = self.min().values, self.max().values
            range = (low.item(), high.item())
        return np.histogram_bin_edges(np.zeros(0, self._dtype), bins, range)

    def weighted(self, weights: xr.DataArray) -> ActiveWeighted:
        """``da.weighted(weights)``, storage-side: each chunk gets the weights of its region."""
        return ActiveWeighted(self._da, weights, self._conditions)

    def groupby(self, group: Any, **kwargs: Any) -> ActiveGroupBy:
        """``da.groupby(group)`` along one dimension, reduced per group storage-side."""
        return ActiveGroupBy(self._da, _group_dim(self._da, group),
                             lambda obj: obj.groupby(group, **kwargs), self._conditions)

    def groupby_bins(self, group: Any, bins: Any, **kwargs: Any) -> ActiveGroupBy:
        """``da.groupby_bins(group, bins)``, reduced per bin storage-side."""
        return ActiveGroupBy(self._da, _group_dim(self._da, group),
                             lambda obj: obj.groupby_bins(group, bins, **kwargs),
                             self._conditions)

    def resample(self, indexer: dict[Hashable, Any] | None = None,
                 **kwargs: Any) -> ActiveGroupBy:
        """``da.resample(time="1MS")``, reduced per bin storage-side (empty bins are NaN)."""
        given = dict(indexer or {}, **{k: v for k, v in kwargs.items() if k in self._da.dims})
        options = {k: v for k, v in kwargs.items() if k not in given}
        if len(given) != 1:
            raise ValueError(f"resample along exactly one dimension, got {list(given)}")
        (dim,) = given
        return ActiveGroupBy(self._da, dim, lambda obj: obj.resample(given, **options),
                             self._conditions)


def _group_dim(da: xr.DataArray, group: Any) -> Hashable:
    variable = da[group] if isinstance(group, str) else group
    if len(variable.dims) != 1:
        raise ValueError(f"groups along one dimension only; {group!r} has dims {variable.dims}")
    return variable.dims[0]


class ActiveWeighted(_Reducer):
    """``da.active.weighted(w)``: ``sum`` and ``mean`` equal to ``da.weighted(w)``'s."""

    def __init__(self, da: xr.DataArray, weights: xr.DataArray,
                 conditions: tuple[Grouping, ...] = NO_CONDITIONS) -> None:
        super().__init__(da, conditions)
        da.weighted(weights)  # xarray's own checks (no NaN weights, a DataArray)
        self._weights = weights

    def sum(self, dim: Dims = None, *, skipna: bool | None = None,
            keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        return self._run("sum", dim, skipna, keep_attrs, compute)

    def mean(self, dim: Dims = None, *, skipna: bool | None = None,
             keep_attrs: bool | None = None, compute: bool = True) -> xr.DataArray:
        return self._run("mean", dim, skipna, keep_attrs, compute)

    def _run(self, op: str, dim: Dims, skipna: bool | None, keep_attrs: bool | None,
             compute: bool) -> xr.DataArray:
        return self._active(f"weighted_{op}", dim, skipna=skipna, keep_attrs=keep_attrs,
                            compute=compute, weights=self._weights,
                            fallback=lambda: _xarray(self._shown.weighted(self._weights), op, dim,
                                                     skipna, keep_attrs))


class ActiveGroupBy(_XarrayNamedReductions):
    """A grouping of the accessor's DataArray along ``dim``; reductions default to that dim."""

    def __init__(self, da: xr.DataArray, dim: Hashable, make: Grouping,
                 conditions: tuple[Grouping, ...] = NO_CONDITIONS) -> None:
        super().__init__(da, conditions)
        self._make = make
        self._groups = _Groups.of(da, dim, make)

    def quantile(self, q: Any, dim: Dims = None, *, skipna: bool | None = None,
                 keep_attrs: bool | None = None) -> xr.DataArray:
        """Per group, as xarray's: the ``quantile`` dimension (of a sequence ``q``) last."""
        result = super().quantile(q, dim, skipna=skipna, keep_attrs=keep_attrs)
        return result.transpose(..., "quantile") if "quantile" in result.dims else result

    def _reduce(self, op: str, dim: Dims, skipna: bool | None, keep_attrs: bool | None,
                compute: bool, **options: Any) -> xr.DataArray:
        return self._active(op, (self._groups.dim,) if dim is None else dim, skipna=skipna,
                            keep_attrs=keep_attrs, compute=compute, groups=self._groups,
                            fallback=lambda: _xarray(self._make(self._shown), op, dim, skipna,
                                                     keep_attrs, **options), **options)

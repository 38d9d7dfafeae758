"""``ActiveReduction``: numpy-style reductions of a zarr array, computed storage-side."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from ..backends.base import Backend, ChunkJob, backends
from ..backends.client import ClientBackend, PlainRead
from ..chunk.conditions import Decoder, Where
from ..chunk.kernel import ChunkKernel, kept_shape
from ..chunk.missing import decoding
from ..chunk.partial import Partial
from ..chunk.reductions import Histogram, Quantile, Reduction, get_reduction
from ..chunk.spec import ChunkSpec
from ..errors import ClientReductionWarning, FallbackWarning
from ..planning.array_layout import ArrayLayout
from ..planning.chunks import chunk_count, plan_chunks
from ..planning.cost import Estimate, estimate
from ..planning.extras import Extras
from ..planning.selection import DimSelection, normalize_selection, reduced_dims
from ..transport.sync import run_sync
from .engine import Engine, Progress, fallback_warning
from .quantiles import planned_rounds, quantiles
from .report import Report, publish
from .store import ActiveStore, client_only_reason


class _NumpyNamedReductions:
    """The numpy-named reductions, all through :meth:`reduce`."""

    def reduce(self, op: str, axis: Any = None, **options: Any) -> Any:
        raise NotImplementedError

    # ``where=(">", 298.15)`` (or a list of such): only the valid elements whose decoded
    # values meet it are reduced, storage-side (:meth:`ActiveReduction.where`).

    def sum(self, axis: Any = None, where: Any = None) -> Any:
        return self.reduce("sum", axis, where=where)

    def min(self, axis: Any = None, where: Any = None) -> Any:
        return self.reduce("min", axis, where=where)

    def max(self, axis: Any = None, where: Any = None) -> Any:
        return self.reduce("max", axis, where=where)

    def count(self, axis: Any = None, where: Any = None) -> Any:
        return self.reduce("count", axis, where=where)

    def mean(self, axis: Any = None, where: Any = None) -> Any:
        return self.reduce("mean", axis, where=where)

    def var(self, axis: Any = None, ddof: int = 0, where: Any = None) -> Any:
        return self.reduce("var", axis, ddof=ddof, where=where)

    def std(self, axis: Any = None, ddof: int = 0, where: Any = None) -> Any:
        return self.reduce("std", axis, ddof=ddof, where=where)

    def quantile(self, q: Any, axis: Any = None, method: str = "exact",
                 **options: Any) -> Any:
        """numpy's ``nanquantile(a, q, axis, method="linear")`` of the valid values (within a
        stated rank of it with ``method="approximate"``, ``sketch_size=``: see Quantile)."""
        return self.reduce("quantile", axis, q=q, method=method, **options)

    def median(self, axis: Any = None, method: str = "exact", **options: Any) -> Any:
        return self.reduce("median", axis, method=method, **options)

    def argmax(self, axis: int | None = None) -> Any:
        return self.reduce("argmax", axis)

    def argmin(self, axis: int | None = None) -> Any:
        return self.reduce("argmin", axis)


class ActiveReduction(_NumpyNamedReductions):
    """Reductions of ``array`` (or of ``array[selection]`` via indexing) where its bytes live.

    ``missing="cf"`` decodes as netCDF4 and xarray do: masks values named by the CF attributes
    (``_FillValue``, ``missing_value``, ``valid_min``, ``valid_max``, ``valid_range``), honours
    ``_Unsigned`` and unpacks ``scale_factor``/``add_offset``; a dict gives the masking rules
    explicitly; None masks and unpacks nothing, as does ``decode_cf=False`` (raw stored
    values). ``skipna`` also masks NaN. Results follow ``numpy.ma``: an element with no valid
    data is masked. ``fallback=False`` raises instead of reducing on the client when the
    storage side fails. ``progress`` is called with the number of chunks each step finished.
    ``plain_when_cheaper=False`` keeps the active path where the cost model would read plainly
    (to study or test the storage side). ``cf_attrs`` replaces the array's attributes (and
    fill value) as the source of CF rules: the xarray accessor passes the rules xarray applied,
    and ``decode``, how xarray decodes stored values, which conditions and a histogram's bins
    of packed values compare.
    """

    def __init__(self, array: zarr.Array, missing: str | Mapping[str, Any] | None = "cf",
                 skipna: bool = False, fallback: bool = True,
                 max_concurrency: int | None = None, progress: Progress | None = None,
                 decode_cf: bool = True, plain_when_cheaper: bool = True,
                 cf_attrs: Mapping[str, Any] | None = None, decode: Decoder | None = None
                 ) -> None:
        self.array = array
        #: Stored values -> decoded ones, where they decode otherwise than the CF attributes
        #: say (the accessor's: xarray's own decoding); what conditions and bins compare.
        self.decode = decode
        layout = ArrayLayout.from_array(array)
        fill = layout.raw_fill_value if layout.zarr_format == 2 and cf_attrs is None else None
        self.decoding = decoding(layout.attrs if cf_attrs is None else cf_attrs, layout.dtype,
                                 fill, missing=missing, skipna=skipna, decode_cf=decode_cf)
        self.layout = layout.viewed_as(self.decoding.dtype)
        self.fallback = fallback
        self.max_concurrency = max_concurrency or zarr.config.get("async.concurrency")
        self.progress = progress
        self.plain_when_cheaper = plain_when_cheaper
        self.last_report: Report | None = None
        if self._backend_class() is None:
            store = ActiveStore.of(array.store)
            why = (client_only_reason(array.store) if store is None
                   else f"its {store.protocol!r} store has no configured active backend "
                   "(e.g. no active={'server': ...})")
            warnings.warn(f"every chunk of this array will be read and reduced on the client: "
                          f"{why}", ClientReductionWarning, stacklevel=2)

    def __getitem__(self, selection: Any) -> ActiveSelection:
        return ActiveSelection(self, normalize_selection(selection, self.layout.shape))

    def reduce(self, op: str, axis: Any = None, **options: Any) -> Any:
        """Any registered reduction by name, e.g. ``reduce("var", axis=0, ddof=1)``.

        ``weights=`` (broadcastable to the selection; ops ``weighted_sum``/``weighted_mean``) and
        ``groups=(axis, labels[, ngroups])`` (reduce ``axis`` per integer group label; ``-1``
        is in no group) run storage-side where the server speaks those extensions;
        ``where=(">", 298.15)`` reduces only the values meeting it (:meth:`where`).
        """
        return self[...].reduce(op, axis, **options)

    def plan(self, op: str = "mean", axis: Any = None, **options: Any) -> Estimate | None:
        """What the cost model expects the active path to move, before anything runs (None for
        a backend without a cost model)."""
        return self[...].plan(op, axis, **options)

    def where(self, condition: Any, decode: Decoder | None = None) -> ActiveReduction:
        """These reductions of only the valid elements whose decoded values meet
        ``condition``: ``(">", 298.15)`` (ops ``> >= < <= == !=``, compared as numpy compares
        the decoded array with the number), a list of them (all met) or a
        :class:`~activezarr.chunk.conditions.Where`. The storage side masks the others: the
        conditions become exact rules on stored values (:mod:`activezarr.chunk.conditions`).
        ``decode`` maps stored values to decoded ones where they decode otherwise than this
        array's CF attributes say (the accessor passes xarray's own decoding)."""
        masked = copy.copy(self)
        masked.decoding = self.decoding.masking(Where.of(condition), decode or self.decode)
        masked.last_report = None
        return masked

    def chunk_count(self, selection: Any = ...) -> int:
        """How many chunks a reduction of ``selection`` touches (for progress bars), cheaply."""
        return chunk_count(self.layout, normalize_selection(selection, self.layout.shape))

    def _backend_class(self) -> type[Backend] | None:
        """The backend the array's store asks for, or None for the client path."""
        store = ActiveStore.of(self.array.store)
        if store is not None:
            name = store.active.get("backend", store.protocol)
            # A backend asked for by name must exist and be configured; a protocol without
            # one (or without its options, e.g. no active server) reads client-side.
            if "backend" in store.active:
                backend = backends.get(name)
                if not backend.configured(store.active):
                    raise ValueError(f"backend {name!r} is not configured by {store.active}")
                return backend
            if name in backends and backends.get(name).configured(store.active):
                return backends.get(name)
        return None

    def _backend(self) -> Backend:
        backend = self._backend_class()
        store = ActiveStore.of(self.array.store)
        if backend is None or store is None:
            return ClientBackend(self.array.store)
        return backend(store, store.active)

    def _spec(self, plan: ReductionPlan) -> ChunkSpec:
        cf, reduction, extras = self.decoding, plan.reduction, plan.extras
        # Floats always sum in float64; "float" asks it of integers (numpy's mean) and of every
        # packed dtype, whose values unpack to floats.
        floats = cf.packed or (reduction.accumulate == "float" and cf.dtype.kind in "iu")
        accumulate = "float" if floats else "wide"
        params = reduction.params()
        if reduction.aggregation.positional:  # positions count in the whole selection
            params = {**(params or {}), "shape": [d.size for d in plan.dims],
                      "reversed": [d.reversed for d in plan.dims]}
        return self.layout.spec(missing=cf.missing, axis=plan.reduced,
                                op=reduction.stored_op(cf.scale), params=params,
                                accumulate=accumulate, weighted=extras.weights is not None,
                                group_axis=extras.group_dim)

    def _estimate(self, plan: ReductionPlan) -> Estimate | None:
        """The cost model's estimate of ``plan``; None where the backend has no model."""
        backend = self._backend()

        async def ask() -> Estimate | None:
            try:
                if not isinstance(plan.reduction, Quantile):
                    return await self._planned(backend, plan)
                rounds = [await self._planned(backend, step) for step in planned_rounds(plan)]
                return None if rounds[0] is None else Estimate.of_rounds(
                    [r for r in rounds if r is not None])
            finally:
                await backend.close()

        return run_sync(ask())

    async def _planned(self, backend: Backend, plan: ReductionPlan) -> Estimate | None:
        traits = await backend.traits(self.layout)
        if traits is None:
            return None
        return estimate(self.layout, plan.dims, self._spec(plan), traits, plan.extras)

    def _run(self, op: str, dims: tuple[DimSelection, ...], axis: Any,
             options: dict[str, Any]) -> Any:
        plan = self.prepare(op, dims, axis, options)
        if isinstance(plan.reduction, Quantile):
            result = quantiles(self, plan)
        else:
            result = self.finish(plan, self.accumulate(plan))
        assert self.last_report is not None  # set by every accumulation
        publish(self.last_report)
        return result

    def prepare(self, op: str, dims: tuple[DimSelection, ...], axis: Any,
                options: dict[str, Any]) -> ReductionPlan:
        """What a reduction of ``dims`` computes: checked before anything is read."""
        options = dict(options)
        weights = options.pop("weights", None)
        extras = Extras.build(dims, weights, options.pop("groups", None))
        reduction = get_reduction(op, **options)
        if self.decoding.packed and isinstance(reduction, Histogram):
            cf = self.decoding  # bins of decoded values become bins of stored ones
            reduction = reduction.of_packed(cf.dtype, self.decode or cf.values, cf.scale < 0)
        if self.decoding.packed and not isinstance(reduction, Quantile):
            # a state that cannot be unpacked says so now, not after every chunk was read
            cf = self.decoding
            reduction.unpacked(
                reduction.aggregation(cf.dtype, params=reduction.params()).empty(()), cf)
        if reduction.one_axis and not (axis is None or isinstance(axis, (int, np.integer))):
            raise TypeError(f"{op} takes axis=None or one integer axis, as numpy's; got "
                            f"{axis!r}")
        if reduction.one_axis and extras.group_dim is not None:
            raise ValueError(f"{op} has no grouped form: reduce each group's selection")
        if isinstance(reduction, Quantile) and weights is not None:
            raise ValueError("weighted quantiles are not available yet: ask for unweighted "
                             "ones, or for xarray's weighted(...).quantile on the client")
        if reduction.weighted != (weights is not None):
            raise ValueError(f"{op} needs weights=..." if weights is None else
                             f"weights go with weighted_sum or weighted_mean, not {op}")
        reduced = tuple(d for d in reduced_dims(axis, dims) if d != extras.group_dim)
        return ReductionPlan(reduction, dims, reduced, extras)

    def finish(self, plan: ReductionPlan, acc: Partial) -> Any:
        """numpy's answer from the combined partials of ``plan``."""
        reduction, dims, reduced = plan.reduction, plan.dims, plan.reduced
        values, mask = reduction.finish(reduction.unpacked(acc, self.decoding))
        if reduction.defined_when_empty and math.prod(dims[d].size for d in reduced) == 0:
            mask = np.zeros_like(mask)  # nothing selected: numpy.ma's sum is 0, not masked
        kept = [d for d in range(len(dims)) if d not in reduced]
        flips = tuple(i for i, d in enumerate(kept)
                      if dims[d].reversed and d != plan.extras.group_dim)
        dtype = reduction.result_dtype(self.decoding.value_dtype or self.layout.dtype)
        return _package(values, mask, dtype, flips)

    def accumulate(self, plan: ReductionPlan) -> Partial:
        """The combined partials of ``plan`` (of packed values): the storage side's work; the
        report goes to ``last_report``."""
        acc, self.last_report = self.accumulate_reported(plan)
        return acc

    def accumulate_reported(self, plan: ReductionPlan) -> tuple[Partial, Report]:
        """:meth:`accumulate` with its report returned (dask's leaves, in threads, each need
        their own); a failed run's report still goes to ``last_report``."""
        dims, reduced, extras = plan.dims, plan.reduced, plan.extras
        kernel = ChunkKernel(self._spec(plan))
        tasks = extras.attach(plan_chunks(self.layout, dims, reduced), plan.kept)
        out_shape = plan.output_shape
        fallback = ClientBackend(self.array.store) if self.fallback else None
        job = ChunkJob(kernel, self.layout, self.array.store, chunk_count(self.layout, dims))
        engine: Engine | None = None

        async def run() -> Any:
            nonlocal engine
            backend = self._backend()
            try:
                planned = await self._planned(backend, plan)
                if planned is not None and planned.path == "plain" and self.plain_when_cheaper:
                    await backend.close()
                    backend = PlainRead(self.array.store)
                engine = Engine(job, backend,
                                fallback if backend.name not in ("client", "plain") else None,
                                self.max_concurrency, self.progress)
                if planned is not None:
                    engine.report.estimated_bytes = (planned.plain_bytes if backend.name == "plain"
                                                     else planned.active_bytes)
                    engine.report.plan_reason = planned.reason + (
                        "; kept active (plain_when_cheaper=False)"
                        if planned.path == "plain" and backend.name != "plain" else "")
                return await engine.run(tasks, out_shape)
            finally:
                await backend.close()

        try:
            acc = run_sync(run())
        except BaseException:
            if engine is not None:
                self.last_report = engine.report
            raise
        assert engine is not None
        message = fallback_warning(engine.report)
        if message is not None:
            warnings.warn(message, FallbackWarning, stacklevel=5)
        return acc, engine.report


@dataclass(frozen=True)
class ReductionPlan:
    """One reduction of a selection: which, over which dimensions, with what weights/groups."""

    reduction: Reduction
    dims: tuple[DimSelection, ...]
    reduced: tuple[int, ...]
    extras: Extras

    @property
    def kept(self) -> list[int]:
        return [d for d in range(len(self.dims)) if d not in self.reduced]

    @property
    def output_shape(self) -> tuple[int, ...]:
        shape = kept_shape([d.size for d in self.dims], self.reduced)
        return self.extras.output_shape(shape, self.kept)


class ActiveSelection(_NumpyNamedReductions):
    """A selection of an :class:`ActiveReduction`; its reports go to the parent's ``last_report``."""

    def __init__(self, parent: ActiveReduction, dims: tuple[DimSelection, ...]) -> None:
        self.parent = parent
        self.dims = dims

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.size for d in self.dims if not d.dropped)

    @property
    def last_report(self) -> Report | None:
        return self.parent.last_report

    def reduce(self, op: str, axis: Any = None, **options: Any) -> Any:
        where = options.pop("where", None)
        if where is None:
            return self.parent._run(op, self.dims, axis, options)
        masked = self.parent.where(where)
        try:
            return masked._run(op, self.dims, axis, options)
        finally:
            self.parent.last_report = masked.last_report

    def plan(self, op: str = "mean", axis: Any = None, **options: Any) -> Estimate | None:
        where = options.pop("where", None)
        red = self.parent if where is None else self.parent.where(where)
        return red._estimate(red.prepare(op, self.dims, axis, options))


def _package(values: np.ndarray, mask: np.ndarray, dtype: np.dtype,
             flips: tuple[int, ...]) -> Any:
    """numpy's result: a scalar or array of ``dtype``; masked where no data was valid."""
    values = np.asarray(values).astype(dtype, copy=False)
    if flips:
        values, mask = np.flip(values, flips), np.flip(mask, flips)
    if values.ndim == 0:
        return np.ma.masked if mask else values[()]
    if mask.any():
        return np.ma.MaskedArray(values, mask=mask)
    return values

"""The ``activezarr`` command line: ``reduce`` a stored array; the other commands load lazily.

Each command's module is imported only when that command runs, so ``activezarr serve`` and
``activezarr ost`` start server processes that never import zarr, fsspec or a client backend.
"""

from __future__ import annotations

import importlib
import json
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, fields
from importlib.metadata import entry_points
from typing import Any

import click
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import activezarr

from ..chunk.reductions import get_reduction
from .params import (
    JsonObjectType,
    MissingType,
    OneLineErrorsGroup,
    SelectionType,
    one_line_errors,
    parse_condition,
)

#: Above this many chunks a progress bar is worth showing even when stderr is not a terminal.
LARGE_RUN_CHUNKS = 1000
#: command name -> "module:attribute" of a command imported only when it is used.
LAZY_COMMANDS = {
    "demo": ".demo:run_demo",
    "serve": ".serve:serve",
}
#: Entry-point group of commands other packages add, imported as lazily (the ost wing's
#: ``ost`` and ``layout``).
COMMANDS_GROUP = "activezarr.commands"
#: The extra that installs what a lazily loaded command needs.
COMMAND_EXTRAS = {"demo": "demo", "serve": "server"}


def _parse_axes(ctx: click.Context, param: click.Parameter,
                values: tuple[str, ...]) -> int | tuple[int, ...] | None:
    """``--axis 0 --axis 2`` and ``--axis 0,2`` both give ``(0, 2)``, one ``--axis 1`` gives
    ``1`` (what argmax takes); none given: all axes."""
    try:
        axes = tuple(int(a) for value in values for a in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{', '.join(values)!r}: axes are integers, e.g. 0 or 0,2",
                                 ctx, param) from None
    return axes[0] if len(axes) == 1 else axes or None


@contextmanager
def _warnings_on_stderr() -> Iterator[None]:
    """activezarr's warnings (fallbacks, client reads) as ``Warning: ...`` lines on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", activezarr.ActiveZarrWarning)
        try:
            yield
        finally:
            for warning in caught:
                if issubclass(warning.category, activezarr.ActiveZarrWarning):
                    click.echo(f"Warning: {warning.message}", err=True)
                else:
                    warnings.showwarning(warning.message, warning.category, warning.filename,
                                         warning.lineno)


def _json_value(value: Any) -> Any:
    """A result as JSON values: masked elements are null; NaN and infinities, which JSON
    numbers cannot be, are the strings "NaN", "Infinity" and "-Infinity"."""
    return _finite(np.ma.asarray(value).tolist())


def _finite(value: Any) -> Any:
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _report_table(report: activezarr.Report) -> Table:
    table = Table("field", "value", title="report")
    for f in fields(report):
        value = getattr(report, f.name)
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v:,}" for k, v in sorted(value.items())) or "none"
        elif isinstance(value, float):
            value = f"{value:.3f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        table.add_row(f.name, str(value))
    table.add_row("reduction_factor", f"{report.reduction_factor:.1f}")
    return table


class LazyGroup(OneLineErrorsGroup):
    """A group that imports a command's module only when the command is looked up."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._built_in = lazy_commands
        self._added: dict[str, str] | None = None

    @property
    def lazy_commands(self) -> dict[str, str]:
        """The built-in lazy commands and those of :data:`COMMANDS_GROUP`, scanned once when
        first needed (a built-in command is found without scanning)."""
        if self._added is None:
            self._added = {ep.name: ep.value for ep in entry_points(group=COMMANDS_GROUP)}
        return {**self._added, **self._built_in}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_commands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return super().get_command(ctx, cmd_name)
        lazy = self._built_in if cmd_name in self._built_in else self.lazy_commands
        if cmd_name not in lazy:
            return None
        module, attribute = lazy[cmd_name].split(":")
        try:
            command: click.Command = getattr(importlib.import_module(module, __package__),
                                             attribute)
        except ModuleNotFoundError as exc:
            return _unavailable(cmd_name, exc)
        return command


def _unavailable(name: str, exc: ModuleNotFoundError) -> click.Command:
    """A stand-in for a command whose optional dependencies are not installed: listed in the
    help, and saying what to install when run."""
    message = (f"activezarr {name} needs {exc.name}, which is not installed: "
               f"pip install 'activezarr[{COMMAND_EXTRAS.get(name, 'server')}]'")

    def fail(args: tuple[str, ...]) -> None:
        raise click.ClickException(message)

    return click.Command(name, callback=fail, help=message, short_help=message,
                         params=[click.Argument(["args"], nargs=-1)],
                         context_settings={"ignore_unknown_options": True})


@click.group(cls=LazyGroup, lazy_commands=LAZY_COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(activezarr.__version__, prog_name="activezarr")
def main() -> None:
    """Active storage for Zarr: reductions computed where the data lives."""


@main.command("reduce")
@click.argument("url")
@click.option("--var", default=None, help="The array to reduce inside a zarr group, or the "
              "variable of a netCDF/HDF5 file (read through kerchunk references).")
@click.option("--op", required=True, help="Reduction: mean, sum, min, max, count, var, std, "
              "quantile (--q), median, histogram (--bins), argmax, argmin (one --axis or none), "
              "or one an installed plugin registers.")
@click.option("--select", "selection", type=SelectionType(), default="...", show_default=True,
              help='Numpy-style selection: comma-separated ints, start:stop:step slices and "...", '
              'e.g. "0:10,:,::2".')
@click.option("--axis", "axis", multiple=True, callback=_parse_axes,
              help="Axis to reduce over, of the selection (repeatable, or comma-separated "
              "like 0,2). Default: all axes.")
@click.option("--weights", default=None, help="For --op weighted_mean or weighted_sum: a "
              "variable of the same group or file, on some of the array's dimensions (e.g. "
              "area), or coslat, the cosine of the latitude.")
@click.option("--ddof", type=click.IntRange(min=0), default=None,
              help="Delta degrees of freedom, for var and std. Default: 0.")
@click.option("--q", "quantiles", type=click.FloatRange(0, 1), multiple=True,
              help="Quantile(s) in [0, 1], for quantile (repeatable: then one row each). The "
              "median is --op median.")
@click.option("--method", type=click.Choice(["exact", "approximate"]), default=None,
              help="For quantile and median: exact (numpy's linear interpolation, found in a "
              "few storage-side rounds; the default) or approximate (one round of a sketch, a "
              "stored value within a stated rank bound).")
@click.option("--bins", type=str, default=None,
              help='Bin edges, ascending and comma-separated, for histogram, e.g. "0,10,20".')
@click.option("--where", "conditions", multiple=True,
              help="Reduce only the values meeting a comparison of the decoded values with a "
              "number, e.g. '>298.15' (ops > >= < <= == !=; repeatable: all must hold). The "
              "storage side masks the others.")
@click.option("--missing", type=MissingType(), default="cf", show_default=True,
              help='Missing values: "cf" (from _FillValue, missing_value, valid_* attributes), '
              '"none", or the rules as JSON, e.g. \'{"missing_value": -999}\'.')
@click.option("--skipna", is_flag=True, help="Treat NaN as missing too.")
@click.option("--storage-options", type=JsonObjectType(), default="{}",
              help="fsspec storage options as a JSON object.")
@click.option("--active", type=JsonObjectType(), default="{}",
              help='Active backend options as a JSON object, e.g. \'{"workers": 4}\'.')
@click.option("--no-fallback", is_flag=True,
              help="Fail instead of reducing on the client when the storage side cannot.")
@click.option("--json", "as_json", is_flag=True,
              help='Print {"result": ..., "report": {...}} as JSON (masked values are null; '
              'NaN and infinities are the strings "NaN", "Infinity", "-Infinity").')
def reduce_array(url: str, var: str | None, op: str, selection: tuple[Any, ...],
                 axis: int | tuple[int, ...] | None, weights: str | None, ddof: int | None,
                 quantiles: tuple[float, ...], method: str | None, bins: str | None,
                 conditions: tuple[str, ...],
                 missing: str | dict[str, Any] | None, skipna: bool,
                 storage_options: dict[str, Any], active: dict[str, Any], no_fallback: bool,
                 as_json: bool) -> None:
    """Reduce the zarr array at URL (a path or any fsspec URL) where its bytes live.

    URL may also be a zarr group or a netCDF/HDF5 file: --var names the array in it."""
    # zarr and the client: imported by this command only
    from ..client.engine import fallback_warning
    from .sources import open_source, weights_for

    options: dict[str, Any] = {} if ddof is None else {"ddof": ddof}
    if quantiles:
        options["q"] = quantiles[0] if len(quantiles) == 1 else list(quantiles)
    if method is not None:
        options["method"] = method
    with one_line_errors(), _warnings_on_stderr():
        if bins is not None:
            try:
                options["bins"] = [float(edge) for edge in bins.split(",")]
            except ValueError:
                raise ValueError(f"--bins {bins!r} is not comma-separated numbers") from None
        where = [parse_condition(text) for text in conditions] or None
        # A bad name or option fails before any I/O.
        if get_reduction(op, **options).weighted != (weights is not None):
            raise click.ClickException(f"--op {op} needs --weights VAR (a variable of the dataset) "
                                   "or --weights coslat" if weights is None else
                                   "--weights goes with --op weighted_mean or weighted_sum")
        arr = open_source(url, var, storage_options, active)
        if weights is not None:
            options["weights"] = weights_for(arr, weights, selection)
        stderr = Console(stderr=True)
        # On a terminal the bar goes away when done; in a log its final state stays as a record.
        progress = Progress(TextColumn("reducing"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), console=stderr, transient=stderr.is_terminal)
        chunks = progress.add_task("chunks")
        red = activezarr.ActiveReduction(arr, missing=missing, skipna=skipna,
                                         fallback=not no_fallback,
                                         progress=lambda n: progress.advance(chunks, n))
        total = red.chunk_count(selection)
        progress.update(chunks, total=total)
        show = stderr.is_terminal or total >= LARGE_RUN_CHUNKS
        with progress if show and total else nullcontext():
            result = red[selection].reduce(op, axis, **options, where=where)
    report = red.last_report
    assert report is not None  # set by every reduction
    if as_json:
        click.echo(json.dumps({"result": _json_value(result), "report": asdict(report)},
                              allow_nan=False))
    else:
        click.echo(result)
        Console().print(_report_table(report))
    fell_back = fallback_warning(report)
    if fell_back is not None:
        # Last, after the table: the result is right, but was not computed where asked.
        click.echo(f"NOT STORAGE-SIDE: {fell_back}; --no-fallback makes this an error",
                   err=True)

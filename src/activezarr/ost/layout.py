"""``activezarr layout URL``: how an array's chunks sit on the stripes of an ost:// file system."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table

from ..commands.params import JsonObjectType
from .client.placement import SPREAD_POLICIES
from .client.survey import Survey, survey_url


@click.command("layout")
@click.argument("url")
@click.option("--var", default=None, help="The array of a zarr group, or the variable of a "
              "netCDF/HDF5 file, whose reduction --op estimates.")
@click.option("--storage-options", type=JsonObjectType(), default="{}",
              help="fsspec storage options as a JSON object.")
@click.option("--spread-compressed", type=click.Choice(SPREAD_POLICIES), default="oss",
              show_default=True, help="Where compressed chunks spread over OSTs reduce.")
@click.option("--op", default=None,
              help="Estimate the bytes this reduction would move on the active path and on a "
                   "plain read, and which path it would take (any store with an active backend).")
@click.option("--axis", type=int, multiple=True,
              help="An axis the estimated reduction reduces (repeat; default all).")
@click.option("--active", type=JsonObjectType(), default="{}",
              help='Active backend options as a JSON object, e.g. \'{"server": "http://h:8080"}\'.')
def layout(url: str, var: str | None, storage_options: dict[str, Any], spread_compressed: str,
           op: str | None, axis: tuple[int, ...], active: dict[str, Any]) -> None:
    """How the chunks of the array (or group) at URL sit on the stripes of an ost:// file
    system, the bytes each path would move, and the stripe size that would make every
    compressed chunk single-OST; with --op, the planner's estimate for that reduction on any
    store. Reads no chunk data."""
    console = Console()
    on_ost = url.startswith("ost://")
    if op is None and not on_ost:
        raise click.ClickException(f"{url} is not on an ost:// file system, whose stripes layout "
                               "shows; give --op OP (e.g. --op mean) for the bytes a reduction "
                               "of it would move")
    if op is not None:
        console.print(estimate_text(url, var, storage_options, active, op, axis or None))
        if not on_ost:
            return
    if var is not None:
        url = f"{url.rstrip('/')}/{var}"
    for survey in survey_url(url, storage_options, spread_compressed):
        console.print(survey_table(survey))
        stripe = survey.single_ost_stripe()
        current = ", ".join(str(s) for s in sorted(survey.stripe_sizes)) or "-"
        if stripe is not None:
            console.print(f"stripe size putting every compressed chunk on one OST: {stripe} "
                          f"bytes (now {current}); or stripe count 1")
        else:
            console.print(f"uncompressed: every chunk reduces on its OSTs (stripe size {current})")


def estimate_text(url: str, var: str | None, storage_options: dict[str, Any],
                  active: dict[str, Any], op: str, axis: tuple[int, ...] | None) -> str:
    """The planner's estimate for reducing the array at ``url``, or why there is none."""
    from ..client.active import ActiveReduction
    from ..commands.sources import open_source

    estimate = ActiveReduction(open_source(url, var, storage_options, active)).plan(op, axis)
    if estimate is None:
        return f"{op}: this store's backend has no cost model; it always reduces actively"
    return f"{op}: {estimate}\n{estimate.reason}"


def survey_table(survey: Survey) -> Table:
    """One row per kind of chunk: its path and the bytes that path moves on each link."""
    table = Table(title=f"{survey.name}: {len(survey.sites)} stored chunks")
    for column in ("kind", "path", "chunks", "OST disk", "OST→OSS", "LAN", "LAN if client"):
        table.add_column(column, justify="left" if column in ("kind", "path") else "right",
                         no_wrap=True)
    for (kind, path), cost in sorted(survey.costs().items()):
        table.add_row(kind, path, str(cost.chunks), decimal(cost.disk), decimal(cost.storage),
                      ("" if path == "client" else "≈") + decimal(cost.lan), decimal(cost.disk))
    return table

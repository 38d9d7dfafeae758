"""``activezarr layout URL``: how an array's chunks sit on the stripes of an ost:// file system."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..planning.placement import SPREAD_POLICIES
from ..planning.survey import Survey, survey_url
from .params import JsonObjectType


@click.command("layout")
@click.argument("url")
@click.option("--storage-options", type=JsonObjectType(), default="{}",
              help="fsspec storage options as a JSON object.")
@click.option("--spread-compressed", type=click.Choice(SPREAD_POLICIES), default="oss",
              show_default=True, help="Where compressed chunks spread over OSTs reduce.")
def layout(url: str, storage_options: dict[str, Any], spread_compressed: str) -> None:
    """How the chunks of the array (or group) at URL sit on the stripes of an ost:// file
    system, the bytes each path would move, and the stripe size that would make every
    compressed chunk single-OST. Reads no chunk data."""
    console = Console()
    for survey in survey_url(url, storage_options, spread_compressed):
        console.print(survey_table(survey))
        stripe = survey.single_ost_stripe()
        current = ", ".join(str(s) for s in sorted(survey.stripe_sizes)) or "-"
        if stripe is not None:
            console.print(f"stripe size putting every compressed chunk on one OST: {stripe} "
                          f"bytes (now {current}); or stripe count 1")
        else:
            console.print(f"uncompressed: every chunk reduces on its OSTs (stripe size {current})")


def survey_table(survey: Survey) -> Table:
    """One row per kind of chunk: its path and the bytes that path moves on each link."""
    table = Table(title=f"{survey.name}: {len(survey.sites)} stored chunks")
    for column in ("kind", "path", "chunks", "OST disk", "OST→OSS", "LAN", "LAN if client"):
        table.add_column(column, justify="left" if column in ("kind", "path") else "right",
                         no_wrap=True)
    for (kind, path), cost in sorted(survey.costs().items()):
        table.add_row(kind, path, str(cost.chunks), _size(cost.disk), _size(cost.storage),
                      ("" if path == "client" else "≈") + _size(cost.lan), _size(cost.disk))
    return table


def _size(nbytes: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000  # type: ignore[assignment]
    raise AssertionError

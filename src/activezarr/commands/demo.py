"""``activezarr demo``: a sample climate dataset, reduced actively and by a plain zarr read.

The demo is a list of parts (:data:`PARTS`); each reduces the same sample datasets through one
storage path and yields comparison rows, so further paths (S3, OSTs) are one function each.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import numpy as np
import zarr
from rich.console import Console
from rich.filesize import decimal
from rich.table import Table
from zarr.abc.store import ByteRequest, Store
from zarr.codecs import ZstdCodec
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore, WrapperStore

from ..client.active import ActiveReduction
from ..client.store import ActiveStore
from ..servers.processes import temporary_directory, terminated_as_exit
from .params import one_line_errors

#: (time, lat, lon) shape and chunk shape of each size.
SIZES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "small": ((120, 90, 180), (12, 45, 45)),
    "medium": ((360, 180, 360), (12, 90, 90)),
}
FILL_VALUE = 1e20  # the CMIP convention
@dataclass(frozen=True)
class Datasets:
    """The sample datasets of one demo run: name -> local zarr path."""

    shape: tuple[int, int, int]
    paths: dict[str, Path]
    land_fraction: float


@dataclass(frozen=True)
class Row:
    """One reduction computed both ways; ``part`` names the demo part that ran it."""

    dataset: str
    reduction: str
    value: Any
    agree: bool
    active_bytes: int
    plain_bytes: int
    active_seconds: float
    plain_seconds: float
    part: str = ""


Part = Callable[[Datasets], Iterator[Row]]


class PartUnavailable(Exception):
    """A part that cannot run here (an optional dependency is missing); says how to enable it."""


class CountingStore(WrapperStore[Store]):
    """Counts the bytes a plain zarr read pulls from storage, the baseline of the comparison."""

    def __init__(self, store: Store, counter: list[int] | None = None) -> None:
        super().__init__(store)
        self.counter = counter if counter is not None else [0]

    def _with_store(self, store: Store) -> CountingStore:
        return type(self)(store, self.counter)  # copies made by zarr count into the same total

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        buffer = await self._store.get(key, prototype, byte_range)
        if buffer is not None:
            self.counter[0] += len(buffer)
        return buffer


def make_datasets(directory: Path, size: str = "small", seed: int = 0) -> Datasets:
    """Write ``tas`` (zstd chunks) and a sharded copy, with land cells masked by ``_FillValue``."""
    (nt, ny, nx), chunks = SIZES[size]
    lat = np.linspace(-89, 89, ny)[:, None]
    lon = np.linspace(0, 359, nx)[None, :]
    land = ((((lat - 45) / 25) ** 2 + ((lon - 90) / 50) ** 2 < 1)
            | (((lat + 15) / 30) ** 2 + ((lon - 300) / 20) ** 2 < 1) | (lat < -70))
    season = np.sin(2 * np.pi * np.arange(nt) / 12)[:, None, None]
    rng = np.random.default_rng(seed)
    tas = (258 + 40 * np.cos(np.radians(lat)) + 8 * season * np.sin(np.radians(lat))
           + rng.standard_normal((nt, ny, nx), dtype=np.float32)).astype(np.float32)
    tas[:, land] = FILL_VALUE
    attrs: dict[str, Any] = {"standard_name": "air_temperature", "units": "K",
                             "_FillValue": FILL_VALUE}
    shards = (chunks[0] * 2, ny, nx)
    paths = {"tas": directory / "tas.zarr", "tas sharded": directory / "tas_sharded.zarr"}
    for name, path in paths.items():
        zarr.create_array(
            LocalStore(path), data=tas, chunks=chunks, shards=shards if "sharded" in name else None,
            compressors=ZstdCodec(), fill_value=FILL_VALUE, attributes=attrs,
            dimension_names=("time", "lat", "lon"), overwrite=True,
        )
    return Datasets((nt, ny, nx), paths, float(land.mean()))


def reductions(shape: tuple[int, ...]) -> list[tuple[str, str, Any, int | None]]:
    """(label, reduction, selection, axis) of each comparison, for an array of ``shape``."""
    nt, ny, nx = shape
    region = (slice(0, nt // 2), slice(ny // 4, ny // 2), slice(nx // 4, nx // 2))
    return [("mean", "mean", ..., None), ("time mean", "mean", ..., 0),
            ("region min", "min", region, None), ("region max", "max", region, None)]


def _agree(active: Any, plain: Any) -> bool:
    a, p = np.ma.asarray(active), np.ma.asarray(plain)
    return (a.shape == p.shape
            and np.array_equal(np.ma.getmaskarray(a), np.ma.getmaskarray(p))
            and np.allclose(a.filled(0), p.filled(0), rtol=1e-5))


def compare(dataset: str, active: zarr.Array, plain_store: Store) -> Iterator[Row]:
    """Each of :func:`reductions` on ``active`` and on a plain read of ``plain_store``."""
    counting = CountingStore(plain_store)
    plain = zarr.open_array(counting, mode="r")
    fill = plain.dtype.type(plain.attrs["_FillValue"])
    red = ActiveReduction(active)
    for label, op, selection, axis in reductions(active.shape):
        start = time.perf_counter()
        value = red[selection].reduce(op, axis)
        active_seconds = time.perf_counter() - start
        report = red.last_report
        assert report is not None
        counting.counter[0] = 0
        start = time.perf_counter()
        expected = getattr(np.ma.masked_equal(plain[selection], fill), op)(axis=axis)
        plain_seconds = time.perf_counter() - start
        yield Row(f"{dataset} ({report.backend} backend)", label, value, _agree(value, expected),
                  report.bytes_from_storage, counting.counter[0], active_seconds, plain_seconds)


def local_files(data: Datasets) -> Iterator[Row]:
    """The file backend: chunks are reduced beside the files, on the local machine."""
    for name, path in data.paths.items():
        active = zarr.open_array(ActiveStore.from_url(str(path), read_only=True), mode="r")
        yield from compare(name, active, LocalStore(path, read_only=True))


def _deferred(module: str, name: str, doc: str) -> Part:
    """A part imported when it runs: its module imports this one, and may need extras."""

    def part(data: Datasets) -> Iterator[Row]:
        yield from getattr(importlib.import_module(module, __package__), name)(data)

    part.__name__, part.__doc__ = name, doc
    return part


PARTS: list[Part] = [
    local_files,
    _deferred(".demo_s3", "s3_objects", "An embedded S3 (moto) and the active server."),
]
#: Entry-point group of further parts ("name = module:function"), such as the ost wing's: a
#: part's docstring says in its first line what it starts, and below what its tables show.
PARTS_GROUP = "activezarr.demo_parts"

#: How to read every table, printed once before them.
LEGEND = (
    "Each reduction runs twice: actively (the chunks are reduced where they are stored and "
    "only partial results come back) and as a plain zarr read followed by numpy.ma here. "
    "'agree' says both gave the same answer. 'bytes' is what crossed from storage to this "
    "process: that is what active storage saves. 'time' is wall-clock on this one machine, "
    "where storage is reached over loopback, not a network: an active time can be slower than "
    "plain, because each request pays HTTP and a server's decoding while there is no slow "
    "link to save time on. Over a real network the bytes column is what decides."
)
#: What each part does, in plain words; printed above its tables.
NOTES = {
    "local_files": "Local files (file backend): a pool of threads reads each chunk's exact "
                   "bytes beside the files and reduces it; the sharded copy packs several "
                   "chunks into each shard file.",
    "s3_objects": "S3 (s3 backend): the same datasets copied into an embedded S3 server; the "
                  "active server (activezarr serve) reads each chunk from S3 next to it and "
                  "returns only partials.",
}


def parts() -> list[Part]:
    """The built-in parts, then those installed packages add through :data:`PARTS_GROUP`."""
    added = sorted(entry_points(group=PARTS_GROUP), key=lambda ep: ep.name)
    return [*PARTS, *(ep.load() for ep in added)]


def _title(part: Part) -> str:
    return (part.__doc__ or part.__name__).strip().splitlines()[0]


def _note(part: Part) -> str:
    """What ``part``'s tables show: :data:`NOTES`, or an added part's docstring below its title."""
    body = inspect.cleandoc(part.__doc__ or "").partition("\n\n")[2]
    return NOTES.get(part.__name__) or " ".join(body.split())


def run(directory: Path, size: str = "small", progress: Callable[[str], None] = lambda _: None
        ) -> tuple[Datasets, list[Row], list[str]]:
    """Write the sample datasets into ``directory`` and run every part on them.

    Returns the data, the rows, and a note for each part that could not run here;
    ``progress`` hears what is being done.
    """
    progress("writing the sample datasets")
    data = make_datasets(directory, size)
    rows: list[Row] = []
    skipped: list[str] = []
    for part in parts():
        progress(f"{_title(part)} starting")
        try:
            for row in part(data):
                rows.append(replace(row, part=part.__name__))
                progress(f"{_title(part)} {row.dataset}: {row.reduction} done")
        except PartUnavailable as exc:
            skipped.append(str(exc))
    return data, rows, skipped


def _value(value: Any) -> str:
    if value is np.ma.masked:
        return "masked"
    if np.ndim(value):
        return "x".join(map(str, np.shape(value))) + " array"
    return f"{float(value):.3f}"


def tables(rows: list[Row]) -> list[Table]:
    """The comparison as rich tables, one per dataset and storage path, to fit 80 columns."""
    out = []
    for dataset, group in itertools.groupby(rows, key=lambda r: r.dataset):
        table = Table(title=dataset)
        table.add_column("reduction", no_wrap=True)
        for header in ("result", "agree", "bytes\nactive", "bytes\nplain", "time\nactive",
                       "time\nplain"):
            table.add_column(header, justify="right", no_wrap=True)
        for r in group:
            table.add_row(r.reduction, _value(r.value),
                          "[green]yes[/]" if r.agree else "[red]NO[/]", decimal(r.active_bytes),
                          decimal(r.plain_bytes), f"{r.active_seconds:.3f} s",
                          f"{r.plain_seconds:.3f} s")
        out.append(table)
    return out


@click.command("demo")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the sample datasets (kept). Default: a temporary folder.")
@click.option("--size", type=click.Choice(sorted(SIZES)), default="small",
              show_default=True, help="Sample dataset size.")
def run_demo(directory: Path | None, size: str) -> None:
    """Reduce a sample climate dataset actively and by a plain read, and compare."""
    console = Console()
    # SIGTERM stops the servers and removes the temporary folder as Ctrl-C does; after a
    # SIGKILL the servers follow their lifelines and the folder's reaper removes it.
    with terminated_as_exit(), one_line_errors(), (
            nullcontext(directory) if directory else temporary_directory("activezarr-demo-")
    ) as where:
        where.mkdir(parents=True, exist_ok=True)
        # A spinner on stderr while it works (nothing when stderr is not a terminal).
        with Console(stderr=True).status("starting") as status:
            data, rows, skipped = run(where, size, progress=status.update)
        nt, ny, nx = data.shape
        console.print(f"Sample data in {where}{'' if directory else ' (temporary)'}: tas, "
                      f"time x lat x lon = {nt} x {ny} x {nx} float32, zstd, "
                      f"{data.land_fraction:.0%} of cells (land) masked by _FillValue.\n")
        console.print(LEGEND)
        notes = {part.__name__: _note(part) for part in parts()}
        for part, group in itertools.groupby(rows, key=lambda r: r.part):
            console.print(f"\n[bold]{notes[part]}[/]")
            for table in tables(list(group)):
                console.print(table)
        for note in skipped:
            console.print(f"[yellow]{note}[/]")
    wrong = [f"{r.dataset} {r.reduction}" for r in rows if not r.agree]
    if wrong:
        raise click.ClickException(f"active and plain results differ: {'; '.join(wrong)}")

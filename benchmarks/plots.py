"""Measure, then draw the PNGs under docs/ that the README shows: one command regenerates all.

Run from a checkout (as root for the emulated LAN):  python benchmarks/plots.py
(``--replot``: only redraw from the JSON already in benchmarks/results/).

1. ``compare.py`` on the 256 MiB dataset at 100 Mbit, 1 Gbit (each case run three times, the
   median kept: the 1 Gbit targets are close) and over an unshaped veth;
2. PyActiveStorage against activezarr on the same local netCDF4 files, five runs each, and the
   1 Gbit targets (plain zarr over HTTP and S3 against the server reading its own files and the
   ``s3`` path) five runs each;
3. a chunk-size sweep (64 KiB to 16 MiB, 64 MiB of data, whole-array mean, 1 Gbit);
then ``docs/compare.png`` (the 100 Mbit table as bars), ``docs/link_rate.png`` (time against
link rate) and ``docs/chunk_size.png`` (bytes moved and time against chunk size, active against
plain, per backend).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS, DOCS = HERE / "results", HERE.parent / "docs"
LINKS = {"100mbit": 100, "1gbit": 1000, "unshaped": None}
REPEAT = {"100mbit": 1, "1gbit": 3, "unshaped": 1}
PAS_METHODS = ["pas-local", "az-nc-local", "pas-local-small", "az-nc-local-small"]
#: days per chunk on a 64 x 128 grid (32 KiB a day): 64 KiB ... 16 MiB
SWEEP = {"64K": 2, "256K": 8, "1M": 32, "4M": 128, "16M": 512}
SWEEP_METHODS = ["zarr-local", "az-file", "zarr-http", "az-file-server", "zarr-s3", "az-s3",
                 "az-reference", "az-ost"]
PAIRS = {"file": ("zarr-local", "az-file"), "file-server": ("zarr-http", "az-file-server"),
         "s3": ("zarr-s3", "az-s3"),
         "reference": ("zarr-s3", "az-reference"), "ost": ("zarr-s3", "az-ost")}


def _compare(out: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(HERE / "compare.py"), "--json", str(out), *args],
                   check=True)


def measure() -> None:
    RESULTS.mkdir(exist_ok=True)
    for link in LINKS:
        _compare(RESULTS / f"compare-{link}.json", "--repeat", str(REPEAT[link]),
                 *(["--lan", link] if link != "unshaped" else []))
    _compare(RESULTS / "pas.json", "--loopback", "--repeat", "5", "--queries", "mean",
             "--methods", *PAS_METHODS)
    _compare(RESULTS / "targets-1gbit.json", "--lan", "1gbit", "--repeat", "5", "--queries",
             "mean", "box", "--methods", "zarr-http", "az-file-server", "zarr-s3", "az-s3")
    for name, days in SWEEP.items():
        _compare(RESULTS / f"sweep-{name}.json", "--lan", "1gbit", "--size", "64", "--lat", "64",
                 "--lon", "128", "--days", str(days), "--queries", "mean",
                 "--methods", *SWEEP_METHODS)


def _load(path: Path) -> dict[tuple[str, str], dict]:
    data = json.loads(path.read_text())
    return {(r["method"], r["query"]): r for r in data["results"] if "seconds" in r}


def bars() -> None:
    table = _load(RESULTS / "compare-100mbit.json")
    queries = list(dict.fromkeys(q for _, q in table))
    methods = list(dict.fromkeys(m for m, _ in table if not m.endswith("small")))
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    width = 0.8 / len(methods)
    cmap = plt.get_cmap("tab20")
    for i, method in enumerate(methods):
        xs = [q + i * width for q in range(len(queries))]
        for ax, key in zip(axes, ("seconds", "net_bytes")):
            ys = [table.get((method, q), {}).get(key) or float("nan") for q in queries]
            ax.bar(xs, ys, width, label=method, color=cmap(i),
                   hatch="//" if method.startswith("az-") else None, edgecolor="white")
    for ax, label in zip(axes, ("wall time (s, log)", "bytes to the client over the link (log)")):
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_xticks([q + 0.4 - width / 2 for q in range(len(queries))], queries)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=9)
    fig.suptitle("compare.py, 256 MiB, 100 Mbit emulated link (activezarr hatched; "
                 "missing bar: skipped)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(DOCS / "compare.png", dpi=90)


def link_rate() -> None:
    rates = {link: _load(RESULTS / f"compare-{link}.json") for link in LINKS
             if (RESULTS / f"compare-{link}.json").exists()}
    xs = [LINKS[link] or 10000 for link in rates]
    fig, ax = plt.subplots(figsize=(7, 5))
    for method in ["zarr-s3", "zarr-http", "xarray-dask-s3", "pas-server", "az-s3",
                   "az-file-server", "az-reference", "az-ost"]:
        ys = [table.get((method, "mean"), {}).get("seconds") for table in rates.values()]
        if all(y is not None for y in ys):
            ax.plot(xs, ys, "o--" if method.startswith("az") else "o-", label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"{x} Mbit" if x != 10000 else "unshaped veth" for x in xs])
    ax.set_xlabel("link rate")
    ax.set_ylabel("whole-array mean of 256 MiB: wall time (s)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(DOCS / "link_rate.png", dpi=90)


def chunk_size() -> None:
    sweep = {name: _load(RESULTS / f"sweep-{name}.json") for name in SWEEP
             if (RESULTS / f"sweep-{name}.json").exists()}
    xs = [SWEEP[name] * 32 for name in sweep]  # KiB
    fig, axes = plt.subplots(2, len(PAIRS), figsize=(19, 7), sharex=True)
    for col, (backend, (plain, active)) in enumerate(PAIRS.items()):
        for row, key, label in ((0, "net_bytes", "bytes to the client"), (1, "seconds", "s")):
            ax = axes[row][col]
            for method, style in ((plain, "o-"), (active, "s--")):
                ys = [t.get((method, "mean"), {}).get(key) for t in sweep.values()]
                if key == "net_bytes" and method in ("zarr-local", "az-file"):
                    key_used = "rchar"  # local: no link; what the process read instead
                    ys = [t.get((method, "mean"), {}).get(key_used) for t in sweep.values()]
                ax.plot(xs, [y if y else float("nan") for y in ys], style, label=method)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            if row == 0:
                ax.set_ylim(1e3, 1e9)
                ax.set_title(f"{backend}: {active} vs {plain}")
            ax.set_ylabel(label if backend != "file" or row else "bytes read by the client")
            ax.legend(fontsize=8)
            if row == 1:
                ax.set_xticks(xs, [f"{x}K" if x < 1024 else f"{x // 1024}M" for x in xs])
                ax.set_xlabel("chunk size")
    fig.suptitle("whole-array mean of 64 MiB zstd float32, 1 Gbit emulated link "
                 "(file: both read the files in the client process)")
    fig.tight_layout()
    fig.savefig(DOCS / "chunk_size.png", dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replot", action="store_true", help="only redraw from the JSON")
    args = parser.parse_args(argv)
    if not args.replot:
        measure()
    DOCS.mkdir(exist_ok=True)
    bars()
    link_rate()
    chunk_size()
    print("wrote", *sorted(str(p.relative_to(HERE.parent)) for p in DOCS.glob("*.png")))
    return 0


if __name__ == "__main__":
    os.chdir(HERE.parent)
    sys.exit(main())

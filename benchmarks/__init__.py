"""asv benchmarks of activezarr (``asv run --python=same --quick`` from the repo root)."""

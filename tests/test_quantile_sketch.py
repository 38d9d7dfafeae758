"""Approximate quantiles (``method="approximate"``): one storage-side round of ``key_sketch``,
a deterministic mergeable sketch, whose answer's rank is within the documented bound of
numpy's ``q * (n - 1)`` on every array, whole and over axes, on every backend.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings

import activezarr
from activezarr.chunk.ranks import KeySketch, rank_error_bound, sketch_levels
from runners import Runner
from test_differential import EXAMPLES, cf_cases, decoded, on_every_backend

QS = [0.0, 0.05, 0.3, 0.5, 0.9, 0.99, 1.0]


def rank_errors(values: np.ndarray, mask: np.ndarray, got: Any, q: list[float],
                axis: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per quantile and cell: how far the answer's ranks among the cell's valid values lie
    from numpy's ``q * (n - 1)``, the cell's n, and whether the answer is one of its values."""
    got = np.ma.filled(np.ma.asarray(got, np.float64), np.nan)
    if axis is None:
        moved, hidden = values.reshape(1, -1), mask.reshape(1, -1)
        got = got.reshape(len(q), 1)
    else:
        moved = np.moveaxis(values, axis, -1).reshape(-1, values.shape[axis])
        hidden = np.moveaxis(mask, axis, -1).reshape(moved.shape)
        got = got.reshape(len(q), -1)
    errors = np.zeros(got.shape)
    n = np.zeros(moved.shape[0])
    member = np.ones(got.shape, bool)
    for cell in range(moved.shape[0]):
        valid = np.sort(moved[cell][~hidden[cell]].astype(np.float64))
        n[cell] = valid.size
        for i, quantile in enumerate(q):
            if not valid.size:
                member[i, cell] = np.isnan(got[i, cell])
                continue
            target, x = quantile * (valid.size - 1), got[i, cell]
            below, through = np.searchsorted(valid, x), np.searchsorted(valid, x, "right") - 1
            errors[i, cell] = max(0.0, below - target, target - through)
            member[i, cell] = through >= below
    return errors, n, member


def _check(red: activezarr.ActiveReduction, values: np.ndarray, mask: np.ndarray, k: int,
           axes: tuple[int | None, ...]) -> None:
    for axis in axes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", activezarr.FallbackWarning)
            got = red.quantile(QS, axis=axis, method="approximate", sketch_size=k)
        kept = () if axis is None else values.shape[:axis] + values.shape[axis + 1:]
        assert np.shape(got) == (len(QS), *kept)
        selected = values.size if axis is None else values.shape[axis]
        errors, n, member = rank_errors(values, mask, got, QS, axis)
        bound = 1 + rank_error_bound(n, selected, k)
        assert member.all(), f"axis {axis}: an answer is none of the cell's values"
        assert (errors <= bound).all(), (
            f"axis {axis}, k {k}: rank error {errors.max()} over the bound "
            f"{bound[np.unravel_index(np.argmax(errors - bound), errors.shape)[1]]}")


@pytest.mark.parametrize("seed", range(100))
def test_rank_error_is_within_the_bound_on_random_arrays(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ndim = int(rng.integers(1, 4))
    shape = tuple(int(s) for s in rng.integers(1, [400, 30, 9][:ndim] , endpoint=True))
    chunks = tuple(int(rng.integers(1, s, endpoint=True)) for s in shape)
    dtype = rng.choice(["float32", "float64", "int16", "uint8"])
    data = (rng.standard_normal(shape) * 50 + rng.choice([0, 100])).astype(dtype)
    mask = np.zeros(shape, bool)
    if data.dtype.kind == "f":
        mask = rng.random(shape) < rng.choice([0, 0.1, 0.9])
        data[mask] = np.nan
    path = str(tmp_path / "a.zarr")
    zarr.create_array(path, shape=shape, chunks=chunks, dtype=dtype)[...] = data
    red = activezarr.ActiveReduction(zarr.open_array(activezarr.ActiveStore.from_url(path),
                                                     mode="r"),
                                     skipna=True, plain_when_cheaper=False)
    k = int(rng.choice([2, 3, 8, 32, 512]))
    _check(red, data, mask, k, (None, 0, ndim - 1))
    assert red.last_report.paths == {"file": math.prod(-(-s // c) for s, c in zip(shape, chunks))}


@pytest.mark.timeout(max(600, 2 * EXAMPLES))
@settings(max_examples=max(10, EXAMPLES // 4), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cf_cases())
def test_rank_error_is_within_the_bound_on_every_backend(
        runners: list[tuple[Runner, dict[str, Any]]], case: dict[str, Any]) -> None:
    values, mask = decoded(case)

    def check(runner: Runner, fixtures: dict[str, Any], path: Path) -> None:
        red = activezarr.ActiveReduction(runner.opener(path, fixtures), skipna=case["skipna"],
                                         plain_when_cheaper=False)
        if not case["skipna"] and values.dtype.kind == "f":
            return  # a NaN makes numpy's every quantile NaN: the exact tests cover it
        _check(red, values, mask, 3, (None, 0, values.ndim - 1))
        runner.check_storage_side(red.last_report, "key_sketch")

    on_every_backend(runners, case, check)


def test_a_sketch_merged_in_any_order_keeps_its_error_within_the_bound() -> None:
    rng = np.random.default_rng(7)
    k, parts = 4, [rng.integers(0, 1000, (3, int(rng.integers(1, 40)))) for _ in range(30)]
    n = sum(p.shape[1] for p in parts)
    sketch = KeySketch(np.int64, params={"k": k, "levels": sketch_levels(n, k)})
    states = [sketch.reduce(p, None, (1,)) for p in parts]
    for order in (range(30), rng.permutation(30)):
        merged = sketch.empty((3,))
        for i in order:
            merged.merge(states[i])
        assert (merged.count == n).all()
        kept = merged["fill"] * 2 ** np.arange(merged["fill"].shape[-1])
        assert (kept.sum(axis=-1) == n).all()  # every value is accounted for, weighted
        assert (merged["rank_error"] <= rank_error_bound(merged.count, n, k)).all()


def test_a_sketch_without_room_for_its_values_is_refused() -> None:
    sketch = KeySketch(np.float32, params={"k": 2, "levels": 1})
    with pytest.raises(ValueError, match="more levels"):
        sketch.reduce(np.arange(3, dtype=np.float32), None, (0,))


def test_bad_sketch_sizes_are_refused(tmp_path: Path) -> None:
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(4,), chunks=(2,), dtype="f4")
    red = activezarr.ActiveReduction(zarr.open_array(
        activezarr.ActiveStore.from_url(str(tmp_path / "a.zarr")), mode="r"))
    for size in (1, 5000, 2.5, True):
        with pytest.raises(ValueError, match="sketch_size must be an integer"):
            red.quantile(0.5, method="approximate", sketch_size=size)

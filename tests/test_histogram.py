"""``histogram``: a state of a fixed shape per output cell (one count per bin), storage-side on
every backend, equal to numpy's ``histogram`` of the valid CF-decoded values of each cell.

The cases are test_differential's (every dtype to its limits, fill and missing values, valid
ranges, ``_Unsigned``, NaN with ``skipna``, every codec and chunking), without packing: bins are
edges of values, and packed values unpack to floats the storage side never sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import activezarr
from runners import Runner
from test_differential import EXAMPLES, cf_cases, decoded, on_every_backend


def _unpacked(case: dict[str, Any]) -> dict[str, Any]:
    attrs = {k: v for k, v in case["attrs"].items() if k not in ("scale_factor", "add_offset")}
    return {**case, "attrs": attrs}


def _edges(values: np.ndarray, mask: np.ndarray) -> list[float]:
    """Uneven edges through the valid values (numpy bins given edges by searching them)."""
    finite = values[~mask].astype(np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return [0.0, 1.0]
    edges = np.unique(np.quantile(finite, [0.0, 0.3, 0.45, 0.9, 1.0]))
    return edges.tolist() if edges.size > 1 else [edges[0], edges[0] + 1.0]


def _numpy(values: np.ndarray, mask: np.ndarray, edges: list[float], axis: int | None
           ) -> np.ndarray:
    """numpy's histogram of each output cell's valid values (bins last)."""
    if axis is None:
        return np.histogram(values[~mask].astype(np.float64), edges)[0]
    moved, hidden = np.moveaxis(values, axis, -1), np.moveaxis(mask, axis, -1)
    out = np.zeros((*moved.shape[:-1], len(edges) - 1), np.intp)
    for cell in np.ndindex(moved.shape[:-1]):
        out[cell] = np.histogram(moved[cell][~hidden[cell]].astype(np.float64), edges)[0]
    return out


def _check(runner: Runner, fixtures: dict[str, Any], path: Path, case: dict[str, Any],
           values: np.ndarray, mask: np.ndarray) -> None:
    red = activezarr.ActiveReduction(runner.opener(path, fixtures), skipna=case["skipna"],
                                     plain_when_cheaper=False)
    edges = _edges(values, mask)
    for axis in (None, 0, values.ndim - 1):
        got = red.reduce("histogram", axis=axis, bins=edges)
        np.testing.assert_array_equal(got, _numpy(values, mask, edges, axis),
                                      err_msg=f"axis {axis}, edges {edges}")
        assert np.asarray(got).dtype == np.intp
        runner.check_storage_side(red.last_report, "histogram")


@pytest.mark.timeout(max(600, 2 * EXAMPLES))
@settings(max_examples=max(10, EXAMPLES // 3), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cf_cases().map(_unpacked))
def test_histograms_equal_numpy_on_every_backend(
        runners: list[tuple[Runner, dict[str, Any]]], case: dict[str, Any]) -> None:
    values, mask = decoded(case)
    on_every_backend(runners, case, lambda runner, fixtures, path: _check(
        runner, fixtures, path, case, values, mask))


def test_histograms_per_group(tmp_path: Path) -> None:
    from arrays import create

    data = np.random.default_rng(5).normal(size=(12, 9)).astype("f4")
    create(tmp_path / "h.zarr", data, layout="v3", codec="zstd", chunks=(5, 4))
    red = activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "h.zarr")))
    edges, labels = [-2.0, -1.0, 0.0, 0.5, 1.0, 2.0], np.arange(12) % 3 - (np.arange(12) == 4)
    got = red.reduce("histogram", axis=1, bins=edges, groups=(0, labels))
    np.testing.assert_array_equal(got, [np.histogram(data[labels == g], edges)[0]
                                        for g in range(3)])


@pytest.mark.parametrize(("bins", "message"), [
    (None, "needs bins"), ([1.0], "at least 2"), ([0.0, 0.0], "strictly ascending"),
    ([0.0, np.inf], "finite"),
])
def test_bad_bins_are_refused_before_anything_is_read(tmp_path: Path, bins: Any,
                                                      message: str) -> None:
    from arrays import create

    create(tmp_path / "h.zarr", np.zeros(4, "f4"))
    red = activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "h.zarr")))
    with pytest.raises(ValueError, match=message):
        red.reduce("histogram", bins=bins)

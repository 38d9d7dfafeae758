"""``argmax`` / ``argmin``: the first position of the extreme valid value, storage-side on every
backend, equal to numpy's ``argmax`` / ``argmin`` of the valid CF-decoded values of each cell.

numpy's rules: positions count in the selection (a reversed one from its first selected
element), over the flattened selection for ``axis=None``; ties go to the first position; an
unskipped NaN is the extreme (numpy finds the first NaN). Ours for missing values: they are
skipped, and a cell with none valid is masked (``numpy.ma.argmax`` would say 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cbor2
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, given, settings

import activezarr
from arrays import create
from runners import Runner
from test_differential import EXAMPLES, cf_cases, decoded, on_every_backend


def _expected(op: str, values: np.ndarray, mask: np.ndarray, axis: int | None) -> Any:
    """numpy's ``argmax``/``argmin`` of each output cell's valid values, masked where none."""
    func = np.argmax if op == "argmax" else np.argmin
    if axis is None:
        kept = np.flatnonzero(~mask)
        return kept[func(values.reshape(-1)[kept])] if kept.size else np.ma.masked
    moved, hidden = np.moveaxis(values, axis, -1), np.moveaxis(mask, axis, -1)
    out = np.ma.masked_all(moved.shape[:-1], np.intp)
    for cell in np.ndindex(moved.shape[:-1]):
        kept = np.flatnonzero(~hidden[cell])
        if kept.size:
            out[cell] = kept[func(moved[cell][kept])]
    return out


def _at(values: np.ndarray, positions: np.ndarray, axis: int | None) -> np.ndarray:
    """The values at ``positions`` (as argmax gives them) along ``axis``."""
    if axis is None:
        return values.reshape(-1)[positions]
    moved = np.moveaxis(values, axis, -1)
    return np.take_along_axis(moved, positions[..., None], axis=-1)[..., 0]


def _same(got: Any, want: Any, values: np.ndarray, axis: int | None, packed: bool,
          message: str) -> None:
    got_mask, want_mask = np.ma.getmaskarray(got), np.ma.getmaskarray(want)
    np.testing.assert_array_equal(got_mask, want_mask, err_msg=message)
    got_at = np.ma.filled(got, 0).astype(np.intp)
    want_at = np.ma.filled(want, 0).astype(np.intp)
    if packed:
        # Unpacking may round distinct stored values to one float: the positions must hold
        # the same decoded value (the first of the stored extremes is found).
        np.testing.assert_array_equal(_at(values, got_at, axis), _at(values, want_at, axis),
                                      err_msg=message)
    else:
        np.testing.assert_array_equal(got_at, want_at, err_msg=message)


def _check(runner: Runner, fixtures: dict[str, Any], path: Path, case: dict[str, Any],
           values: np.ndarray, mask: np.ndarray) -> None:
    red = activezarr.ActiveReduction(runner.opener(path, fixtures), skipna=case["skipna"],
                                     plain_when_cheaper=False)
    packed = "scale_factor" in case["attrs"] or "add_offset" in case["attrs"]
    for op in ("argmax", "argmin"):
        for axis in (None, 0, values.ndim - 1):
            got = red.reduce(op, axis=axis)
            _same(got, _expected(op, values, mask, axis), values, axis, packed,
                  f"{op} axis {axis}")
            assert got is np.ma.masked or np.ma.getdata(got).dtype == np.intp
            # a negative scale_factor asks for the other one
            runner.check_storage_side(red.last_report, "argmax", "argmin")


@pytest.mark.timeout(max(600, 2 * EXAMPLES))
@settings(max_examples=max(10, EXAMPLES // 3), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cf_cases())
def test_argmax_argmin_equal_numpy_on_every_backend(
        runners: list[tuple[Runner, dict[str, Any]]], case: dict[str, Any]) -> None:
    values, mask = decoded(case)
    on_every_backend(runners, case, lambda runner, fixtures, path: _check(
        runner, fixtures, path, case, values, mask))


def _ties(tmp_path: Path, codec: str = "zstd") -> tuple[np.ndarray, activezarr.ActiveReduction]:
    """Few distinct values over many chunks: ties across chunks everywhere."""
    data = np.random.default_rng(7).integers(0, 3, size=(13, 11, 6)).astype("i2")
    create(tmp_path / "t.zarr", data, layout="v3", codec=codec, chunks=(4, 3, 5))
    return data, activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "t.zarr")))


@pytest.mark.parametrize("selection", [
    np.s_[...], np.s_[::-1], np.s_[10:1:-3, ::-2, 1], np.s_[2, 9:0:-1, ::-1], np.s_[1:12:2, 3, :],
])
def test_ties_and_reversed_selections_follow_numpy(tmp_path: Path, selection: Any) -> None:
    data, red = _ties(tmp_path)
    picked = data[selection]
    for op in ("argmax", "argmin"):
        func = getattr(np, op)
        assert red[selection].reduce(op) == func(picked)
        for axis in range(picked.ndim):
            np.testing.assert_array_equal(red[selection].reduce(op, axis=axis),
                                          func(picked, axis=axis), err_msg=f"{op} {axis}")


def test_nan_is_the_extreme_unless_skipped(tmp_path: Path) -> None:
    data = np.array([[1.0, np.nan, 5.0, np.nan], [2.0, 2.0, -1.0, 0.5], [np.nan] * 4], "f8")
    create(tmp_path / "n.zarr", data, layout="v3", codec="zstd", chunks=(2, 3))
    array = activezarr.open_array(str(tmp_path / "n.zarr"))
    kept = activezarr.ActiveReduction(array, missing=None)
    skipped = activezarr.ActiveReduction(array, missing=None, skipna=True)
    for op in ("argmax", "argmin"):
        np.testing.assert_array_equal(kept.reduce(op, axis=1), getattr(np, op)(data, axis=1))
        assert kept.reduce(op) == getattr(np, op)(data)
        got = skipped.reduce(op, axis=1)
        np.testing.assert_array_equal(got[:2], getattr(np, f"nan{op}")(data[:2], axis=1))
        assert got.mask.tolist() == [False, False, True]  # all NaN: masked, not an error
        assert skipped.reduce(op) == getattr(np, f"nan{op}")(data)


def test_negative_scale_finds_the_stored_opposite(tmp_path: Path) -> None:
    data = np.array([[3, 9, -4, 9], [0, -4, 7, 1]], "i2")
    create(tmp_path / "p.zarr", data, layout="v3", codec="zstd", chunks=(1, 3),
           attributes={"scale_factor": -0.5, "add_offset": 1.0})
    red = activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "p.zarr")))
    unpacked = data * -0.5 + 1.0
    for op in ("argmax", "argmin"):
        np.testing.assert_array_equal(red.reduce(op, axis=1), getattr(np, op)(unpacked, axis=1))
        assert red.reduce(op) == getattr(np, op)(unpacked)


def test_a_tuple_of_axes_is_refused(tmp_path: Path) -> None:
    _, red = _ties(tmp_path)
    with pytest.raises(TypeError, match="one integer axis"):
        red.reduce("argmax", axis=(0, 1))


def test_uncompressed_chunks_cut_by_stripes_are_exact(tmp_path: Path, ost_cluster: Any) -> None:
    """Chunks spread over OSTs reduce in parts (an odd stripe size cuts elements too), each
    part's positions counted from its own origin."""
    import fsspec

    from runners import _files, fresh_name

    data = np.random.default_rng(3).integers(0, 4, size=(40, 36)).astype("i4")
    create(tmp_path / "s.zarr", data, layout="v3", codec="none", chunks=(20, 18))
    fs = fsspec.filesystem("ost", host=ost_cluster.url.removeprefix("ost://"))
    name = f"argmax/{fresh_name()}"
    fs.pipe({f"{name}/{key}": blob for key, blob in _files(tmp_path / "s.zarr").items()})
    red = activezarr.ActiveReduction(activezarr.open_array(f"{ost_cluster.url}/{name}"),
                                     plain_when_cheaper=False)
    for op in ("argmax", "argmin"):
        for selection in (np.s_[...], np.s_[::-1, 3:], np.s_[5:37:3, ::-1]):
            picked = data[selection]
            assert red[selection].reduce(op) == getattr(np, op)(picked)
            np.testing.assert_array_equal(red[selection].reduce(op, axis=0),
                                          getattr(np, op)(picked, axis=0))
            assert red.last_report.fallbacks == 0


def test_dask_leaves_keep_the_reduced_dims_whole(tmp_path: Path) -> None:
    """Positions count in the whole selection: dask cuts no reduced dimension of an argmax."""
    from activezarr.dask import reduce

    data, red = _ties(tmp_path)
    for axis in (None, 1):
        lazy = reduce(red, "argmax", axis=axis, selection=np.s_[::-1, 2:], leaf_chunks=1)
        np.testing.assert_array_equal(lazy.compute(), np.argmax(data[::-1, 2:], axis=axis))


def test_groups_are_refused(tmp_path: Path) -> None:
    _, red = _ties(tmp_path)
    with pytest.raises(ValueError, match="no grouped form"):
        red.reduce("argmax", axis=1, groups=(0, np.arange(13) % 2))


def test_the_cost_model_prices_value_and_position(tmp_path: Path) -> None:
    """Each output cell's answer holds the extreme (stored dtype) and an int64 position."""
    from activezarr.chunk.reductions import ArgMaximum, Maximum

    assert ArgMaximum("i2").cell_bytes(memory=True, zstd_ratio=1.0) == 2 + 8
    assert Maximum("i2").cell_bytes(memory=True, zstd_ratio=1.0) == 2


@pytest.mark.parametrize("params", [
    {"origin": [0]},  # one dimension of two
    {"shape": [4, 6], "reversed": [False, False], "origin": [3, 0]},  # past the selection
    {"shape": [2, 6], "reversed": [False, False], "origin": [0, 0]},  # a selection too small
    {"shape": [4, 6, 1], "reversed": [False, False, False], "origin": [0, 0, 0]},
], ids=["origin-ndim", "origin-past", "shape-small", "shape-ndim"])
def test_positions_that_do_not_fit_the_chunk_are_a_400(active_server: Any, served_root: Path,
                                                      params: dict[str, Any]) -> None:
    """Inconsistent argmax params are bad input: a 4xx with a JSON body naming them, alone
    and as a batch item, never a 500."""
    from server_client import error, post

    (served_root / "argmax.bin").write_bytes(np.arange(24, dtype="<f4").tobytes())
    body = {"interface_type": "file", "url": f"file://{served_root}/argmax.bin",
            "dtype": "float32", "shape": [4, 6], "params": params}
    assert "params" in error(post(active_server, "argmax", body), 400)
    items = requests.post(f"{active_server.url}/v2/batch", timeout=30,
                          json={"requests": [{"op": "argmin", **body}]}).content
    (item,) = cbor2.loads(items)
    assert item["status"] == 400 and "params" in item["error"]["message"]

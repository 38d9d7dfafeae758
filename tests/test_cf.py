"""CF decoding under ``missing="cf"``: masking, ``_Unsigned`` and packing, as netCDF4/xarray do."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import numpy as np
import pytest

import activezarr
from activezarr.chunk.missing import decoding
from arrays import create
from runners import RUNNERS, Runner

PACKED = {"scale_factor": 0.01, "add_offset": 273.15, "_FillValue": -32767}


def _packed(tmp_path: Path, layout: str = "v3", **attrs: object) -> tuple[np.ndarray, object]:
    raw = np.arange(1000, 1528, dtype="int16").reshape(4, 132)
    raw[0, :3] = -32767
    array = create(tmp_path / "p.zarr", raw, layout=layout, chunks=(3, 50), fill_value=0,
                   attributes={**PACKED, **attrs})
    decoded = np.ma.masked_equal(raw, -32767).astype(np.float64) * attrs.get(
        "scale_factor", PACKED["scale_factor"]) + PACKED["add_offset"]
    return decoded, array


@pytest.mark.parametrize("op", ["sum", "mean", "min", "max", "var", "std", "count"])
@pytest.mark.parametrize("layout", ["v2", "v3"])
def test_packed_int16_reduces_to_physical_values(tmp_path: Path, layout: str, op: str) -> None:
    decoded, array = _packed(tmp_path, layout)
    red = activezarr.ActiveReduction(array)
    for axis in (None, 1):
        got = red.reduce(op, axis=axis)
        want = getattr(decoded, op)(axis=axis)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert np.asarray(got).dtype == (np.intp if op == "count" else np.float64)


@pytest.mark.parametrize("op", ["min", "max", "mean", "std"])
def test_a_negative_scale_factor_swaps_min_and_max(tmp_path: Path, op: str) -> None:
    decoded, array = _packed(tmp_path, scale_factor=-0.5)
    got = activezarr.ActiveReduction(array).reduce(op, axis=0)
    np.testing.assert_allclose(got, getattr(decoded, op)(axis=0), rtol=1e-12)


def test_missing_none_and_decode_cf_false_give_raw_stored_values(tmp_path: Path) -> None:
    _, array = _packed(tmp_path)
    raw = array[...]
    assert activezarr.ActiveReduction(array, missing=None).mean() == raw.mean()
    assert activezarr.ActiveReduction(array, decode_cf=False).min() == -32767
    explicit = activezarr.ActiveReduction(array, decode_cf=False, missing={"_FillValue": -32767})
    assert explicit.min() == 1003 and explicit.min().dtype == np.int16


def test_base64_fill_value_of_zarr_v3_is_decoded(tmp_path: Path) -> None:
    data = np.array([1.0, 1e20, 3.0, 4.0], "f4")
    fill = base64.standard_b64encode(struct.pack("<d", 1e20)).decode()  # as xarray writes it
    array = create(tmp_path / "f.zarr", data, attributes={"_FillValue": fill})
    red = activezarr.ActiveReduction(array)
    assert red.count() == 3 and red.mean() == pytest.approx(8 / 3)


@pytest.mark.parametrize("text, value", [("AAAAAAAA+H8=", np.nan), ("NaN", np.nan),
                                         ("-Infinity", -np.inf), ("0x7fc00000", np.nan),
                                         ("0x3f800000", 1.0)])
def test_string_fill_values_decode_as_zarr_and_xarray_write_them(text: str, value: float) -> None:
    spec = decoding({"_FillValue": text}, np.dtype("f4")).missing
    if np.isnan(value):
        assert spec.nan and not spec.values
    else:
        assert spec.values == (value,)


def test_a_fill_value_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(ValueError, match="_FillValue 'kelvin' is not a number"):
        decoding({"_FillValue": "kelvin"}, np.dtype("f4"))


def test_uint64_valid_range_compares_exactly_at_its_bounds(tmp_path: Path) -> None:
    lo, hi = 7134163482168126166, 11938267991069792155
    data = np.array([lo, hi, lo - 1, hi + 1, 5], "u8")
    array = create(tmp_path / "u.zarr", data, attributes={"valid_range": [lo, hi]}, fill_value=0)
    red = activezarr.ActiveReduction(array)
    assert red.count() == 2 and red.min() == lo and red.max() == hi


def test_int64_missing_values_compare_exactly(tmp_path: Path) -> None:
    big = 2**62 + 1
    data = np.array([big, big - 1, big + 1], "i8")
    array = create(tmp_path / "i.zarr", data, attributes={"missing_value": [big]}, fill_value=0)
    assert activezarr.ActiveReduction(array).count() == 2


@pytest.mark.parametrize("layout", ["v2", "v3"])
def test_unsigned_attribute_views_signed_storage_as_unsigned(tmp_path: Path, layout: str) -> None:
    stored = np.array([-1, -2, 5, 127, -128], "i1")  # 255, 254, 5, 127, 128 unsigned
    attrs = {"_Unsigned": "true", "valid_max": -2}  # -2 is 254 unsigned
    fill = -1 if layout == "v2" else 0
    if layout == "v3":
        attrs["_FillValue"] = -1
    array = create(tmp_path / "s.zarr", stored, layout=layout, fill_value=fill, attributes=attrs)
    red = activezarr.ActiveReduction(array)
    unsigned = np.ma.masked_equal(stored.view("u1"), 255)
    assert red.max() == unsigned.max() == 254 and red.max().dtype == np.uint8
    assert red.sum() == unsigned.sum() and red.count() == 4


def test_unwritten_chunks_of_unsigned_data_read_as_the_unsigned_fill(tmp_path: Path) -> None:
    array = create(tmp_path / "s.zarr", np.full(6, -3, "i1"), layout="v2", chunks=(2,),
                   fill_value=-3, attributes={"_Unsigned": "true"})
    red = activezarr.ActiveReduction(array, missing={"valid_max": 200})
    assert red.count() == 0  # every chunk is the fill, 253 unsigned, over valid_max
    assert activezarr.ActiveReduction(array, missing={"valid_max": 253}).sum() == 6 * 253


@pytest.mark.parametrize("layout", ["v2", "v3"])
def test_empty_selections_follow_numpy_ma(tmp_path: Path, layout: str) -> None:
    data = np.arange(12, dtype="i4").reshape(3, 4)
    red = activezarr.ActiveReduction(create(tmp_path / "e.zarr", data, layout=layout,
                                            chunks=(2, 2), fill_value=0))
    empty = np.ma.masked_equal(data, -1)[1:1]
    assert red[1:1].sum() == empty.sum() == 0 and red[1:1].count() == 0
    for op in ("mean", "min", "max", "var", "std"):
        assert red[1:1].reduce(op) is np.ma.masked
    np.testing.assert_array_equal(red[:, 2:2].sum(axis=1), np.zeros(3))
    assert red[:, 2:2].mean(axis=1).mask.all()


def test_an_all_missing_selection_is_masked_even_for_sum(tmp_path: Path) -> None:
    data = np.full(4, -9, "i4")
    red = activezarr.ActiveReduction(create(tmp_path / "m.zarr", data, fill_value=1,
                                            attributes={"_FillValue": -9}))
    assert red.sum() is np.ma.masked and red.count() == 0


@pytest.mark.parametrize("runner", RUNNERS, ids=lambda r: r.name)
def test_a_valid_range_crossed_by_unsigned_masks_everything(
        tmp_path: Path, request: pytest.FixtureRequest, runner: Runner) -> None:
    """[-32768, 0] viewed unsigned is [32768, 0]: every value is below or above it (netCDF4)."""
    create(tmp_path / "r.zarr", np.array([0, 5, -3], "i2"), fill_value=0,
           attributes={"_Unsigned": "true", "valid_range": [-32768, 0]})
    red = activezarr.ActiveReduction(runner.open(tmp_path / "r.zarr", request))
    assert red.count() == 0 and red.sum() is np.ma.masked


def test_a_fill_value_no_stored_value_can_equal_masks_nothing(tmp_path: Path) -> None:
    array = create(tmp_path / "n.zarr", np.array([1, 2, 3], "i2"), fill_value=0,
                   attributes={"missing_value": 1e20, "_FillValue": 2})
    assert activezarr.ActiveReduction(array).sum() == 4
    with pytest.raises(ValueError, match="not representable in dtype int16"):
        activezarr.ActiveReduction(array, missing={"missing_value": 1e20})

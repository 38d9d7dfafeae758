"""``histogram``: a state of a fixed shape per output cell (one count per bin), storage-side on
every backend, equal to numpy's ``histogram`` of the valid CF-decoded values of each cell.

test_differential bins every unpacked case of its own (every dtype to its limits, fill and
missing values, valid ranges, ``_Unsigned``, NaN with ``skipna``, every codec and chunking) on
every backend, packed ones too; here are groups, bad bins and every stored value of packed
small integers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import activezarr


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


@pytest.mark.parametrize("dtype", ["i1", "u1", "i2", "u2"])
@pytest.mark.parametrize(("scale", "offset"), [(0.5, 10.0), (-0.25, 3.0), (0.01, 273.15),
                                               (float(np.float32(-1e-3)), 0.0)])
def test_packed_values_bin_as_numpy_bins_the_decoded_ones(tmp_path: Path, dtype: str,
                                                          scale: float, offset: float) -> None:
    """Every stored value of the dtype, edges between and on decoded values: each decoded bin
    counted in the run of stored values that decode into it (numpy's closed last bin too)."""
    from arrays import create

    info = np.iinfo(dtype)
    stored = np.arange(info.min, info.max + 1).astype(dtype)
    np.random.default_rng(3).shuffle(stored)
    create(tmp_path / "h.zarr", stored, layout="v3", codec="zstd", chunks=(97,),
           attributes={"scale_factor": scale, "add_offset": offset})
    red = activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "h.zarr")))
    decoded = np.ma.getdata(red[...].reduce("max")), np.ma.getdata(red[...].reduce("min"))
    values = red.decoding.values(stored)  # CF's float32 or float64, as xarray picks
    for edges in (np.linspace(decoded[1] - 1, decoded[0] + 1, 7),
                  np.unique(np.sort(values[:9])).astype(np.float64),  # on decoded values
                  [decoded[0] + 1.0, decoded[0] + 2.0]):  # nothing falls in
        got = red.reduce("histogram", bins=edges)
        np.testing.assert_array_equal(got, np.histogram(values.astype(np.float64), edges)[0])
        assert red.last_report.fallbacks == 0 and red.last_report.chunks > 0


def test_values_packed_as_64_bit_integers_are_refused_before_anything_is_read(
        tmp_path: Path) -> None:
    from arrays import create

    create(tmp_path / "h.zarr", np.zeros(4, "i8"), attributes={"scale_factor": 0.5})
    red = activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "h.zarr")))
    with pytest.raises(ValueError, match="histograms of values packed as int64 are not"):
        red.reduce("histogram", bins=[0.0, 1.0])
    assert red.last_report is None

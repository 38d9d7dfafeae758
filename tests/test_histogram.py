"""``histogram``: a state of a fixed shape per output cell (one count per bin), storage-side on
every backend, equal to numpy's ``histogram`` of the valid CF-decoded values of each cell.

test_differential bins every unpacked case of its own (every dtype to its limits, fill and
missing values, valid ranges, ``_Unsigned``, NaN with ``skipna``, every codec and chunking) on
every backend; here are groups and bad bins.
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


def test_packed_values_are_refused_before_anything_is_read(tmp_path: Path) -> None:
    from arrays import create

    create(tmp_path / "h.zarr", np.zeros(4, "i2"), attributes={"scale_factor": 0.5})
    red = activezarr.ActiveReduction(activezarr.open_array(str(tmp_path / "h.zarr")))
    with pytest.raises(ValueError, match="cannot unpack packed values"):
        red.reduce("histogram", bins=[0.0, 1.0])
    assert red.last_report is None

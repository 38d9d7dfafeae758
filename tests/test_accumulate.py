"""One accumulation rule on every backend: means and moments of integers in float64."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import activezarr
from activezarr.chunk.spec import ChunkSpec
from activezarr.protocol import CannotExpress, build_request
from arrays import create
from runners import RUNNERS, Runner

NANOSECONDS = np.arange(16, dtype="i8") * 3_600_000_000_000 + 1_672_531_200_000_000_000


@pytest.mark.parametrize("runner", RUNNERS, ids=lambda r: r.name)
@pytest.mark.parametrize("data", [np.full(4, 2**62, "i8"), NANOSECONDS,
                                  np.full(6, 2**64 - 3, "u8")], ids=["2**62", "ns", "u8"])
def test_means_of_64_bit_integers_do_not_wrap(tmp_path: Path, request: pytest.FixtureRequest,
                                              runner: Runner, data: np.ndarray) -> None:
    create(tmp_path / "a.zarr", data, layout="v2", codec="none", chunks=(8,), fill_value=0)
    # On chunks this small a plain read moves less: the planner is told to keep the backend.
    red = activezarr.ActiveReduction(runner.open(tmp_path / "a.zarr", request), missing=None,
                                     plain_when_cheaper=False)
    # A plain Reductionist sums in the input dtype: only the sum is its to serve.
    plain = runner.name == "s3-reductionist"
    for op in ("mean", "var", "std"):
        np.testing.assert_allclose(red.reduce(op), getattr(data, op)(), rtol=1e-12, atol=1e-3)
        assert red.last_report.fallbacks == (red.last_report.chunks if plain else 0)
    assert red.sum() == data.sum()  # numpy's integer sum, wrapping as numpy wraps
    assert red.last_report.backend == runner.reported and red.last_report.fallbacks == 0


def _spec(dtype: str, accumulate: str) -> ChunkSpec:
    return ChunkSpec(dtype=dtype, shape=(4,), op="sum", accumulate=accumulate)


def test_float_accumulation_is_asked_for_on_the_wire() -> None:
    extensions = ("accumulate", "accumulate-float", "dtypes")
    op, body = build_request(_spec("<i8", "float"), ((0, 4, 1),), interface_type="s3",
                             url="http://s/b/k", byte_range=None, extensions=extensions)
    assert (op, body["accumulate"]) == ("sum", "float")


def test_a_plain_reductionist_cannot_serve_the_mean_of_int64_chunks() -> None:
    """Its sums wrap in int64, so the client reduces those chunks itself."""
    spec = _spec("<i8", "float")
    with pytest.raises(CannotExpress):
        build_request(spec, ((0, 4, 1),), interface_type="s3", url="http://s/b/k",
                      byte_range=None, extensions=())
    build_request(_spec("<f8", "float"), ((0, 4, 1),), interface_type="s3",
                  url="http://s/b/k", byte_range=None, extensions=())


def test_a_plain_reductionist_sums_floats_unless_packed_floats_need_float64() -> None:
    """float32 sums in float32 are numpy's own class; unpacked to float64 they are not."""
    for accumulate, served in (("wide", True), ("float", False)):
        try:
            build_request(_spec("<f4", accumulate), ((0, 4, 1),), interface_type="s3",
                          url="http://s/b/k", byte_range=None, extensions=())
        except CannotExpress:
            assert not served
        else:
            assert served


@pytest.mark.parametrize("runner", RUNNERS, ids=lambda r: r.name)
def test_packed_float32_sums_in_float64_on_every_backend(
        tmp_path: Path, request: pytest.FixtureRequest, runner: Runner) -> None:
    data = np.array([[1.0917969, 0.0], [32767.0, 0.0]], "f4")
    create(tmp_path / "p.zarr", data, layout="v2", codec="none", chunks=(2, 1), fill_value=0,
           attributes={"scale_factor": 0.01})
    red = activezarr.ActiveReduction(runner.open(tmp_path / "p.zarr", request))
    assert red.sum() == pytest.approx((data.astype("f8") * 0.01).sum(), rel=1e-15)

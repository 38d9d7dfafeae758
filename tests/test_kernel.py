"""The chunk kernel and the ChunkReduction codec, without zarr."""

from __future__ import annotations

import cbor2
import numcodecs
import numpy as np
import pytest

from activezarr.chunk.codec import ChunkReduction
from activezarr.chunk.kernel import ChunkKernel
from activezarr.chunk.spec import ChunkSpec, MissingSpec


def test_chunk_reduction_is_a_registered_numcodecs_codec() -> None:
    data = np.arange(24, dtype=">i4").reshape(4, 6)
    raw = numcodecs.Zstd().encode(data.tobytes())
    reduction = ChunkReduction("stats", [[1, 4, 2], [0, 6, 1]], dtype=">i4", shape=[4, 6],
                               codecs=[{"id": "zstd"}], axis=[0])
    config = reduction.get_config()
    assert config["id"] == "activezarr.chunk_reduction"
    rebuilt = numcodecs.get_codec(config)
    assert rebuilt.get_config() == config
    partial = ChunkKernel(reduction.spec).read(cbor2.loads(rebuilt.decode(raw)))
    np.testing.assert_array_equal(partial.sum, data[1:4:2].sum(axis=0))
    np.testing.assert_array_equal(partial.min, data[1:4:2].min(axis=0))
    np.testing.assert_array_equal(partial.count, [2] * 6)


def test_chunk_reduction_only_decodes() -> None:
    with pytest.raises(NotImplementedError, match="only decodes"):
        ChunkReduction(dtype="<f4", shape=[2]).encode(b"")


@pytest.mark.parametrize("bad", [
    {"dtype": "complex64", "shape": [2]},
    {"dtype": "<f4", "shape": [-1]},
    {"dtype": "<f4", "shape": [2], "axis": [1]},
    {"dtype": "<f4", "shape": [2, 2], "axis": [1, 0]},
    {"dtype": "<f4", "shape": [2], "order": [0, 0]},
    {"dtype": "<f4", "shape": [2], "selection": [[0, 2, 0]]},
    {"dtype": "<f4", "shape": [2], "selection": [[0, 2]]},
    {"dtype": "<i1", "shape": [2], "missing": {"values": [300]}},
    {"dtype": "<f4", "shape": [2], "surprise": 1},
])
def test_chunk_reduction_config_is_validated(bad: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        ChunkReduction(**bad)


@pytest.mark.parametrize("order", ["C", "F", (1, 2, 0)])
def test_stored_element_orders(order: object) -> None:
    data = np.arange(60, dtype="f8").reshape(3, 4, 5)
    if order == "C":
        raw = data.tobytes()
    elif order == "F":
        raw = data.tobytes(order="F")
    else:
        raw = data.transpose(order).tobytes()
    kernel = ChunkKernel(ChunkSpec(dtype="<f8", shape=(3, 4, 5), order=order, axis=(0, 2),
                                   op="sum"))
    partial = kernel.reduce(raw, ((0, 3, 1), (1, 4, 2), (0, 5, 1)))
    np.testing.assert_array_equal(partial.sum, data[:, 1:4:2].sum(axis=(0, 2)))


def test_nan_fill_value_masks_nan() -> None:
    spec = MissingSpec(values=(float("nan"),))
    assert spec.nan and spec.values == ()


def test_m2_combines_exactly_across_partials() -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(1e4, 1.0, size=1000)
    kernel = ChunkKernel(ChunkSpec(dtype="<f8", shape=(1000,), op="stats",
                                   accumulate="float"))
    acc = kernel.empty(())
    for start in range(0, 1000, 137):
        acc.merge(kernel.reduce(data.tobytes(), ((start, min(start + 137, 1000), 1),)))
    assert acc.count == 1000
    np.testing.assert_allclose(acc.m2 / 1000, data.var(), rtol=1e-12)


def test_fill_partial_matches_a_written_chunk() -> None:
    spec = ChunkSpec(dtype="<i2", shape=(4, 5), axis=(1,), op="stats")
    kernel = ChunkKernel(spec)
    selection = ((0, 4, 3), (1, 5, 1))
    written = kernel.reduce(np.full((4, 5), 7, "<i2").tobytes(), selection)
    filled = kernel.fill(7, selection)
    np.testing.assert_array_equal(filled.count, written.count)
    for name in written.arrays:
        np.testing.assert_array_equal(filled[name], written[name])


@pytest.mark.parametrize(("op", "params"), [
    ("count", None), ("sum", None), ("min", None), ("max", None), ("stats", None),
    ("histogram", {"edges": [-1e9, -3.0, 0.0, 2.5, 40.0, 1e9]}),
])
@pytest.mark.parametrize(("dtype", "order"), [("<f4", "C"), (">f8", "F"), ("<i2", (1, 2, 0)),
                                              ("<u8", "C")])
@pytest.mark.parametrize("selection", [((0, 3, 1), (0, 4, 1), (0, 5, 1)),
                                       ((1, 3, 1), (0, 4, 1), (0, 5, 2))],
                         ids=["whole", "part"])
@pytest.mark.parametrize("shuffled", [True, False], ids=["shuffle+zlib", "zlib"])
def test_chunks_reduced_together_give_the_merged_partials(op: str, params: dict | None,
                                                          dtype: str, order: object,
                                                          selection: tuple,
                                                          shuffled: bool) -> None:
    """One stacked reduction (the pool's path for the same selection of chunks of one region)
    is the state that merging each chunk's partial gives: exact for counts, sums of integers,
    minima, maxima and bins; to rounding for float sums and m2."""
    rng = np.random.default_rng(7)
    shape = (3, 4, 5)
    chunks = [rng.integers(-20, 50, shape).astype(dtype) for _ in range(5)]
    if dtype[1] == "f":
        chunks[1][1, 1, 2] = np.nan
        chunks[3][:] = np.nan  # a chunk all missing
    else:
        chunks[2][1, 1, 0] = 7  # the fill value: missing
    missing = MissingSpec(values=() if dtype[1] == "f" else (7,))

    def stored(chunk: np.ndarray) -> bytes:
        if order in ("C", "F"):
            return chunk.tobytes(order=order)
        return chunk.transpose(order).tobytes()

    # A byte shuffle is undone on the whole stack at once (CodecChain.decode_stack).
    size = np.dtype(dtype).itemsize
    codecs = [{"id": "shuffle", "elementsize": size}] * shuffled + [{"id": "zlib"}]
    raws = [numcodecs.Zlib().encode(numcodecs.Shuffle(size).encode(stored(c)) if shuffled
                                    else stored(c)) for c in chunks]
    # Moments of integers sum in float64, as the client asks (numpy's mean and var).
    kernel = ChunkKernel(ChunkSpec(dtype=dtype, shape=shape, order=order, axis=(0, 2), op=op,
                                   params=params, missing=missing, codecs=codecs,
                                   accumulate="float" if op == "stats" else "wide"))
    assert kernel.stacks(None, None)
    merged = kernel.empty((4,))
    for raw in raws:
        merged.merge(kernel.reduce(raw, selection))
    together = kernel.reduce_together(raws, selection, [f"c/{i}" for i in range(5)])
    np.testing.assert_array_equal(together.count, merged.count)
    for name in merged.arrays:
        if name in ("sum", "m2") and (dtype[1] == "f" or name == "m2"):
            np.testing.assert_allclose(together[name], merged[name], rtol=1e-12)
        else:
            np.testing.assert_array_equal(together[name], merged[name])


def test_only_unweighted_ungrouped_unpositioned_chunks_stack() -> None:
    kernel = ChunkKernel(ChunkSpec(dtype="<f4", shape=(4, 5), axis=(0,), op="sum"))
    assert kernel.stacks(None, None)
    assert not kernel.stacks(np.ones((4, 5)), None)
    assert not kernel.stacks(None, np.zeros(4, np.int64))
    positional = ChunkKernel(ChunkSpec(dtype="<f4", shape=(4, 5), axis=(0,), op="argmax",
                                       params={"shape": [4, 5], "reversed": [False, False]}))
    assert not positional.stacks(None, None)

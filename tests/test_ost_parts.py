"""Part chunks: OSTs reducing their extents plus the client's straddling elements equal the
kernel reducing the whole chunk, for any stripe size, element size, order, selection and axis."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from activezarr.chunk.kernel import ChunkKernel
from activezarr.chunk.parts import FlatReducer, boxes, reduce_loose
from activezarr.chunk.spec import ChunkSpec, MissingSpec
from activezarr.ost.wire.striping import FileLayout


@st.composite
def chunks(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    selection = []
    for n in shape:
        start = draw(st.integers(0, n - 1))
        selection.append((start, draw(st.integers(start, n)), draw(st.integers(1, 3))))
    axes = draw(st.none() | st.sets(st.integers(0, len(shape) - 1)).map(lambda s: tuple(sorted(s))))
    return shape, tuple(selection), axes


@settings(max_examples=150, deadline=None)
@given(chunks(), st.sampled_from(["|u1", "<i2", ">i4", "<f4", ">f8"]), st.sampled_from("CF"),
       st.integers(1, 20), st.integers(0, 9), st.integers(1, 4))
def test_ost_parts_and_loose_bytes_make_the_whole_chunk(chunk, dtype, order, stripe, offset, osts):
    shape, selection, axes = chunk
    data = np.random.default_rng(stripe).integers(0, 9, size=shape).astype(dtype)
    raw = data.tobytes(order=order)
    spec = ChunkSpec(dtype=dtype, shape=shape, order=order, axis=axes, op="stats",
                     missing=MissingSpec(values=(3,)))
    file = FileLayout(fid="f", size=offset + len(raw), stripe_size=stripe, osts=tuple(range(osts)))
    extents = file.extents(offset, len(raw))
    total, loose = None, []
    for ost in range(osts):
        reducer = FlatReducer(spec, selection)
        loose += reducer.add_pieces([(e.start, raw[e.start:e.start + e.length])
                                     for e in extents if e.ost == ost])
        if total is None:
            total = reducer.result
        else:
            total.merge(reducer.result)
    total.merge(reduce_loose(spec, selection, loose))
    want = ChunkKernel(spec).reduce(raw, selection)
    for name in ("count", "sum", "min", "max"):
        np.testing.assert_array_equal(getattr(total, name), getattr(want, name), err_msg=name)
    np.testing.assert_allclose(total.m2, want.m2, atol=1e-9)


@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.data())
def test_boxes_cover_a_flat_range_exactly_once(shape, data):
    size = int(np.prod(shape))
    k0 = data.draw(st.integers(0, size))
    k1 = data.draw(st.integers(k0, size))
    covered = np.zeros(shape, int)
    for start, stop in boxes(k0, k1, shape):
        covered[tuple(slice(a, b) for a, b in zip(start, stop))] += 1
    want = np.zeros(size, int)
    want[k0:k1] = 1
    np.testing.assert_array_equal(covered.reshape(-1), want)

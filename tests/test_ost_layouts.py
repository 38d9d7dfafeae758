"""The MDS's compact layouts answer (CBOR columns): what goes in comes out, validated, and an
answer that does not fit its request is refused with the reason. No servers needed."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from activezarr.ost.wire.layouts import decode_layouts, encode_layouts
from activezarr.ost.wire.striping import FileLayout

_layouts = st.builds(
    FileLayout,
    fid=st.one_of(st.binary(min_size=16, max_size=16).map(bytes.hex),
                  st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
    size=st.integers(0, 2**62), stripe_size=st.sampled_from([1, 4096, 2**20, 2**40]),
    osts=st.lists(st.integers(0, 300), min_size=1, max_size=8, unique=True).map(tuple))


@given(st.lists(st.one_of(st.none(), _layouts), max_size=30))
def test_layouts_come_back_as_they_went(found: list[FileLayout | None]) -> None:
    assert decode_layouts(encode_layouts(found), len(found)) == found


def test_a_row_costs_the_fid_bytes_the_size_and_the_osts() -> None:
    layout = FileLayout(fid="ab" * 16, size=938_029, stripe_size=2**20, osts=(2, 3, 0, 1))
    one, many = (len(encode_layouts([layout] * n)) for n in (1, 101))
    # 16 fid bytes, a uint32, a list of 4 small ints (and the columns' longer length heads)
    assert 100 * (16 + 5 + 5) <= many - one <= 100 * (16 + 5 + 5) + 8
    assert one < 80  # the column names, the stripe size said once


def _answer(**columns: Any) -> bytes:
    good = cbor2.loads(encode_layouts(
        [FileLayout(fid="ab" * 16, size=3, stripe_size=4096, osts=(1, 0)), None]))
    return cbor2.dumps({**good, **columns})


REFUSED = [
    (b"\xff\x00", "not CBOR"),
    (cbor2.dumps([None, None]), "without the columns"),
    (_answer(extra=1), "without the columns"),
    (_answer(missing=[2]), "missing positions are not among 2"),
    (_answer(missing=[1, 1]), "missing positions"),
    (_answer(missing=[-1]), "missing positions"),
    (_answer(missing=[]), r"bytes of fids \(16 each\)"),
    (_answer(fid=b"\x00" * 15), r"bytes of fids \(16 each\)"),
    (_answer(fid=["a", "b"]), "fid column"),
    (_answer(size=[3, 4]), "size column of 2"),
    (_answer(stripe_size=[]), "stripe_size column of 0"),
    (_answer(osts={"0": 1}), "osts column of no"),
    (_answer(osts=[[1, 1]]), "each once"),
    (_answer(size=[-3]), "greater than or equal to 0"),
    (_answer(fid=["../x"]), "pattern"),
    (_answer(missing=[True]), "missing positions"),
]


@pytest.mark.parametrize(("answer", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_an_answer_that_does_not_fit_is_refused_with_the_reason(answer: bytes,
                                                                message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_layouts(answer, 2)

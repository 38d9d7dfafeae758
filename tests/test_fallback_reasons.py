"""Why a chunk cannot go to a server names the request field that decided it; NaN-masking of
integers (skipna on packed int16) asks nothing of the server, so such chunks reduce there."""

from __future__ import annotations

import pytest

from activezarr.chunk.spec import ChunkSpec, MissingSpec
from activezarr.protocol import EXTENSIONS, CannotExpress, build_request


def spec(**fields: object) -> ChunkSpec:
    return ChunkSpec(**{"dtype": "<f4", "shape": (4, 4), **fields})


def build(chunk: ChunkSpec, extensions: tuple[str, ...] = ()) -> tuple[str, dict]:
    return build_request(chunk, ((0, 4, 1),) * 2, interface_type="s3", url="http://h/b/k",
                         byte_range=None, extensions=extensions)


@pytest.mark.parametrize("chunk, field", [
    (spec(codecs=({"id": "zstd"},)), "codecs: [zstd]"),
    (spec(dtype="<i2"), "dtype: int16"),
    (spec(dtype="<i4", op="sum"), "accumulate: a int32 sum"),
    (spec(missing=MissingSpec(nan=True)), "missing_nan:"),
    (spec(shape=(2, 2, 2), order=(1, 0, 2)), "order:"),
    (spec(op="stats"), "the server does not serve the 'stats' reduction"),
    (spec(op="sum", weighted=True), "weights:"),
])
def test_each_reason_names_the_field_that_decided_it(chunk: ChunkSpec, field: str) -> None:
    with pytest.raises(CannotExpress) as why:
        build(chunk)
    assert str(why.value).startswith(field), why.value


@pytest.mark.parametrize("dtype", ["<i2", "<u1", "<i8"])
def test_nan_masking_of_integers_asks_nothing_of_the_server(dtype: str) -> None:
    chunk = spec(dtype=dtype, missing=MissingSpec(values=(7,), nan=True),
                 op="sum", accumulate="float")
    op, body = build(chunk, EXTENSIONS)
    assert "missing_nan" not in body and body["missing"] == {"missing_value": 7}

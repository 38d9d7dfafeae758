"""Why a chunk cannot go to a server names the request field that decided it; NaN-masking of
integers (skipna on packed int16) asks nothing of the server, so such chunks reduce there."""

from __future__ import annotations

import pytest

from activezarr.chunk.spec import ChunkSpec, MissingSpec
from activezarr.protocol import EXTENSIONS, request_or_reason


def spec(**fields: object) -> ChunkSpec:
    return ChunkSpec(**{"dtype": "<f4", "shape": (4, 4), **fields})


def reason(chunk: ChunkSpec, extensions: tuple[str, ...] = ()) -> object:
    return request_or_reason(chunk, ((0, 4, 1),) * 2, interface_type="s3", url="http://h/b/k",
                             byte_range=None, extensions=extensions)


@pytest.mark.parametrize("chunk, field", [
    (spec(codecs=({"id": "zstd"},)), "codecs: [zstd]"),
    (spec(dtype="<i2"), "dtype: int16"),
    (spec(dtype="<i4", fields=("count", "sum")), "accumulate: a int32 sum"),
    (spec(missing=MissingSpec(nan=True)), "missing_nan:"),
    (spec(shape=(2, 2, 2), order=(1, 0, 2)), "order:"),
    (spec(fields=("count", "sum", "m2")), "op:"),
    (spec(fields=("count", "sum", "wsum"), weighted=True), "weights:"),
])
def test_each_reason_names_the_field_that_decided_it(chunk: ChunkSpec, field: str) -> None:
    why = reason(chunk)
    assert isinstance(why, str) and why.startswith(field), why


@pytest.mark.parametrize("dtype", ["<i2", "<u1", "<i8"])
def test_nan_masking_of_integers_asks_nothing_of_the_server(dtype: str) -> None:
    chunk = spec(dtype=dtype, missing=MissingSpec(values=(7,), nan=True),
                 fields=("count", "sum"), accumulate="float")
    built = reason(chunk, EXTENSIONS)
    assert isinstance(built, tuple), built
    op, body = built
    assert "missing_nan" not in body and body["missing"] == {"missing_value": 7}

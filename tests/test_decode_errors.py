"""A corrupt or truncated chunk is a ChunkDecodeError naming its key on every backend."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import activezarr
from activezarr.errors import ChunkDecodeError
from arrays import create
from runners import RUNNERS, Runner

DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "one-byte-short": lambda raw: raw[:-1],
    "header-only": lambda raw: raw[:16],
    "corrupt": lambda raw: raw[:16] + bytes(b ^ 0x5A for b in raw[16:]),
}


CASES = [(codec, damage) for codec in ("zstd", "zlib", "blosc") for damage in sorted(DAMAGE)]


@pytest.mark.parametrize("runner", RUNNERS, ids=lambda r: r.name)
@pytest.mark.parametrize("codec, damage", CASES)
def test_a_damaged_chunk_is_an_error_naming_its_key(tmp_path: Path, request: pytest.FixtureRequest,
                                                   runner: Runner, codec: str,
                                                   damage: str) -> None:
    data = np.random.default_rng(3).normal(size=(40, 30)).astype("f8")
    create(tmp_path / "a.zarr", data, layout="v2", codec=codec, chunks=(20, 30), fill_value=0)
    chunk = tmp_path / "a.zarr" / "1.0"
    chunk.write_bytes(DAMAGE[damage](chunk.read_bytes()))
    red = activezarr.ActiveReduction(runner.open(tmp_path / "a.zarr", request))
    assert red[:20].mean() == pytest.approx(data[:20].mean())  # the intact chunk
    with pytest.raises(ChunkDecodeError, match=r"chunk '(.*/)?1\.0'"):
        red.mean()

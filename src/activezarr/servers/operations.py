"""One operation on one chunk's stored bytes, run as the request's ``ChunkReduction``; runs in a
worker thread."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..chunk.codec import ChunkReduction
from ..chunk.codecs import CodecChain
from ..chunk.partial import Partial
from ..protocol import ChunkRequest
from .errors import BadRequest

Raw = bytes | memoryview | np.ndarray  # np.ndarray: a shapeless chunk, decoded here


def _reduction(op: str, request: ChunkRequest, raw: Raw, max_decoded: int, lean: bool = False
               ) -> tuple[ChunkReduction, Any]:
    """The request's work and the bytes it decodes; a shapeless chunk is 1-D, decoded once here."""
    codecs = request.codec_configs()
    itemsize = np.dtype(request.dtype).itemsize
    shape = request.shape
    if shape is None:
        flat = CodecChain(codecs).decode_within(raw, max_decoded, request.url)
        if flat.nbytes % itemsize:
            raise BadRequest(f"{flat.nbytes} bytes are not a whole number of {request.dtype}")
        shape, raw, codecs = [flat.nbytes // itemsize], flat, ()
    nbytes = math.prod(shape) * itemsize
    if nbytes > max_decoded:
        raise BadRequest(f"chunk decodes to {nbytes} bytes, over the limit of {max_decoded}")
    return request.chunk_reduction(op, shape, codecs, lean), raw


def chunk_partial(op: str, request: ChunkRequest, raw: Raw, max_decoded: int) -> Partial:
    """The partials of reduction ``op`` on ``raw``, before they become a response map (what a
    combined batch merges)."""
    reduction, data = _reduction(op, request, raw, max_decoded)
    return reduction.partial(data, request.url)


def execute(op: str, request: ChunkRequest, raw: Raw, max_decoded: int,
            lean: bool = False) -> dict[str, Any]:
    """The response map of ``op`` on ``raw``: decode, select, mask missing, reduce."""
    reduction, data = _reduction(op, request, raw, max_decoded, lean)
    return reduction.result(data, request.url)

"""One operation on one chunk's stored bytes, with the core kernel; runs in a worker thread."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..chunk.codecs import CodecChain
from ..chunk.kernel import ChunkKernel
from ..chunk.missing import missing_mask
from ..chunk.partial import Partial
from ..protocol import ChunkRequest, extension_result, reduction_result, select_result
from .errors import BadRequest

Raw = bytes | memoryview | np.ndarray  # np.ndarray: a shapeless chunk, decoded here


def _spec_and_bytes(op: str, request: ChunkRequest, raw: Raw, max_decoded: int
                    ) -> tuple[Any, Any]:
    """The kernel spec and the bytes it decodes; a shapeless chunk is 1-D, decoded once here."""
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
    return request.chunk_spec(op, shape, codecs), raw


def _check_extensions(op: str, request: ChunkRequest) -> None:
    if request.weights is not None and op != "sum":
        raise BadRequest(f"weights go with the sum operation, not {op}")
    if request.groups is not None and op == "select":
        raise BadRequest("groups do not go with the select operation")


def chunk_partial(op: str, request: ChunkRequest, raw: Raw, max_decoded: int) -> Partial:
    """The partials of reduction ``op`` on ``raw``, before they become a response map (what a
    combined batch merges)."""
    if op == "select":
        raise BadRequest("select results cannot be combined")
    _check_extensions(op, request)
    spec, data = _spec_and_bytes(op, request, raw, max_decoded)
    return ChunkKernel(spec).reduce(data, request.chunk_selection(spec.shape), request.url,
                                    weights=request.weight_array(),
                                    labels=request.label_array())


def execute(op: str, request: ChunkRequest, raw: Raw, max_decoded: int,
            lean: bool = False) -> dict[str, Any]:
    """The response map of ``op`` on ``raw``: decode, select, mask missing, reduce."""
    _check_extensions(op, request)
    if op != "select":
        partial = chunk_partial(op, request, raw, max_decoded)
        return extension_result(reduction_result(op, request, partial, lean), request, partial)
    spec, data = _spec_and_bytes(op, request, raw, max_decoded)
    kernel = ChunkKernel(spec)
    selection = request.chunk_selection(spec.shape)
    selected = kernel.decode(data, request.url)[tuple(slice(*s) for s in selection)]
    mask = missing_mask(selected, spec.missing)
    count = selected.size if mask is None else selected.size - int(np.count_nonzero(mask))
    return select_result(request, selected, count)

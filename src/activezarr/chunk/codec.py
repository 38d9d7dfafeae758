"""``ChunkReduction``: "decode this chunk and reduce it" as a numcodecs codec.

Its JSON config is the whole request, so any storage-side process rebuilds it with
``numcodecs.get_codec(config)`` and runs it: every storage side (the active server, the OSS
and the OSTs) builds one from each chunk request. ``decode(raw)`` returns the encoded partial:
PROTOCOL.md's response map as CBOR (:mod:`activezarr.chunk.result`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2
import numpy as np
from numcodecs.abc import Codec

from ..errors import InvalidReductionError
from .aggregation import Aggregation
from .kernel import ChunkKernel
from .missing import missing_mask
from .partial import Partial
from .reductions import aggregation_class
from .result import encode_result, result_form, select_result
from .spec import ChunkSpec, check_selection

ACCUMULATE = ("native", "wide", "float")
#: Spec fields that follow from ``op``, ``params``, ``weights`` and ``groups``.
_DERIVED = ("op", "params", "weighted", "group_axis")


class ChunkReduction(Codec):  # type: ignore[misc]  # numcodecs has no type information
    """Decode one stored chunk with the inner codecs, then reduce a selection of it.

    ``op`` is a PROTOCOL.md operation (or a served plugin's, with its ``params``);
    ``accumulate`` and ``weights``/``groups`` (``{"shape",
    "values"}``, ``{"axis", "labels"}``) are the request fields of those names; ``lean``,
    ``shape_as_bytes`` and ``count_as_bytes`` say how the answer is written; the rest is the
    :class:`~activezarr.chunk.spec.ChunkSpec`.
    """

    codec_id = "activezarr.chunk_reduction"

    def __init__(self, op: str = "sum", selection: Any = None, *, accumulate: str = "wide",
                 weights: Mapping[str, Any] | None = None,
                 groups: Mapping[str, Any] | None = None, lean: bool = False,
                 shape_as_bytes: bool = False, count_as_bytes: bool = False,
                 params: Mapping[str, Any] | None = None, **spec: Any) -> None:
        if op != "select":
            aggregation_class(op)  # InvalidReductionError for an operation not served here
        if accumulate not in ACCUMULATE:
            raise InvalidReductionError(f"accumulate {accumulate!r} is not one of "
                                        f"{', '.join(ACCUMULATE)}")
        if weights is not None and op == "select":
            raise InvalidReductionError("weights go with the sum operation, not select")
        if groups is not None and op == "select":
            raise InvalidReductionError("groups do not go with the select operation")
        if given := [name for name in _DERIVED if name in spec]:
            raise InvalidReductionError(f"{', '.join(given)} follow from op, params, weights "
                                        "and groups")
        self._weights = None if weights is None else _weight_array(weights)
        self._labels = None if groups is None else _label_array(groups)
        self.op, self.accumulate = op, accumulate
        self.weights, self.groups = weights, groups
        self.params = None if params is None else dict(params)
        self.lean, self.shape_as_bytes, self.count_as_bytes = lean, shape_as_bytes, count_as_bytes
        self.spec = ChunkSpec(**spec, op="count" if op == "select" else op, params=self.params,
                              accumulate="float" if accumulate == "float" or weights is not None
                              else "wide",
                              weighted=weights is not None,
                              group_axis=None if groups is None else groups["axis"])
        if selection is None:
            selection = [[0, n, 1] for n in self.spec.shape]
        self.selection = check_selection(selection, len(self.spec.shape))
        self.form = result_form(op, self.spec.dtype, self.spec.order, self.spec.axis,
                                accumulate=accumulate, lean=lean, shape_as_bytes=shape_as_bytes,
                                count_as_bytes=count_as_bytes,
                                labels=self._labels)
        self._kernel = ChunkKernel(self.spec)

    @property
    def aggregation(self) -> Aggregation:
        """The state this reduction computes (its fields, their sizes)."""
        return self._kernel.aggregation

    def encode(self, buf: Any) -> bytes:
        raise NotImplementedError(
            "ChunkReduction only decodes: it reduces stored chunks and cannot produce them"
        )

    def decode(self, buf: Any, out: Any = None) -> bytes:
        """The encoded partial of the selection of ``buf``: the response map, as CBOR."""
        if out is not None:
            raise ValueError("ChunkReduction returns a new partial; 'out' is not supported")
        return cbor2.dumps(self.result(buf))

    def partial(self, buf: Any, key: str | None = None) -> Partial:
        """The :class:`Partial` of the selection of ``buf`` (what combining merges); ``key``
        names the chunk in errors."""
        if self.op == "select":
            raise InvalidReductionError("select results cannot be combined")
        return self._kernel.reduce(buf, self.selection, key, weights=self._weights,
                                   labels=self._labels)

    def result(self, buf: Any, key: str | None = None) -> dict[str, Any]:
        """The response map of the selection of ``buf`` (decoded, selected, masked, reduced)."""
        if self.op != "select":
            return self.result_of(self.partial(buf, key))
        selected = self._kernel.decode(buf, key)[tuple(slice(*s) for s in self.selection)]
        mask = missing_mask(selected, self.spec.missing)
        count = selected.size if mask is None else selected.size - int(np.count_nonzero(mask))
        return select_result(selected, count, self.form)

    def result_of(self, partial: Partial) -> dict[str, Any]:
        """The response map of ``partial`` (merged, or reduced from pieces), this config's."""
        return encode_result(partial, self.form)

    def get_config(self) -> dict[str, Any]:
        spec = self.spec.model_dump(mode="json", exclude={*_DERIVED, "accumulate"})
        return {
            "id": self.codec_id, "op": self.op, **spec, "accumulate": self.accumulate,
            "selection": [list(s) for s in self.selection],
            "weights": None if self.weights is None else {  # JSON, as numcodecs configs are
                "shape": list(self.weights["shape"]),
                "values": np.asarray(self.weights["values"], np.float64).tolist()},
            "groups": None if self.groups is None else dict(self.groups),
            "lean": self.lean, "shape_as_bytes": self.shape_as_bytes,
            "count_as_bytes": self.count_as_bytes,
            **({} if self.params is None else {"params": self.params}),
        }

    def __repr__(self) -> str:
        return (f"ChunkReduction(op={self.op!r}, dtype={self.spec.dtype!r}, "
                f"shape={self.spec.shape})")


def _weight_array(weights: Mapping[str, Any]) -> np.ndarray:
    shape, values = weights.get("shape"), weights.get("values")
    if set(weights) != {"shape", "values"} or shape is None or values is None:
        raise InvalidReductionError("weights are {'shape': [...], 'values': [...]}")
    array = np.asarray(values, np.float64)
    if array.ndim != 1 or array.size != int(np.prod(shape)):
        raise InvalidReductionError(f"weights: {array.size} values for shape {list(shape)}")
    if not np.isfinite(array).all():
        raise InvalidReductionError("weights: values must be finite numbers")
    return array.reshape(shape)


def _label_array(groups: Mapping[str, Any]) -> np.ndarray:
    labels = groups.get("labels")
    if set(groups) != {"axis", "labels"} or labels is None \
            or not isinstance(groups["axis"], int):
        raise InvalidReductionError("groups are {'axis': int, 'labels': [...]}")
    array = np.asarray(labels)
    if array.ndim != 1 or (array.size and array.dtype.kind not in "iu"):
        raise InvalidReductionError("groups.labels are integers, one per selected position")
    return array.astype(np.int64)

"""Merging, before answering, the partials of batch items that land in one output region.

Chunks stacked along a reduced axis each yield a partial of the same output cells; merged
here, they cross the network once (the ``combine`` extension, PROTOCOL.md's Batch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..chunk.partial import Partial, owned
from ..chunk.result import encode_result
from ..protocol import BatchItem
from .errors import BadRequest

#: How a merged partial becomes its answer: (op, request, partial, lean) -> response map.
Encode = Callable[[str, BatchItem, Partial, bool], dict[str, Any]]


def encode_answer(op: str, request: BatchItem, partial: Partial, lean: bool) -> dict[str, Any]:
    """PROTOCOL.md's response map of ``partial`` (the answer of a whole chunk, or of a group)."""
    return encode_result(partial, request.result_form(op, lean))


@dataclass
class _Group:
    op: str
    request: BatchItem | None = None
    partial: Partial | None = None
    #: Bytes read for each merged position.
    stored: dict[int, int] = field(default_factory=dict)


class Combiner:
    """The groups of one batch, by label; items alone in their group are not combined."""

    def __init__(self, labels: Sequence[int] | None, items: Mapping[int, BatchItem],
                 encode: Encode = encode_answer) -> None:
        self._encode = encode
        self._groups: dict[int, _Group] = {}
        self._label_of: dict[int, int] = {}
        if labels is None:
            return
        sizes: dict[int, int] = {}
        for position in items:
            sizes[labels[position]] = sizes.get(labels[position], 0) + 1
        for position, item in items.items():
            label = labels[position]
            if sizes[label] > 1:
                self._label_of[position] = label
                self._groups.setdefault(label, _Group(item.op))

    def combines(self, position: int) -> bool:
        return position in self._label_of

    def merged(self, position: int) -> bool:
        """Whether ``position``'s partial is in its group's merged result."""
        label = self._label_of.get(position)
        return label is not None and position in self._groups[label].stored

    def add(self, position: int, item: BatchItem, partial: Partial, stored: int) -> bool:
        """Merge ``partial`` (of ``stored`` bytes read) into its group; True when it starts
        the group (and so holds its memory)."""
        group = self._groups[self._label_of[position]]
        if item.op != group.op:
            raise BadRequest(f"cannot combine op {item.op!r} with {group.op!r} in one group")
        if group.partial is None:
            group.request, group.partial = item, owned(partial)
            group.stored[position] = stored
            return True
        if _groups_present(item) != _groups_present(group.request):
            raise BadRequest("cannot combine partials of different groups")
        if partial.shape != group.partial.shape or any(
                values.dtype != group.partial.arrays[name].dtype
                for name, values in partial.arrays.items()):
            raise BadRequest(f"cannot combine a partial of shape {list(partial.shape)} with one "
                             f"of shape {list(group.partial.shape)}")
        group.partial.merge(partial)
        group.stored[position] = stored
        return False

    def answers(self, lean: bool, tell_stored: bool = True) -> dict[int, dict[str, Any]]:
        """Each group's merged result at its first position that succeeded, ``{"combined": it}``
        at the others; with ``lean`` (and ``tell_stored``), each with the ``stored_bytes`` read
        for it."""
        out: dict[int, dict[str, Any]] = {}
        for group in self._groups.values():
            if group.partial is None or group.request is None:
                continue  # every item of the group failed: each has its error
            # The first position that succeeded holds the answer, whichever finished first.
            holder = min(group.stored)
            out[holder] = self._encode(group.op, group.request, group.partial, lean)
            for position in group.stored:
                if position != holder:
                    out[position] = {"combined": holder}
                if lean and tell_stored:
                    out[position]["stored_bytes"] = group.stored[position]
        return out


def _groups_present(item: BatchItem | None) -> tuple[int, ...]:
    """The grouped axis and the groups a grouped request's partial holds, in order; () if none.
    Partials of the same shape merge cell by cell only where these are the same."""
    if item is None or item.groups is None:
        return ()
    return (item.groups.axis, *sorted({label for label in item.groups.labels if label >= 0}))

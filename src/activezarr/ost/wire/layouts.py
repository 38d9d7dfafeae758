"""The MDS's compact answer to ``POST /files/layouts``: the layouts of a batch's files as CBOR
columns, in the request's order.

A whole-array reduction asks the layout of every chunk it reduces, so this answer is most of
what the lookups cost on the LAN: one JSON entry is ~95 bytes, mostly its uuid4 fid in hex; as
columns it is ~26 (the fid's 16 bytes, the size, the OSTs; a stripe size shared by every file
once). Asked for with ``Accept: application/cbor``; JSON stays for other callers (PROTOCOL.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import cbor2

from .striping import FileLayout

CBOR = "application/cbor"
#: Fids the MDS makes (``uuid4().hex``), sent as their 16 bytes.
_HEX_FID = re.compile(r"[0-9a-f]{32}")
_FID_BYTES = 16


def encode_layouts(found: Sequence[FileLayout | None]) -> bytes:
    """``found`` (None where no file is) as CBOR columns over the files found:
    ``missing`` (positions without a file), ``fid`` (16 bytes each, concatenated, when every
    fid is 32 lowercase hex digits; else a list of strings), ``size``, ``stripe_size`` (one
    integer when every file has the same) and ``osts`` (a list per file)."""
    layouts = [layout for layout in found if layout is not None]
    fids = [layout.fid for layout in layouts]
    stripes = {layout.stripe_size for layout in layouts}
    columns: dict[str, Any] = {
        "missing": [i for i, layout in enumerate(found) if layout is None],
        "fid": (bytes.fromhex("".join(fids)) if all(map(_HEX_FID.fullmatch, fids)) else fids),
        "size": [layout.size for layout in layouts],
        "stripe_size": (stripes.pop() if len(stripes) == 1
                        else [layout.stripe_size for layout in layouts]),
        "osts": [list(layout.osts) for layout in layouts],
    }
    return cbor2.dumps(columns)


def decode_layouts(answer: bytes, count: int) -> list[FileLayout | None]:
    """The ``count`` layouts of an :func:`encode_layouts` answer, each validated as a
    :class:`FileLayout`; ValueError naming what does not fit."""
    try:
        columns = cbor2.loads(answer)
    except (cbor2.CBORDecodeError, ValueError) as exc:
        raise ValueError(f"a layouts answer that is not CBOR: {exc}") from exc
    if not isinstance(columns, dict) or set(columns) != {"missing", "fid", "size",
                                                          "stripe_size", "osts"}:
        raise ValueError("a layouts answer without the columns missing, fid, size, "
                         "stripe_size, osts")
    missing = columns["missing"]
    if not isinstance(missing, list) or len(set(missing)) != len(missing) or not all(
            type(i) is int and 0 <= i < count for i in missing):
        raise ValueError(f"a layouts answer whose missing positions are not among {count}")
    found = count - len(missing)
    fids = _fids(columns["fid"], found)
    stripe = columns["stripe_size"]
    stripes = stripe if isinstance(stripe, list) else [stripe] * found
    for name, column in (("size", columns["size"]), ("stripe_size", stripes),
                         ("osts", columns["osts"])):
        if not isinstance(column, list) or len(column) != found:
            raise ValueError(f"a layouts answer with {found} files but a {name} column of "
                             f"{len(column) if isinstance(column, list) else 'no'} values")
    layouts = iter(FileLayout.model_validate({"fid": f, "size": n, "stripe_size": s, "osts": o})
                   for f, n, s, o in zip(fids, columns["size"], stripes, columns["osts"]))
    absent = set(missing)
    return [None if i in absent else next(layouts) for i in range(count)]


def _fids(column: Any, found: int) -> list[str]:
    if isinstance(column, bytes):
        if len(column) != _FID_BYTES * found:
            raise ValueError(f"a layouts answer with {found} files but {len(column)} bytes of "
                             f"fids ({_FID_BYTES} each)")
        return [column[i:i + _FID_BYTES].hex() for i in range(0, len(column), _FID_BYTES)]
    if isinstance(column, list) and len(column) == found:
        return column
    raise ValueError(f"a layouts answer with {found} files but a fid column that does not "
                     "hold as many")

"""Reading what an HTTP server answered: PROTOCOL.md's JSON error, or the start of anything else."""

from __future__ import annotations

import json


def error_message(body: bytes) -> str | None:
    """The message of PROTOCOL.md's JSON error ``{"error": {"message": ...}}``; None when
    ``body`` is not one (a proxy's page, an S3 endpoint's XML)."""
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return None


def excerpt(body: bytes) -> str:
    """The start of an answer that is not ours, as one line."""
    return " ".join(body[:120].decode(errors="replace").split())

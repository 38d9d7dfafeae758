"""What the ``activezarr`` commands share: click parameter types and one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from ..errors import ActiveZarrError

#: What the library raises for a bad request or unreadable data; shown as one line, no traceback.
LIBRARY_ERRORS = (ActiveZarrError, OSError, IndexError, ValueError, TypeError, KeyError)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Library errors become ``Error: ...``, exit code 1: users need the message, not the stack."""
    try:
        yield
    except LIBRARY_ERRORS as exc:
        # str(KeyError) is the repr of its message; the message itself reads better.
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        raise click.ClickException(" ".join(text.split()) or type(exc).__name__) from exc


def parse_selection(text: str) -> tuple[Any, ...]:
    """``"0:10,:,::2"`` -> ``(slice(0, 10), slice(None), slice(None, None, 2))``.

    Entries are ints, ``start:stop:step`` slices (every part optional) or ``...``, as in numpy.
    """
    return tuple(_parse_entry(entry.strip()) for entry in text.split(","))


def _parse_entry(entry: str) -> Any:
    if entry == "...":
        return ...
    try:
        if ":" not in entry:
            return int(entry)
        parts = entry.split(":")
        if len(parts) > 3:
            raise ValueError
        return slice(*(int(p) if p.strip() else None for p in parts))
    except ValueError:
        raise ValueError(f"bad entry {entry!r}: use an integer, a slice start:stop:step "
                         "(parts optional) or '...'") from None


class SelectionType(click.ParamType):
    """A numpy-style selection written as text, e.g. ``0:10,:,::2``."""

    name = "selection"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[Any, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_selection(value)
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


class JsonObjectType(click.ParamType):
    """A JSON object given on the command line, e.g. ``'{"anon": true}'``."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            self.fail(f"{value!r} is not valid JSON ({exc})", param, ctx)
        if not isinstance(parsed, dict):
            self.fail(f"{value!r} is not a JSON object", param, ctx)
        return parsed


class MissingType(click.ParamType):
    """``cf`` (rules from the CF attributes), ``none``, or the rules as a JSON object."""

    name = "cf|none|json"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str | dict[str, Any] | None:
        if value in ("cf", "none"):
            return None if value == "none" else "cf"
        return JsonObjectType().convert(value, param, ctx)
